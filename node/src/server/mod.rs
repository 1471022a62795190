//! The client-facing TCP server: accepts connections and serves the msgpack protocol described
//! in PROTOCOL.md, handing every request to a [`RequestHandler`] (the [`Broker`] in production).
//!
//! Requests on one connection are served concurrently and answered as they complete, possibly
//! out of order; the request id ties a reply to its request. The server runs on the actix
//! System's thread (the broker's futures need not be `Send`), one task per connection and one
//! per request.
//!
//! Bounds: `max_connections` connections (more wait in the kernel's accept queue),
//! `max_in_flight_per_connection` requests per connection (the connection is not read from
//! while that many are unanswered), `max_frame_bytes` per request frame, `max_reply_frame_bytes`
//! per reply, a handshake deadline, an idle timeout, and TCP keepalive.

mod connection;
mod session;
mod writer;

pub use session::{Action, ServerIdentity, Session, CONNECTION_ERROR_ID, IN_PROCESS_PEER};

use gregor_actors::Broker;
use gregor_protocol::api::{ApiError, Request, Response};
use gregor_protocol::NodeId;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, error, warn, Instrument};

/// This build's version, reported in `HelloReply`.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Kafka's `connections.max.idle.ms`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// TCP keepalive: the first probe after this long without traffic, then one every
/// [`KEEPALIVE_INTERVAL`], so a peer that vanished (power cut, cable) is noticed even on an
/// idle connection.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (typically out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What serves the requests. The server answers `Hello` itself and passes everything else.
///
/// Requests of one connection are handed over in the order they were read, and their futures
/// are first polled in that order. A handler that must keep that order (produces to one
/// partition) has to enqueue the request before its first `.await` that can wait.
pub trait RequestHandler: Clone + 'static {
    /// Serves one request. For a produce with `acks = 0` the outcome is not sent to the client;
    /// an error closes the connection instead.
    fn handle(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<Response, ApiError>> + 'static;
    /// Reported to clients in `HelloReply`.
    fn node_id(&self) -> NodeId;
}

impl RequestHandler for Broker {
    fn handle(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<Response, ApiError>> + 'static {
        let broker = self.clone();
        async move { Broker::handle(&broker, request).await }
    }

    fn node_id(&self) -> NodeId {
        Broker::node_id(self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Largest request frame body accepted; a larger one closes the connection.
    pub max_frame_bytes: u32,
    pub max_in_flight_per_connection: usize,
    pub max_connections: usize,
    /// A connection that has not completed the handshake by then is closed, so that idle
    /// sockets cannot hold connection slots.
    pub handshake_timeout: Duration,
    /// How long shutdown waits for in-flight requests before dropping their connections.
    pub shutdown_grace: Duration,
    /// An established connection with no request in flight that sends nothing for this long
    /// is closed.
    pub idle_timeout: Duration,
    /// Largest reply frame body; a larger reply becomes a `FRAME_TOO_LARGE` error.
    pub max_reply_frame_bytes: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame_bytes: gregor_protocol::frame::DEFAULT_MAX_FRAME_BYTES,
            max_in_flight_per_connection: 1024,
            max_connections: 10_000,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_reply_frame_bytes: gregor_protocol::frame::MAX_REPLY_FRAME_BYTES,
        }
    }
}

/// Serves `listener` until `shutdown` resolves, then stops accepting, lets connections finish
/// the requests they have in flight (up to `shutdown_grace`) and returns.
///
/// Must run inside a `LocalSet` (an actix System provides one): connections are spawned with
/// `spawn_local`.
///
/// # Panics
/// If `max_in_flight_per_connection` or `max_connections` is 0, or outside a `LocalSet`.
pub async fn serve<H: RequestHandler>(
    listener: TcpListener,
    handler: H,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    assert!(
        config.max_connections > 0,
        "max_connections must be at least 1"
    );
    assert!(
        config.max_in_flight_per_connection > 0,
        "max_in_flight_per_connection must be at least 1"
    );
    let identity = identity_of(&handler, &config);
    let (stopping, stop_rx) = watch::channel(false);
    let connection_slots = Arc::new(Semaphore::new(config.max_connections));
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);

    loop {
        while let Some(finished) = connections.try_join_next() {
            report_connection_end(finished);
        }
        let slot = match Arc::clone(&connection_slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                warn!(
                    max_connections = config.max_connections,
                    "connection limit reached; new connections wait until one closes"
                );
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    slot = Arc::clone(&connection_slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                debug!(%peer, "connection accepted");
                // Replies are already batched by the writer; Nagle would only add latency.
                if let Err(e) = stream.set_nodelay(true) {
                    debug!(error = %e, "cannot disable Nagle's algorithm");
                }
                let keepalive = socket2::TcpKeepalive::new()
                    .with_time(KEEPALIVE_IDLE)
                    .with_interval(KEEPALIVE_INTERVAL);
                if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
                    debug!(error = %e, "cannot enable TCP keepalive");
                }
                let task = connection::serve(
                    stream,
                    handler.clone(),
                    config.clone(),
                    identity.clone(),
                    peer.ip().to_string(),
                    stop_rx.clone(),
                );
                let span = tracing::debug_span!("connection", %peer);
                connections.spawn_local(
                    async move {
                        task.await;
                        drop(slot);
                    }
                    .instrument(span),
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {
                debug!(error = %e, "a connection was reset before it was accepted");
            }
            Err(e) => {
                warn!(error = %e, "cannot accept connections; retrying (is the file descriptor limit too low?)");
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }

    drop(listener);
    let _ = stopping.send(true);
    let drain = async {
        while let Some(finished) = connections.join_next().await {
            report_connection_end(finished);
        }
    };
    if tokio::time::timeout(config.shutdown_grace, drain)
        .await
        .is_err()
    {
        warn!(
            connections = connections.len(),
            grace = ?config.shutdown_grace,
            "dropping connections whose requests did not finish within the shutdown grace period"
        );
        connections.shutdown().await;
    }
}

/// Serves one connection over any byte stream until it closes; [`serve`] does the same for each
/// TCP connection, and the simulation hands in in-memory streams (whose clients are
/// [`IN_PROCESS_PEER`]). The connection stops
/// reading new requests once `shutdown` holds `true`.
///
/// Must run inside a `LocalSet`: requests are spawned with `spawn_local`.
///
/// # Panics
/// If `max_in_flight_per_connection` is 0.
pub async fn serve_connection<S, H>(
    stream: S,
    handler: H,
    config: ServerConfig,
    shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + 'static,
    H: RequestHandler,
{
    assert!(
        config.max_in_flight_per_connection > 0,
        "max_in_flight_per_connection must be at least 1"
    );
    let identity = identity_of(&handler, &config);
    let peer = IN_PROCESS_PEER.to_owned();
    connection::serve(stream, handler, config, identity, peer, shutdown).await;
}

fn report_connection_end(finished: Result<(), tokio::task::JoinError>) {
    if let Err(e) = finished {
        if e.is_panic() {
            error!(error = %e, "a connection task panicked; other connections are unaffected");
        }
    }
}

/// What the handshake tells clients about this server.
fn identity_of<H: RequestHandler>(handler: &H, config: &ServerConfig) -> ServerIdentity {
    ServerIdentity {
        node_id: handler.node_id(),
        server_version: SERVER_VERSION.to_owned(),
        max_frame_bytes: config.max_frame_bytes,
    }
}
