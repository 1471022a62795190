//! One pipelined connection to one broker.
//!
//! After the `Hello` handshake, requests are pipelined: callers encode their own frames (so the
//! work spreads over the runtime's threads), one writer task gathers whatever is queued into
//! vectored writes (few syscalls however many small requests there are), and one reader task
//! hands each reply to the waiter registered under its id; replies may come in any order.
//! A semaphore bounds the requests in flight, which is the backpressure: a caller waits for a
//! slot rather than queueing without limit.
//!
//! Queueing a request and awaiting its reply are two steps ([`Connection::enqueue`], then
//! [`PendingReply::reply`]): frames are written in the order they were queued, so a caller
//! that must keep its requests in order (a producer's requests to one partition) queues each
//! one after the previous one was queued, and still has them all in flight at once.

use super::error::ClientError;
use bytes::{Buf, Bytes};
use gregor_protocol::api::{
    Hello, HelloReply, Request, RequestFrame, Response, ResponseFrame, PROTOCOL_VERSION,
};
use gregor_protocol::frame::{decode_response, encode_frame, read_frame, MAX_REPLY_FRAME_BYTES};
use gregor_protocol::NodeId;
use std::collections::BTreeMap;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// The handshake's request id; pipelined requests count up from 1.
const HELLO_ID: u64 = 0;
/// A write gathers at most this many frames...
const MAX_FRAMES_PER_WRITE: usize = 64;
/// ...or this many bytes, so one huge backlog cannot delay the notification of written frames.
const MAX_BYTES_PER_WRITE: usize = 4 * 1024 * 1024;
/// Replies of up to this size are read with one `read` for many frames.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// How a [`Connection`] behaves.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Sent in `Hello`; shows up in the broker's logs.
    pub client_id: String,
    /// Bound on the TCP connect plus the handshake.
    pub connect_timeout: Duration,
    /// Default bound on one request, from the moment it waits for a slot to its reply.
    pub request_timeout: Duration,
    /// Requests awaiting a reply at once; further requests wait for a slot.
    pub max_in_flight: usize,
    /// Largest reply accepted. Fetch replies are bounded by the fetch size, so this only stops
    /// a broken peer from making us allocate gigabytes.
    pub max_response_bytes: u32,
    /// How a broker address becomes a byte stream; `None`: TCP. The simulation hands in its
    /// in-memory network here, so simulated clients run this very code.
    pub connector: Option<Connector>,
}

/// A byte stream to a broker, as a [`Connector`] hands it out.
pub trait BrokerStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> BrokerStream for S {}

/// What a [`Connector`] returns: the stream, once connected.
pub type ConnectFuture =
    Pin<Box<dyn Future<Output = io::Result<Box<dyn BrokerStream>>> + Send + 'static>>;

/// Opens a byte stream to a broker address in place of a TCP connect (the seam for in-memory
/// transports). The connect timeout still applies around it.
#[derive(Clone)]
pub struct Connector(Arc<dyn Fn(&str) -> ConnectFuture + Send + Sync>);

impl Connector {
    /// A connector that calls `connect` with the broker's address.
    pub fn new(connect: impl Fn(&str) -> ConnectFuture + Send + Sync + 'static) -> Connector {
        Connector(Arc::new(connect))
    }

    fn connect(&self, addr: &str) -> ConnectFuture {
        (self.0)(addr)
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector")
    }
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            client_id: "gregor-client".into(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_in_flight: 256,
            max_response_bytes: MAX_REPLY_FRAME_BYTES,
            connector: None,
        }
    }
}

/// A handle on one broker connection; clones share it. The connection closes when the last
/// handle is dropped.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.inner.shared.addr)
            .field("node_id", &self.inner.hello.node_id)
            .finish()
    }
}

struct Inner {
    shared: Arc<Shared>,
    outgoing: mpsc::Sender<Outgoing>,
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    next_id: AtomicU64,
    request_timeout: Duration,
    hello: HelloReply,
    reader: AbortHandle,
    writer: AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The reader would otherwise wait on the socket forever; the writer may be blocked on a
        // peer that stopped reading.
        self.reader.abort();
        self.writer.abort();
    }
}

/// State the reader and writer tasks share with callers.
struct Shared {
    addr: String,
    state: Mutex<PendingState>,
}

#[derive(Default)]
struct PendingState {
    /// Set once, when the connection dies; later requests fail at once with this reason.
    closed: Option<String>,
    // Ordered, so that a disconnect fails waiters in request order.
    waiters: BTreeMap<u64, Waiter>,
}

struct Waiter {
    reply: oneshot::Sender<Result<Response, ClientError>>,
    // Held until the reply arrives (or the caller gives up): this is the in-flight bound.
    _slot: OwnedSemaphorePermit,
}

struct Outgoing {
    frame: Bytes,
    /// Told once the frame is handed to the kernel (for requests that get no reply).
    written: Option<oneshot::Sender<()>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, PendingState> {
        // A panic while holding this lock cannot leave the map half-updated in a way that
        // matters: every operation on it is a single insert or remove.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn disconnected(&self, reason: &str) -> ClientError {
        ClientError::Disconnected {
            addr: self.addr.clone(),
            reason: reason.to_owned(),
        }
    }

    fn timed_out(&self, timeout: Duration) -> ClientError {
        ClientError::Timeout {
            addr: self.addr.clone(),
            timeout,
        }
    }

    fn closed_error(&self) -> ClientError {
        let reason = self
            .lock()
            .closed
            .clone()
            .unwrap_or_else(|| "connection shut down".into());
        self.disconnected(&reason)
    }

    /// Marks the connection dead and fails everything in flight with `reason`.
    fn close(&self, reason: String) {
        let waiters = {
            let mut state = self.lock();
            if state.closed.is_none() {
                state.closed = Some(reason.clone());
            }
            std::mem::take(&mut state.waiters)
        };
        if !waiters.is_empty() {
            tracing::debug!(addr = %self.addr, %reason, failed = waiters.len(), "connection closed");
        }
        for (_, waiter) in waiters {
            let _ = waiter.reply.send(Err(self.disconnected(&reason)));
        }
    }

    fn complete(&self, frame: ResponseFrame) {
        let waiter = self.lock().waiters.remove(&frame.id);
        match waiter {
            Some(waiter) => {
                let _ = waiter.reply.send(frame.result.map_err(ClientError::Api));
            }
            // A reply to a request whose caller timed out or went away.
            None => {
                tracing::debug!(addr = %self.addr, id = frame.id, "reply to an abandoned request")
            }
        }
    }
}

/// A request queued on a [`Connection`] whose reply is still to come. Dropping it abandons the
/// request: its slot is freed and a late reply is discarded.
pub struct PendingReply {
    shared: Arc<Shared>,
    id: u64,
    answer: oneshot::Receiver<Result<Response, ClientError>>,
    deadline: Instant,
    timeout: Duration,
}

impl PendingReply {
    /// Waits for the reply, until the deadline the request was queued with.
    ///
    /// # Errors
    /// As [`Connection::send`].
    pub async fn reply(mut self) -> Result<Response, ClientError> {
        match tokio::time::timeout_at(self.deadline, &mut self.answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.shared.closed_error()),
            Err(_) => Err(self.shared.timed_out(self.timeout)),
        }
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        self.shared.lock().waiters.remove(&self.id);
    }
}

/// A request without reply queued on a [`Connection`], not yet known to be written.
pub struct PendingWrite {
    shared: Arc<Shared>,
    done: oneshot::Receiver<()>,
    deadline: Instant,
    timeout: Duration,
}

impl PendingWrite {
    /// Waits until the frame has been handed to the kernel, until the deadline the request
    /// was queued with.
    ///
    /// # Errors
    /// As [`Connection::send_no_reply`].
    pub async fn written(mut self) -> Result<(), ClientError> {
        match tokio::time::timeout_at(self.deadline, &mut self.done).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.shared.closed_error()),
            Err(_) => Err(self.shared.timed_out(self.timeout)),
        }
    }
}

impl Connection {
    /// Opens a connection to `addr` (`host:port`) and performs the `Hello` handshake.
    ///
    /// # Errors
    /// [`ClientError::Connect`] when the broker cannot be reached, [`ClientError::Api`] when it
    /// refuses the handshake (e.g. `UNSUPPORTED_VERSION`), [`ClientError::Protocol`] when the
    /// peer does not speak this protocol.
    pub async fn connect(addr: &str, config: &ConnectionConfig) -> Result<Connection, ClientError> {
        if let Some(connector) = &config.connector {
            let stream = tokio::time::timeout(config.connect_timeout, connector.connect(addr))
                .await
                .map_err(|_| {
                    ClientError::connect(addr, io::Error::new(io::ErrorKind::TimedOut, "timed out"))
                })?
                .map_err(|e| ClientError::connect(addr, e))?;
            return Self::over_stream(addr, stream, config).await;
        }
        let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                ClientError::connect(addr, io::Error::new(io::ErrorKind::TimedOut, "timed out"))
            })?
            .map_err(|e| ClientError::connect(addr, e))?;
        // Frames are already gathered into large writes; Nagle would only add latency.
        stream
            .set_nodelay(true)
            .map_err(|e| ClientError::io(addr, e))?;
        Self::over_stream(addr, stream, config).await
    }

    /// Runs the handshake over an already connected stream and starts the pipeline. The
    /// stream is a seam: tests and the simulation hand in their own.
    ///
    /// # Errors
    /// As [`Connection::connect`], minus the connect step.
    pub async fn over_stream<S>(
        addr: &str,
        stream: S,
        config: &ConnectionConfig,
    ) -> Result<Connection, ClientError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        assert!(config.max_in_flight > 0, "max_in_flight must be at least 1");
        let (reader, mut writer) = tokio::io::split(stream);
        let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
        let hello = tokio::time::timeout(
            config.connect_timeout,
            handshake(addr, &mut reader, &mut writer, config),
        )
        .await
        .map_err(|_| ClientError::Timeout {
            addr: addr.to_owned(),
            timeout: config.connect_timeout,
        })??;

        let shared = Arc::new(Shared {
            addr: addr.to_owned(),
            state: Mutex::default(),
        });
        let (outgoing, queue) = mpsc::channel(config.max_in_flight);
        let writer = tokio::spawn(write_loop(writer, queue, shared.clone())).abort_handle();
        let reader = tokio::spawn(read_loop(reader, config.max_response_bytes, shared.clone()))
            .abort_handle();
        Ok(Connection {
            inner: Arc::new(Inner {
                shared,
                outgoing,
                permits: Arc::new(Semaphore::new(config.max_in_flight)),
                max_in_flight: config.max_in_flight,
                next_id: AtomicU64::new(HELLO_ID + 1),
                request_timeout: config.request_timeout,
                hello,
                reader,
                writer,
            }),
        })
    }

    /// Sends `request` and waits for its reply, up to the configured request timeout.
    ///
    /// # Errors
    /// [`ClientError::Api`] with the broker's code and message, [`ClientError::Timeout`], or
    /// [`ClientError::Disconnected`] when the connection dies first.
    pub async fn send(&self, request: Request) -> Result<Response, ClientError> {
        self.send_timeout(request, self.inner.request_timeout).await
    }

    /// [`Connection::send`] with its own timeout (long-polling fetches need more).
    ///
    /// # Errors
    /// As [`Connection::send`].
    pub async fn send_timeout(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        self.enqueue_timeout(request, timeout).await?.reply().await
    }

    /// Queues `request` for writing and returns without waiting for its reply, which the
    /// returned [`PendingReply`] awaits. Frames are written in the order they were queued: a
    /// request queued after this call returned goes out after this one. The configured
    /// request timeout bounds everything from this call to the reply.
    ///
    /// # Errors
    /// As [`Connection::send`].
    pub async fn enqueue(&self, request: Request) -> Result<PendingReply, ClientError> {
        self.enqueue_timeout(request, self.inner.request_timeout)
            .await
    }

    /// [`Connection::enqueue`] with its own timeout.
    ///
    /// # Errors
    /// As [`Connection::send`].
    pub async fn enqueue_timeout(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<PendingReply, ClientError> {
        let shared = &self.inner.shared;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + timeout;
        let queued = async {
            let slot = self
                .inner
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| shared.closed_error())?;
            let frame = self.encode(id, request)?;
            let (reply, answer) = oneshot::channel();
            {
                let mut state = shared.lock();
                if let Some(reason) = &state.closed {
                    return Err(shared.disconnected(reason));
                }
                state.waiters.insert(id, Waiter { reply, _slot: slot });
            }
            // From here on, dropping `pending` (a failure, a timeout) unregisters the waiter.
            let pending = PendingReply {
                shared: shared.clone(),
                id,
                answer,
                deadline,
                timeout,
            };
            self.inner
                .outgoing
                .send(Outgoing {
                    frame,
                    written: None,
                })
                .await
                .map_err(|_| shared.closed_error())?;
            Ok(pending)
        };
        tokio::time::timeout_at(deadline, queued)
            .await
            .map_err(|_| shared.timed_out(timeout))?
    }

    /// Sends a request that gets no reply (`Produce` with `acks=0`). Resolves once the frame
    /// has been written to the socket, which is all fire-and-forget can promise.
    ///
    /// # Errors
    /// [`ClientError::Disconnected`] if the connection is dead, [`ClientError::Timeout`] if the
    /// write does not happen within the request timeout.
    pub async fn send_no_reply(&self, request: Request) -> Result<(), ClientError> {
        self.enqueue_no_reply(request).await?.written().await
    }

    /// Queues a request that gets no reply, in order as [`Connection::enqueue`] does; the
    /// returned [`PendingWrite`] says when it was written. The request timeout bounds both.
    ///
    /// # Errors
    /// As [`Connection::send_no_reply`].
    pub async fn enqueue_no_reply(&self, request: Request) -> Result<PendingWrite, ClientError> {
        let shared = &self.inner.shared;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let timeout = self.inner.request_timeout;
        let deadline = Instant::now() + timeout;
        let queued = async {
            if let Some(reason) = &shared.lock().closed {
                return Err(shared.disconnected(reason));
            }
            let frame = self.encode(id, request)?;
            let (written, done) = oneshot::channel();
            self.inner
                .outgoing
                .send(Outgoing {
                    frame,
                    written: Some(written),
                })
                .await
                .map_err(|_| shared.closed_error())?;
            Ok(PendingWrite {
                shared: shared.clone(),
                done,
                deadline,
                timeout,
            })
        };
        tokio::time::timeout_at(deadline, queued)
            .await
            .map_err(|_| shared.timed_out(timeout))?
    }

    fn encode(&self, id: u64, request: Request) -> Result<Bytes, ClientError> {
        let frame = encode_frame(&RequestFrame { id, request });
        let body = frame.len() - gregor_protocol::frame::LENGTH_PREFIX_BYTES;
        let max = self.inner.hello.max_frame_bytes as usize;
        if body > max {
            return Err(ClientError::RequestTooLarge { size: body, max });
        }
        Ok(frame)
    }

    /// The broker's address as given to [`Connection::connect`].
    pub fn addr(&self) -> &str {
        &self.inner.shared.addr
    }

    /// The broker's handshake reply: its node id, version and frame limit.
    pub fn hello(&self) -> &HelloReply {
        &self.inner.hello
    }

    /// The id of the broker at the other end, from its handshake reply.
    pub fn node_id(&self) -> NodeId {
        self.inner.hello.node_id
    }

    /// Whether the connection has died; a dead connection never comes back.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.lock().closed.is_some()
    }

    /// Requests currently holding an in-flight slot.
    pub fn in_flight(&self) -> usize {
        self.inner.max_in_flight - self.inner.permits.available_permits()
    }
}

async fn handshake<R, W>(
    addr: &str,
    reader: &mut R,
    writer: &mut W,
    config: &ConnectionConfig,
) -> Result<HelloReply, ClientError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let hello = RequestFrame {
        id: HELLO_ID,
        request: Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_id: config.client_id.clone(),
        }),
    };
    writer
        .write_all(&encode_frame(&hello))
        .await
        .map_err(|e| ClientError::io(addr, e))?;
    writer.flush().await.map_err(|e| ClientError::io(addr, e))?;
    let body = read_frame(reader, config.max_response_bytes)
        .await
        .map_err(|e| ClientError::protocol(addr, format!("bad handshake reply: {e}")))?
        .ok_or_else(|| ClientError::Disconnected {
            addr: addr.to_owned(),
            reason: "the broker closed the connection during the handshake".into(),
        })?;
    let frame = decode_response(&body)
        .map_err(|e| ClientError::protocol(addr, format!("undecodable handshake reply: {e}")))?;
    if frame.id != HELLO_ID {
        return Err(ClientError::protocol(
            addr,
            format!(
                "handshake reply carries id {} instead of {HELLO_ID}",
                frame.id
            ),
        ));
    }
    match frame.result {
        Ok(Response::Hello(reply)) if reply.protocol_version == PROTOCOL_VERSION => Ok(reply),
        Ok(Response::Hello(reply)) => Err(ClientError::protocol(
            addr,
            format!(
                "the broker speaks protocol version {}, this client speaks {PROTOCOL_VERSION}; use matching gregor versions",
                reply.protocol_version
            ),
        )),
        Ok(_) => Err(ClientError::protocol(addr, "the handshake was answered with another reply kind")),
        Err(api) => Err(ClientError::Api(api)),
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut queue: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
) {
    let mut frames: Vec<Bytes> = Vec::with_capacity(MAX_FRAMES_PER_WRITE);
    let mut written: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = queue.recv().await {
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(out) = next.take() {
            bytes += out.frame.len();
            frames.push(out.frame);
            written.extend(out.written);
            if frames.len() < MAX_FRAMES_PER_WRITE && bytes < MAX_BYTES_PER_WRITE {
                next = queue.try_recv().ok();
            }
        }
        if let Err(e) = write_frames(&mut writer, &mut frames).await {
            shared.close(format!("writing failed: {e}"));
            return;
        }
        frames.clear();
        for tx in written.drain(..) {
            let _ = tx.send(());
        }
    }
    // Every handle is gone: tell the broker we are done.
    let _ = writer.shutdown().await;
}

/// Writes every frame, gathering them into as few vectored writes as the kernel takes.
async fn write_frames<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frames: &mut [Bytes],
) -> io::Result<()> {
    let mut first = 0;
    while first < frames.len() {
        let mut n = {
            let slices: Vec<IoSlice<'_>> =
                frames[first..].iter().map(|f| IoSlice::new(f)).collect();
            writer.write_vectored(&slices).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let len = frames[first].len();
            if n >= len {
                n -= len;
                first += 1;
            } else {
                frames[first].advance(n);
                n = 0;
            }
        }
    }
    writer.flush().await
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: R,
    max_response_bytes: u32,
    shared: Arc<Shared>,
) {
    loop {
        match read_frame(&mut reader, max_response_bytes).await {
            Ok(Some(body)) => match decode_response(&body) {
                Ok(frame) => shared.complete(frame),
                Err(e) => {
                    shared.close(format!("undecodable reply from the broker: {e}"));
                    return;
                }
            },
            Ok(None) => {
                shared.close("the broker closed the connection".into());
                return;
            }
            Err(e) => {
                shared.close(format!("reading failed: {e}"));
                return;
            }
        }
    }
}
