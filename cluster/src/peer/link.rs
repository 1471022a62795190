//! Everything between this node and one peer: the outbound queue, the requests awaiting
//! answers, and the one TCP connection that carries both directions (dialed by the node with
//! the lower id, accepted by the other), replaced or redialed when it fails.

use super::backoff::Backoff;
use super::inbound::{Job, Lanes};
use super::queue::{Next, OutboundQueue, Outgoing};
use super::wire::{self, Hello, HelloReply, OutboundMessage, WireMessage, PROTOCOL_VERSION};
use super::{AddressBook, Context};
use crate::rpc::{RpcError, RpcKind, RpcRequest, RpcResponse, RpcResult};
use gregor_storage::NodeId;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// While no connection is up, queued requests past their deadline are dropped this often.
const PURGE_INTERVAL: Duration = Duration::from_millis(100);

pub(crate) struct Link {
    ctx: Arc<Context>,
    peer: NodeId,
    queue: OutboundQueue,
    pending: Mutex<BTreeMap<u64, oneshot::Sender<RpcResult>>>,
    next_request: AtomicU64,
    next_connection: AtomicU64,
    /// The accepted connection's task, aborted when a newer connection replaces it.
    accepted: Mutex<Option<JoinHandle<()>>>,
}

/// Where the outcome of an inbound request goes: back over the connection it came on.
pub(crate) struct ReplyTo {
    link: Arc<Link>,
    id: u64,
    connection: u64,
    heartbeat: bool,
}

/// Removes a request's entry from `pending` however its wait ends.
struct PendingGuard<'a> {
    link: &'a Link,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.link.pending).remove(&self.id);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Link {
    pub(crate) fn new(ctx: Arc<Context>, peer: NodeId) -> Arc<Link> {
        let queue = OutboundQueue::new(ctx.config.max_queue_bytes);
        Arc::new(Link {
            ctx,
            peer,
            queue,
            pending: Mutex::new(BTreeMap::new()),
            next_request: AtomicU64::new(1),
            next_connection: AtomicU64::new(1),
            accepted: Mutex::new(None),
        })
    }

    /// Queues `request` and waits for its outcome until `deadline`.
    pub(crate) async fn request(
        &self,
        request: &RpcRequest,
        deadline: Instant,
    ) -> Result<RpcResponse, RpcError> {
        let timeout = RpcError::Timeout {
            timeout_ms: deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as u64,
        };
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let bytes = wire::encode_message(&OutboundMessage::Request { id, request })?;
        self.ctx.config.check_message_size(bytes.len())?;
        let (answer, answered) = oneshot::channel();
        lock(&self.pending).insert(id, answer);
        let _pending = PendingGuard { link: self, id };
        let Some(room) = self.queue.reserve(bytes.len(), deadline).await else {
            self.ctx.counters.request_timed_out();
            return Err(timeout);
        };
        let heartbeat = request.kind() == RpcKind::Heartbeat;
        self.queue.push(Outgoing {
            bytes,
            linger_until: heartbeat.then(|| Instant::now() + self.ctx.config.heartbeat_linger),
            expires: Some(deadline),
            connection: None,
            _room: room,
        });
        match tokio::time::timeout_at(deadline, answered).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(self.unreachable("the connection closed")),
            Err(_) => {
                self.ctx.counters.request_timed_out();
                Err(timeout)
            }
        }
    }

    fn unreachable(&self, reason: &str) -> RpcError {
        RpcError::Unreachable {
            node: self.peer,
            reason: reason.to_string(),
        }
    }

    /// Fails every request still awaiting an answer.
    pub(crate) fn fail_pending(&self, error: &RpcError) {
        let pending = std::mem::take(&mut *lock(&self.pending));
        for (_, answer) in pending {
            let _ = answer.send(Err(error.clone()));
        }
    }

    fn complete(&self, id: u64, outcome: RpcResult) {
        // No entry: the caller gave up (timeout) before the answer came.
        if let Some(answer) = lock(&self.pending).remove(&id) {
            let _ = answer.send(outcome);
        }
    }

    /// Serves a connection this node accepted, replacing the previous one (the peer
    /// reconnected, perhaps after a restart this side has not noticed yet).
    pub(crate) fn attach(self: &Arc<Self>, stream: TcpStream) {
        let connection = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let mut accepted = lock(&self.accepted);
        if let Some(previous) = accepted.take() {
            previous.abort();
            self.fail_pending(&self.unreachable("replaced by a newer connection"));
        }
        self.ctx.counters.connected();
        let link = self.clone();
        *accepted = Some(tokio::spawn(async move {
            let reason = link.clone().run_connection(stream, connection).await;
            tracing::info!(peer = %link.peer, %reason, "accepted peer connection closed");
        }));
    }

    pub(crate) fn take_connection(&self) -> Option<JoinHandle<()>> {
        lock(&self.accepted).take()
    }

    /// Dials the peer whenever there is no connection, with backoff between failures.
    pub(crate) async fn dial_loop(self: Arc<Self>, book: AddressBook) {
        let config = &self.ctx.config;
        let seed = config.seed ^ self.peer.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut backoff = Backoff::new(seed, config.backoff_min, config.backoff_max);
        let mut addresses = book.subscribe();
        loop {
            self.queue.purge(0, Instant::now());
            let address = addresses.borrow_and_update().get(&self.peer).copied();
            let Some(address) = address else {
                tokio::select! {
                    changed = addresses.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(PURGE_INTERVAL) => {}
                }
                continue;
            };
            match self.dial(address).await {
                Ok(stream) => {
                    backoff.reset();
                    self.ctx.counters.connected();
                    let connection = self.next_connection.fetch_add(1, Ordering::Relaxed);
                    let reason = self.clone().run_connection(stream, connection).await;
                    tracing::info!(peer = %self.peer, %address, %reason, "peer connection closed");
                }
                Err(reason) => {
                    tracing::debug!(peer = %self.peer, %address, %reason, "dialing peer failed");
                }
            }
            self.purge_while_waiting(backoff.next_delay()).await;
        }
    }

    async fn purge_while_waiting(&self, delay: Duration) {
        let until = Instant::now() + delay;
        while Instant::now() < until {
            tokio::time::sleep_until(until.min(Instant::now() + PURGE_INTERVAL)).await;
            self.queue.purge(0, Instant::now());
        }
    }

    async fn dial(&self, address: SocketAddr) -> Result<TcpStream, String> {
        let config = &self.ctx.config;
        let connect = TcpStream::connect(address);
        let mut stream = tokio::time::timeout(config.connect_timeout, connect)
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|error| error.to_string())?;
        super::configure_stream(&stream, config.keepalive);
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            cluster_id: config.cluster_id.clone(),
            from: config.node,
            to: self.peer,
        };
        let handshake = async {
            wire::write_control(&mut stream, &hello)
                .await
                .map_err(|error| error.to_string())?;
            wire::read_control::<_, HelloReply>(&mut stream).await
        };
        let reply = tokio::time::timeout(config.handshake_timeout, handshake)
            .await
            .map_err(|_| "handshake timed out".to_string())??;
        match reply {
            HelloReply::Accepted { node, cluster_id }
                if node == self.peer && cluster_id == config.cluster_id =>
            {
                Ok(stream)
            }
            HelloReply::Accepted { node, cluster_id } => {
                self.ctx.counters.handshake_refused();
                let reason = format!(
                    "expected node {} of cluster {:?}, reached node {node} of cluster {cluster_id:?}",
                    self.peer, config.cluster_id
                );
                tracing::warn!(peer = %self.peer, %address, %reason, "peer handshake refused");
                Err(reason)
            }
            HelloReply::Refused { reason } => {
                self.ctx.counters.handshake_refused();
                tracing::warn!(peer = %self.peer, %address, %reason, "peer refused our handshake");
                Err(format!("refused: {reason}"))
            }
        }
    }

    /// Runs one connection until it fails or the transport shuts down; returns why it ended.
    async fn run_connection(self: Arc<Self>, stream: TcpStream, connection: u64) -> String {
        let (reader, writer) = stream.into_split();
        let lanes = Lanes::new(self.peer, self.ctx.handler.clone());
        let mut shutdown = self.ctx.shutdown.subscribe();
        let reason = tokio::select! {
            reason = self.clone().read_loop(reader, connection, &lanes) => reason,
            reason = self.write_loop(writer, connection) => reason,
            _ = shutdown.wait_for(|stopping| *stopping) => "shutting down".to_string(),
        };
        self.fail_pending(&self.unreachable(&reason));
        reason
    }

    async fn write_loop(&self, mut writer: OwnedWriteHalf, connection: u64) -> String {
        let max_frame = self.ctx.config.max_frame_bytes;
        loop {
            match self.queue.take_frame(max_frame, connection, Instant::now()) {
                Next::Write(messages) => {
                    let frame = wire::build_frame(messages.iter().map(|m| m.bytes.as_slice()));
                    if let Err(error) = writer.write_all(&frame).await {
                        return format!("write failed: {error}");
                    }
                    self.ctx.counters.frame_out(messages.len(), frame.len());
                }
                Next::WaitUntil(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.queue.arrival() => {}
                    }
                }
                Next::WaitForMessages => self.queue.arrival().await,
            }
        }
    }

    async fn read_loop(
        self: Arc<Self>,
        reader: OwnedReadHalf,
        connection: u64,
        lanes: &Arc<Lanes>,
    ) -> String {
        let config = &self.ctx.config;
        let mut reader = BufReader::with_capacity(64 * 1024, reader);
        // What this connection's requests may hold while being served; a full budget stops
        // reading, and TCP pushes back on the peer.
        let budget = Arc::new(Semaphore::new(config.max_inbound_bytes));
        loop {
            let body = match wire::read_frame(&mut reader, config.max_frame_bytes).await {
                Ok(body) => body,
                Err(error) => return error.to_string(),
            };
            let messages = match wire::decode_frame(&body) {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(peer = %self.peer, %error, "malformed frame from peer");
                    return format!("malformed frame: {error}");
                }
            };
            self.ctx.counters.frame_in(messages.len(), body.len());
            let permits = u32::try_from(body.len()).expect("frame limit below 4 GiB");
            let mut room = budget
                .clone()
                .acquire_many_owned(permits)
                .await
                .expect("the budget is never closed");
            let share = body.len() / messages.len().max(1);
            for message in messages {
                match message {
                    WireMessage::Response { id, outcome } => self.complete(id, outcome),
                    WireMessage::Request { id, request } => {
                        let reply_to = ReplyTo {
                            link: self.clone(),
                            id,
                            connection,
                            heartbeat: request.kind() == RpcKind::Heartbeat,
                        };
                        let budget = room.split(share);
                        lanes.dispatch(Job {
                            request,
                            budget,
                            reply_to,
                        });
                    }
                }
            }
        }
    }

    async fn respond(&self, id: u64, connection: u64, outcome: RpcResult, heartbeat: bool) {
        let config = &self.ctx.config;
        let encoded = wire::encode_message(&OutboundMessage::Response {
            id,
            outcome: &outcome,
        })
        .and_then(|bytes| config.check_message_size(bytes.len()).map(|()| bytes));
        let bytes = match encoded {
            Ok(bytes) => bytes,
            Err(error) => {
                let outcome: RpcResult = Err(error);
                wire::encode_message(&OutboundMessage::Response {
                    id,
                    outcome: &outcome,
                })
                .expect("an error outcome always encodes")
            }
        };
        let deadline = Instant::now() + config.request_timeout;
        let Some(room) = self.queue.reserve(bytes.len(), deadline).await else {
            tracing::warn!(peer = %self.peer, id, "response dropped: the outbound queue stayed full");
            return;
        };
        self.queue.push(Outgoing {
            bytes,
            linger_until: heartbeat.then(|| Instant::now() + config.heartbeat_linger),
            expires: None,
            connection: Some(connection),
            _room: room,
        });
    }
}

impl ReplyTo {
    pub(crate) async fn send(self, outcome: RpcResult) {
        self.link
            .respond(self.id, self.connection, outcome, self.heartbeat)
            .await;
    }
}
