//! One client connection: read frames, act on them (see [`Session`]), close cleanly.
//!
//! The read loop takes an in-flight slot before it reads each frame, so a client with
//! `max_in_flight_per_connection` requests outstanding is simply not read from until one of
//! them is answered: backpressure reaches the client through TCP flow control.

use super::session::{Action, ServerIdentity, Session};
use super::writer::{self, Outgoing};
use super::{RequestHandler, ServerConfig};
use bytes::Bytes;
use gregor_protocol::api::{ApiError, ErrorCode, Request, Response, ResponseFrame};
use gregor_protocol::frame::{encode_chunked_frame, read_frame, FrameError};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, BufReader, ReadHalf};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tracing::debug;

/// Enough to take many pipelined small requests in one `read` syscall.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// After the server decides to close, how long it keeps discarding what the client still sends.
/// Closing a socket with unread input makes the kernel send a reset, which can destroy the
/// replies (often the error explaining the close) before the client reads them.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
const CLOSE_LINGER_BYTES: u64 = 16 * 1024 * 1024;

/// Why the read loop ended.
#[derive(Debug)]
enum Close {
    /// The client closed its side between frames.
    PeerClosed,
    /// The client went away mid-frame, or the socket failed.
    PeerLost(String),
    /// The writer stopped (the client stopped accepting data).
    WriterGone,
    /// The server chose to close: a protocol error, the handshake timed out, an `acks = 0`
    /// produce failed, or the server is shutting down.
    ByServer(&'static str),
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Close::PeerClosed => f.write_str("the client closed the connection"),
            Close::PeerLost(why) => write!(f, "the client went away: {why}"),
            Close::WriterGone => f.write_str("the client stopped accepting replies"),
            Close::ByServer(why) => write!(f, "closing: {why}"),
        }
    }
}

pub(super) async fn serve<S, H>(
    stream: S,
    handler: H,
    config: ServerConfig,
    identity: ServerIdentity,
    peer: String,
    shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + 'static,
    H: RequestHandler,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, read_half);
    let (replies, outgoing) = mpsc::unbounded_channel();
    let requests = RequestReader {
        handshake_deadline: tokio::time::Instant::now() + config.handshake_timeout,
        slots: writer::slots(config.max_in_flight_per_connection),
        session: Session::new(identity, peer),
        silent_failure: Rc::new(Notify::new()),
        handler,
        config,
        shutdown,
        replies,
    };
    // Reader and writer share this task, so aborting the connection (at the end of the
    // shutdown grace period) closes both halves of the socket.
    let (close, written) =
        tokio::join!(requests.run(&mut reader), writer::run(outgoing, write_half));
    if let Err(e) = written {
        debug!(error = %e, "writing replies failed");
    }
    if matches!(close, Close::ByServer(_)) {
        discard_input(&mut reader).await;
    }
    debug!("connection closed");
}

struct RequestReader<H> {
    handler: H,
    config: ServerConfig,
    session: Session,
    shutdown: watch::Receiver<bool>,
    handshake_deadline: tokio::time::Instant,
    slots: Arc<tokio::sync::Semaphore>,
    replies: mpsc::UnboundedSender<Outgoing>,
    silent_failure: Rc<Notify>,
}

impl<H: RequestHandler> RequestReader<H> {
    /// Reads and dispatches requests until a reason to stop. Consumes `self` so that its reply
    /// sender is dropped on return: the writer then ends once every request task has dropped
    /// its own, i.e. after the requests in flight are answered.
    async fn run<R: AsyncRead + Unpin>(mut self, reader: &mut BufReader<R>) -> Close {
        let close = self.read_loop(reader).await;
        debug!(reason = %close, "connection stops reading");
        close
    }

    async fn read_loop<R: AsyncRead + Unpin>(&mut self, reader: &mut BufReader<R>) -> Close {
        loop {
            let slot = tokio::select! {
                biased;
                reason = stop_requested(&mut self.shutdown, &self.replies, &self.silent_failure) => return reason,
                slot = Arc::clone(&self.slots).acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return Close::ByServer("in-flight limiter closed"),
                },
            };
            let read = match self.next_frame(reader).await {
                Ok(read) => read,
                Err(reason) => return reason,
            };
            let action = match read {
                Ok(Some(body)) => self.session.on_frame(&body),
                Ok(None) => return Close::PeerClosed,
                Err(FrameError::TooLarge { len, max }) => self.session.on_oversized_frame(len, max),
                // Truncated or a socket error: either way the client is gone.
                Err(e) => return Close::PeerLost(e.to_string()),
            };
            let max_reply = self.config.max_reply_frame_bytes;
            match action {
                Action::Dispatch { id, request, reply } => {
                    let responder = Responder {
                        id,
                        reply,
                        slot: Some(slot),
                        replies: self.replies.clone(),
                        silent_failure: Rc::clone(&self.silent_failure),
                        max_reply_frame_bytes: max_reply,
                    };
                    dispatch(&self.handler, request, responder);
                }
                Action::Reply(frame) => send(&self.replies, &frame, slot, max_reply),
                Action::ReplyAndClose(frame) => {
                    send(&self.replies, &frame, slot, max_reply);
                    return Close::ByServer("protocol error");
                }
            }
        }
    }
}

impl<H: RequestHandler> RequestReader<H> {
    /// Waits for the next frame, or for a reason to close: shutdown, the handshake deadline,
    /// or `idle_timeout` without a frame while no request is in flight (a long-polling fetch
    /// keeps its connection open).
    async fn next_frame<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut BufReader<R>,
    ) -> Result<Result<Option<Bytes>, FrameError>, Close> {
        // One read future across idle re-arms: dropping it mid-frame would lose bytes.
        let read = read_frame(reader, self.config.max_frame_bytes);
        tokio::pin!(read);
        let mut idle_deadline = Instant::now() + self.config.idle_timeout;
        loop {
            tokio::select! {
                biased;
                reason = stop_requested(&mut self.shutdown, &self.replies, &self.silent_failure) => return Err(reason),
                () = tokio::time::sleep_until(self.handshake_deadline), if !self.session.is_handshaken() => {
                    return Err(Close::ByServer("no Hello before the handshake timeout"))
                }
                () = tokio::time::sleep_until(idle_deadline), if self.session.is_handshaken() => {
                    if self.in_flight() == 0 {
                        return Err(Close::ByServer("idle for longer than the idle timeout"));
                    }
                    idle_deadline = Instant::now() + self.config.idle_timeout;
                }
                read = &mut read => return Ok(read),
            }
        }
    }

    /// Requests read and not yet answered (the slot taken for the frame being read excluded).
    fn in_flight(&self) -> usize {
        self.config.max_in_flight_per_connection - self.slots.available_permits() - 1
    }
}

/// Resolves when the connection should stop reading for a reason other than its input.
async fn stop_requested(
    shutdown: &mut watch::Receiver<bool>,
    replies: &mpsc::UnboundedSender<Outgoing>,
    silent_failure: &Notify,
) -> Close {
    tokio::select! {
        biased;
        _ = shutdown.wait_for(|stopping| *stopping) => Close::ByServer("server shutting down"),
        () = replies.closed() => Close::WriterGone,
        () = silent_failure.notified() => Close::ByServer("an acks=0 produce failed"),
    }
}

fn send(
    replies: &mpsc::UnboundedSender<Outgoing>,
    frame: &ResponseFrame,
    slot: OwnedSemaphorePermit,
    max_reply_frame_bytes: u32,
) {
    // A fetch reply's batches stay in the buffers storage read them into; the writer hands
    // them to the socket from there.
    let mut encoded = encode_chunked_frame(frame);
    let body = encoded.body_len();
    if body > max_reply_frame_bytes as usize {
        debug!(
            id = frame.id,
            body, "reply over the frame limit; answering FRAME_TOO_LARGE"
        );
        let error = ApiError::new(
            ErrorCode::FRAME_TOO_LARGE,
            format!(
                "the reply would be a {body}-byte frame, over this server's \
                 {max_reply_frame_bytes}-byte limit for replies; ask for less (a smaller fetch \
                 max_bytes, fewer topics)"
            ),
        );
        encoded = encode_chunked_frame(&ResponseFrame {
            id: frame.id,
            result: Err(error),
        });
    }
    // A send fails only when the writer has stopped; the read loop notices that on its own.
    let _ = replies.send(Outgoing {
        frame: encoded,
        slot,
    });
}

fn dispatch<H: RequestHandler>(handler: &H, request: Request, responder: Responder) {
    let handling = handler.handle(request);
    tokio::task::spawn_local(async move {
        let result = handling.await;
        responder.finish(result);
    });
}

/// Delivers one request's outcome. If the request task dies without an outcome (a panic in the
/// handler), the client still gets an answer instead of waiting forever.
struct Responder {
    id: u64,
    reply: bool,
    slot: Option<OwnedSemaphorePermit>,
    replies: mpsc::UnboundedSender<Outgoing>,
    silent_failure: Rc<Notify>,
    max_reply_frame_bytes: u32,
}

impl Responder {
    fn finish(mut self, result: Result<Response, ApiError>) {
        self.deliver(result);
    }

    fn deliver(&mut self, result: Result<Response, ApiError>) {
        let Some(slot) = self.slot.take() else { return };
        if self.reply {
            send(
                &self.replies,
                &ResponseFrame {
                    id: self.id,
                    result,
                },
                slot,
                self.max_reply_frame_bytes,
            );
        } else if let Err(error) = result {
            // With acks=0 the client would never hear of the failure and could keep sending
            // to a node that is not the leader. Closing the connection tells it to refresh
            // metadata, as Kafka does.
            debug!(id = self.id, code = %error.code, %error, "acks=0 produce failed; closing connection");
            self.silent_failure.notify_one();
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if self.slot.is_some() {
            let error = ApiError::new(
                ErrorCode::INTERNAL,
                "the request failed inside the server; see its log",
            );
            self.deliver(Err(error));
        }
    }
}

/// Reads and drops whatever the client still sends, for a bounded time and amount, so that the
/// close is a FIN after our last reply rather than a reset.
async fn discard_input<S: AsyncRead>(reader: &mut BufReader<ReadHalf<S>>) {
    let mut sink = tokio::io::sink();
    let mut limited = reader.take(CLOSE_LINGER_BYTES);
    let _ = tokio::time::timeout(CLOSE_LINGER, tokio::io::copy(&mut limited, &mut sink)).await;
}
