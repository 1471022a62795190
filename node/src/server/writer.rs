//! The one writer of a connection: replies from every request task go through it, so frames
//! never interleave, and replies that are ready together leave in one write.
//!
//! A reply is a [`ChunkedFrame`]: small ones are gathered in the write buffer, a large one
//! (a fetch reply) goes to the socket as a vectored write of its chunks, so its record batches
//! are not copied on the way out.

use bytes::Buf;
use gregor_protocol::frame::ChunkedFrame;
use std::sync::Arc;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Room to gather many small replies into one `write` syscall.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// An encoded reply frame, holding its request's in-flight slot until the frame is handed to
/// the socket: a client that stops reading replies stops being read from.
#[derive(Debug)]
pub struct Outgoing {
    pub frame: ChunkedFrame,
    pub slot: OwnedSemaphorePermit,
}

/// Writes frames until every sender is gone, then flushes and half-closes the socket.
///
/// # Errors
/// The socket error that ended the connection; frames still queued are dropped.
pub async fn run<W: AsyncWrite + Unpin>(
    mut replies: mpsc::UnboundedReceiver<Outgoing>,
    socket: W,
) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, socket);
    while let Some(first) = replies.recv().await {
        write(&mut out, first).await?;
        loop {
            match replies.try_recv() {
                Ok(next) => write(&mut out, next).await?,
                Err(_) => {
                    // Let request tasks that are about to finish add their replies to this
                    // write before paying for a syscall.
                    tokio::task::yield_now().await;
                    match replies.try_recv() {
                        Ok(next) => write(&mut out, next).await?,
                        Err(_) => break,
                    }
                }
            }
        }
        out.flush().await?;
    }
    out.shutdown().await
}

async fn write<W: AsyncWrite + Unpin>(
    out: &mut BufWriter<W>,
    mut reply: Outgoing,
) -> std::io::Result<()> {
    if reply.frame.remaining() >= WRITE_BUFFER_BYTES && out.get_ref().is_write_vectored() {
        // Straight to the socket, in order after what is buffered: through the buffer, the
        // last pieces of each partial write would be copied into it.
        out.flush().await?;
        out.get_mut().write_all_buf(&mut reply.frame).await?;
    } else {
        out.write_all_buf(&mut reply.frame).await?;
    }
    // The frame is in the buffer or the kernel: the request no longer holds memory here.
    drop(reply.slot);
    Ok(())
}

/// A fresh in-flight limiter for one connection.
pub fn slots(max_in_flight: usize) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(max_in_flight))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use gregor_protocol::api::{FetchReply, Response, ResponseFrame};
    use gregor_protocol::frame::{encode_chunked_frame, encode_frame};
    use gregor_protocol::Offset;
    use std::io::IoSlice;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// Counts the writes that would have been syscalls.
    #[derive(Default)]
    struct CountingSocket {
        writes: usize,
        bytes: Vec<u8>,
    }

    impl AsyncWrite for CountingSocket {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.writes += 1;
            self.bytes.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn replies_ready_together_leave_in_one_write() {
        let slots = slots(1000);
        let (tx, rx) = mpsc::unbounded_channel();
        for _ in 0..500 {
            let slot = slots.clone().try_acquire_owned().expect("free slot");
            tx.send(Outgoing {
                frame: Bytes::from_static(&[7; 100]).into(),
                slot,
            })
            .expect("writer alive");
        }
        drop(tx);
        let mut socket = CountingSocket::default();
        run(rx, &mut socket).await.expect("write to memory");
        assert_eq!(socket.bytes.len(), 50_000);
        // 50 kB fits the 64 KiB buffer: one write, not 500.
        assert_eq!(socket.writes, 1);
    }

    #[tokio::test]
    async fn queued_replies_are_written_in_order_and_slots_released() {
        let slots = slots(4);
        let (tx, rx) = mpsc::unbounded_channel();
        for i in 0..4u8 {
            let slot = slots.clone().try_acquire_owned().expect("free slot");
            tx.send(Outgoing {
                frame: Bytes::from(vec![i; 3]).into(),
                slot,
            })
            .expect("writer alive");
        }
        assert_eq!(slots.available_permits(), 0);
        drop(tx);
        let mut sink = Vec::new();
        run(rx, &mut sink).await.expect("write to memory");
        assert_eq!(sink, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
        assert_eq!(slots.available_permits(), 4);
    }

    /// Accepts vectored writes, remembering where each slice it was handed lived.
    #[derive(Default)]
    struct VectoredSocket {
        bytes: Vec<u8>,
        slice_addresses: Vec<*const u8>,
    }

    impl AsyncWrite for VectoredSocket {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.slice_addresses.push(buf.as_ptr());
            self.bytes.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            // Take only part of what is offered, as a socket with a full send buffer does.
            let mut taken = 0;
            for buf in bufs.iter().take(3) {
                self.slice_addresses.push(buf.as_ptr());
                self.bytes.extend_from_slice(buf);
                taken += buf.len();
            }
            Poll::Ready(Ok(taken))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_large_reply_reaches_the_socket_from_its_batches_own_buffers() {
        let batches: Vec<Bytes> = (0..40u8).map(|i| Bytes::from(vec![i; 16 * 1024])).collect();
        let reply = ResponseFrame {
            id: 3,
            result: Ok(Response::Fetch(FetchReply {
                high_watermark: Offset(9),
                log_start_offset: Offset(0),
                batches: batches.clone(),
            })),
        };
        let slots = slots(2);
        let (tx, rx) = mpsc::unbounded_channel();
        for frame in [
            Bytes::from_static(b"\0\0\0\x01x").into(),
            encode_chunked_frame(&reply),
        ] {
            let slot = slots.clone().try_acquire_owned().expect("free slot");
            tx.send(Outgoing { frame, slot }).expect("writer alive");
        }
        drop(tx);
        let mut socket = VectoredSocket::default();
        run(rx, &mut socket).await.expect("write to memory");
        let mut expected = b"\0\0\0\x01x".to_vec();
        expected.extend_from_slice(&encode_frame(&reply));
        assert_eq!(socket.bytes, expected);
        for batch in &batches {
            assert!(
                socket.slice_addresses.contains(&batch.as_ptr()),
                "a batch was copied before it reached the socket"
            );
        }
    }
}
