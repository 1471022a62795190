//! The one writer of a connection: replies from every request task go through it, so frames
//! never interleave, and replies that are ready together leave in one write.

use bytes::Bytes;
use std::sync::Arc;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Room to gather many small replies into one `write` syscall.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// An encoded reply frame, holding its request's in-flight slot until the frame is handed to
/// the socket: a client that stops reading replies stops being read from.
#[derive(Debug)]
pub struct Outgoing {
    pub frame: Bytes,
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
    reply: Outgoing,
) -> std::io::Result<()> {
    out.write_all(&reply.frame).await?;
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
                frame: Bytes::from_static(&[7; 100]),
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
                frame: Bytes::from(vec![i; 3]),
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
}
