//! [`PeerTransport`]: the production node-to-node transport. One TCP connection per pair of
//! nodes (the lower id dials, the higher accepts) carries requests and responses both ways,
//! multiplexed by request id, pipelined, in length-prefixed msgpack frames that each carry a
//! batch of messages (see `wire` for the format, `queue` for how frames are filled).
//!
//! Bounds: a frame (and so a message) is at most [`PeerConfig::max_frame_bytes`] (a larger
//! message is refused with `TooLarge`); each peer's outbound queue holds at most
//! [`PeerConfig::max_queue_bytes`] (a sender waits for room until its deadline); a connection's
//! inbound requests hold at most [`PeerConfig::max_inbound_bytes`] while served (then reading
//! stops and TCP pushes back). Every call has a deadline, and no call fails sooner than
//! [`PeerConfig::failure_delay`]: async-raft retries failures at once and would spin.

mod address_book;
mod backoff;
mod inbound;
mod link;
mod queue;
mod stats;
mod wire;

pub use address_book::AddressBook;
pub use stats::PeerStats;

use crate::command::Command;
use crate::rpc::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    QuiescenceRequest, QuiescenceResponse, RpcError, RpcRequest, RpcResponse, VoteRequest,
    VoteResponse,
};
use crate::transport::{PeerHandler, Transport};
use bytes::Bytes;
use gregor_storage::{GroupId, NodeId};
use link::Link;
use stats::Counters;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use wire::{Hello, HelloReply, PROTOCOL_VERSION};

/// The transport's settings; [`PeerConfig::new`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// This node.
    pub node: NodeId,
    /// Connections from nodes of another cluster are refused at the handshake.
    pub cluster_id: String,
    /// Largest frame, and so largest message, sent or accepted. Default 16 MiB (AppendEntries
    /// are bounded well below it; snapshot chunks are 3 MiB).
    pub max_frame_bytes: usize,
    /// Bytes queued for one peer before senders wait. Default 64 MiB.
    pub max_queue_bytes: usize,
    /// Bytes of one connection's inbound requests being served before reading pauses.
    /// Default 64 MiB; at least `max_frame_bytes`.
    pub max_inbound_bytes: usize,
    /// Deadline of AppendEntries, votes and node messages. Default 2 s. (async-raft cuts an
    /// AppendEntries off at its heartbeat interval anyway.)
    pub request_timeout: Duration,
    /// Deadline of one snapshot chunk. Default 30 s.
    pub snapshot_timeout: Duration,
    /// How long a heartbeat may wait for other messages to share its frame. Default 5 ms.
    /// async-raft's per-group heartbeat timers are spread over the heartbeat interval, so an
    /// idle peer link sends about `heartbeat interval / linger` frames per interval (20 at
    /// 100 ms) whatever the number of groups.
    pub heartbeat_linger: Duration,
    /// The least time a failed call takes. Default 50 ms.
    pub failure_delay: Duration,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    /// Redial delays: doubling from `backoff_min` to `backoff_max`, with jitter.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// TCP keepalive idle time and probe interval. Default 10 s.
    pub keepalive: Duration,
    /// Seeds the jitter of redial delays (salted per peer).
    pub seed: u64,
}

impl PeerConfig {
    pub fn new(node: NodeId, cluster_id: impl Into<String>) -> PeerConfig {
        PeerConfig {
            node,
            cluster_id: cluster_id.into(),
            max_frame_bytes: 16 << 20,
            max_queue_bytes: 64 << 20,
            max_inbound_bytes: 64 << 20,
            request_timeout: Duration::from_secs(2),
            snapshot_timeout: Duration::from_secs(30),
            heartbeat_linger: Duration::from_millis(5),
            failure_delay: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            keepalive: Duration::from_secs(10),
            seed: node.0,
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.max_frame_bytes <= wire::FRAME_OVERHEAD_BYTES
            || self.max_frame_bytes > u32::MAX as usize
        {
            return Err(format!(
                "max_frame_bytes {} out of range",
                self.max_frame_bytes
            ));
        }
        if self.max_queue_bytes < self.max_frame_bytes
            || self.max_inbound_bytes < self.max_frame_bytes
        {
            return Err("max_queue_bytes and max_inbound_bytes must hold a whole frame".into());
        }
        if self.max_queue_bytes > u32::MAX as usize || self.max_inbound_bytes > u32::MAX as usize {
            return Err("queue budgets above 4 GiB are not supported".into());
        }
        if self.backoff_min > self.backoff_max || self.backoff_min.is_zero() {
            return Err("backoff_min must be positive and at most backoff_max".into());
        }
        Ok(())
    }

    /// The largest message that fits a frame alone.
    pub fn max_message_bytes(&self) -> usize {
        self.max_frame_bytes - wire::FRAME_OVERHEAD_BYTES
    }

    fn check_message_size(&self, bytes: usize) -> Result<(), RpcError> {
        let max_bytes = self.max_message_bytes();
        if bytes > max_bytes {
            return Err(RpcError::TooLarge { bytes, max_bytes });
        }
        Ok(())
    }
}

/// What every link of a transport shares.
struct Context {
    config: PeerConfig,
    handler: Arc<dyn PeerHandler>,
    counters: Counters,
    shutdown: watch::Sender<bool>,
}

/// The production [`Transport`]; also serves inbound requests with the node's [`PeerHandler`].
pub struct PeerTransport {
    ctx: Arc<Context>,
    local_addr: SocketAddr,
    book: AddressBook,
    links: Mutex<BTreeMap<NodeId, Arc<Link>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl PeerTransport {
    /// Listens on `listen` (TCP; gossip binds the same port number for UDP) and serves inbound
    /// requests with `handler`. Peers are dialed as the address book learns them.
    ///
    /// # Errors
    /// The address cannot be bound, or the config is inconsistent (`InvalidInput`).
    pub async fn bind(
        config: PeerConfig,
        listen: SocketAddr,
        handler: Arc<dyn PeerHandler>,
    ) -> std::io::Result<Arc<PeerTransport>> {
        config
            .validate()
            .map_err(|reason| std::io::Error::new(std::io::ErrorKind::InvalidInput, reason))?;
        let listener = bind_listener(listen)?;
        let local_addr = listener.local_addr()?;
        let transport = Arc::new(PeerTransport {
            ctx: Arc::new(Context {
                config,
                handler,
                counters: Counters::default(),
                shutdown: watch::channel(false).0,
            }),
            local_addr,
            book: AddressBook::default(),
            links: Mutex::new(BTreeMap::new()),
            tasks: Mutex::new(Vec::new()),
        });
        let accepting = tokio::spawn(accept_loop(Arc::downgrade(&transport), listener));
        let dialing = tokio::spawn(dial_known_peers(Arc::downgrade(&transport)));
        transport.keep_task(accepting);
        transport.keep_task(dialing);
        Ok(transport)
    }

    /// The address the listener is bound to (its port is the node's peer port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn node(&self) -> NodeId {
        self.ctx.config.node
    }

    /// Where peers listen; update it from membership ([`AddressBook::follow`]) or by hand.
    pub fn address_book(&self) -> &AddressBook {
        &self.book
    }

    pub fn stats(&self) -> PeerStats {
        self.ctx.counters.snapshot()
    }

    /// Stops listening, closes every connection and fails what is in flight with
    /// `ShuttingDown`; later calls fail the same way (after the failure delay). Returns once
    /// the listener is closed, so a restarted node can bind the port again.
    pub async fn shutdown(&self) {
        for task in self.stop() {
            let _ = task.await;
        }
    }

    fn stop(&self) -> Vec<JoinHandle<()>> {
        self.ctx.shutdown.send_replace(true);
        let mut tasks: Vec<JoinHandle<()>> = lock(&self.tasks).drain(..).collect();
        for link in lock(&self.links).values() {
            tasks.extend(link.take_connection());
            link.fail_pending(&RpcError::ShuttingDown);
        }
        for task in &tasks {
            task.abort();
        }
        tasks
    }

    fn keep_task(&self, task: JoinHandle<()>) {
        let mut tasks = lock(&self.tasks);
        tasks.retain(|task| !task.is_finished());
        tasks.push(task);
    }

    fn is_shutting_down(&self) -> bool {
        *self.ctx.shutdown.borrow()
    }

    /// The link to `peer`, created on first use; the lower id of a pair dials.
    fn link(&self, peer: NodeId) -> Arc<Link> {
        let mut links = lock(&self.links);
        if let Some(link) = links.get(&peer) {
            return link.clone();
        }
        let link = Link::new(self.ctx.clone(), peer);
        links.insert(peer, link.clone());
        drop(links);
        if self.node() < peer && !self.is_shutting_down() {
            self.keep_task(tokio::spawn(link.clone().dial_loop(self.book.clone())));
        }
        link
    }

    async fn call(&self, target: NodeId, request: RpcRequest) -> Result<RpcResponse, RpcError> {
        let started = Instant::now();
        let outcome = self.round_trip(target, request, started).await;
        if outcome.is_err() {
            tokio::time::sleep_until(started + self.ctx.config.failure_delay).await;
        }
        outcome
    }

    async fn round_trip(
        &self,
        target: NodeId,
        request: RpcRequest,
        started: Instant,
    ) -> Result<RpcResponse, RpcError> {
        if self.is_shutting_down() {
            return Err(RpcError::ShuttingDown);
        }
        if target == self.node() {
            return Err(RpcError::Protocol(
                "a node does not send requests to itself".into(),
            ));
        }
        let timeout = match request {
            RpcRequest::InstallSnapshot { .. } => self.ctx.config.snapshot_timeout,
            _ => self.ctx.config.request_timeout,
        };
        self.link(target).request(&request, started + timeout).await
    }
}

impl Drop for PeerTransport {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn bind_listener(listen: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if listen.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // A restarted node must get its port back while the old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    socket.listen(1024)
}

fn configure_stream(stream: &TcpStream, keepalive: Duration) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::warn!(%error, "could not disable Nagle's algorithm on a peer connection");
    }
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(keepalive)
        .with_interval(keepalive);
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::warn!(%error, "could not enable TCP keepalive on a peer connection");
    }
}

/// Dials every peer with a higher id as soon as its address is known, so a peer that only
/// wants to send to us finds a connection (it never dials us).
async fn dial_known_peers(transport: std::sync::Weak<PeerTransport>) {
    let Some(mut addresses) = transport.upgrade().map(|t| t.book.subscribe()) else {
        return;
    };
    loop {
        let peers: Vec<NodeId> = addresses.borrow_and_update().keys().copied().collect();
        {
            let Some(transport) = transport.upgrade() else {
                return;
            };
            for peer in peers.into_iter().filter(|peer| *peer > transport.node()) {
                transport.link(peer);
            }
        }
        if addresses.changed().await.is_err() {
            return;
        }
    }
}

async fn accept_loop(transport: std::sync::Weak<PeerTransport>, listener: TcpListener) {
    loop {
        let accepted = listener.accept().await;
        let Some(strong) = transport.upgrade() else {
            return;
        };
        match accepted {
            Ok((stream, remote)) => {
                let handshake = accept_handshake(transport.clone(), stream, remote);
                strong.keep_task(tokio::spawn(handshake));
            }
            Err(error) => {
                tracing::warn!(%error, "accepting a peer connection failed");
                drop(strong);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn accept_handshake(
    transport: std::sync::Weak<PeerTransport>,
    mut stream: TcpStream,
    remote: SocketAddr,
) {
    let Some((config, counters)) = transport
        .upgrade()
        .map(|t| (t.ctx.config.clone(), t.ctx.clone()))
    else {
        return;
    };
    configure_stream(&stream, config.keepalive);
    let read = wire::read_control::<_, Hello>(&mut stream);
    let hello = match tokio::time::timeout(config.handshake_timeout, read).await {
        Ok(Ok(hello)) => hello,
        Ok(Err(reason)) => {
            tracing::warn!(%remote, %reason, "peer handshake failed");
            return;
        }
        Err(_) => {
            tracing::warn!(%remote, "peer handshake timed out");
            return;
        }
    };
    if let Err(reason) = check_hello(&config, &hello) {
        counters.counters.handshake_refused();
        tracing::warn!(%remote, from = %hello.from, %reason, "refused a peer connection");
        let _ = wire::write_control(&mut stream, &HelloReply::Refused { reason }).await;
        return;
    }
    let accepted = HelloReply::Accepted {
        node: config.node,
        cluster_id: config.cluster_id.clone(),
    };
    if let Err(error) = wire::write_control(&mut stream, &accepted).await {
        tracing::warn!(%remote, %error, "peer handshake failed");
        return;
    }
    if let Some(transport) = transport.upgrade() {
        if !transport.is_shutting_down() {
            transport.link(hello.from).attach(stream);
        }
    }
}

fn check_hello(config: &PeerConfig, hello: &Hello) -> Result<(), String> {
    if hello.protocol != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} is not ours ({PROTOCOL_VERSION})",
            hello.protocol
        ));
    }
    if hello.cluster_id != config.cluster_id {
        return Err(format!(
            "cluster {:?} is not ours ({:?})",
            hello.cluster_id, config.cluster_id
        ));
    }
    if hello.to != config.node {
        return Err(format!(
            "this is node {}, not node {}",
            config.node, hello.to
        ));
    }
    if hello.from >= config.node {
        return Err(format!(
            "node {} must not dial node {}: the lower id dials",
            hello.from, config.node
        ));
    }
    Ok(())
}

#[async_trait::async_trait]
impl Transport for PeerTransport {
    async fn append_entries(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: AppendEntriesRequest<Command>,
    ) -> Result<AppendEntriesResponse, RpcError> {
        self.call(target, RpcRequest::AppendEntries { group, rpc })
            .await?
            .into_append_entries()
    }

    async fn install_snapshot(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse, RpcError> {
        let request = RpcRequest::InstallSnapshot {
            group,
            rpc: rpc.into(),
        };
        self.call(target, request).await?.into_install_snapshot()
    }

    async fn vote(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: VoteRequest,
    ) -> Result<VoteResponse, RpcError> {
        self.call(target, RpcRequest::Vote { group, rpc })
            .await?
            .into_vote()
    }

    async fn node_message(&self, target: NodeId, message: Bytes) -> Result<Bytes, RpcError> {
        self.call(target, RpcRequest::NodeMessage(message))
            .await?
            .into_node_message()
    }

    async fn quiescence(
        &self,
        target: NodeId,
        request: QuiescenceRequest,
    ) -> Result<QuiescenceResponse, RpcError> {
        self.call(target, RpcRequest::Quiescence(request))
            .await?
            .into_quiescence()
    }
    async fn campaign(&self, target: NodeId, group: GroupId, term: u64) -> Result<bool, RpcError> {
        self.call(target, RpcRequest::Campaign { group, term })
            .await?
            .into_campaign()
    }
}
