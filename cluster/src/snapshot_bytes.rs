//! The bytes of a snapshot as async-raft streams them: a leader's outgoing copy, read chunk by
//! chunk, and a follower's incoming buffer, written chunk by chunk. Two of async-raft 0.6.1's
//! snapshot-stream defects are contained here (the table in ARCHITECTURE.md):
//!
//! - its leader resends a chunk that failed at the same offset for ever, and restarts a stream
//!   from offset 0 only when reading its copy fails. An outgoing copy therefore fails its next
//!   seek once the group's network has counted a restart ([`StreamRestarts`]) since the copy
//!   was taken: the stream then takes a fresh copy and sends it from the start;
//! - its follower, when a stream starts again at offset 0 over one in progress, seeks back and
//!   writes over the old bytes without dropping those past the new ones. An incoming buffer
//!   drops everything after the position it seeks to, so it always holds exactly the bytes of
//!   the chunks written since, in order.

use std::io::{Cursor, Seek, SeekFrom, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// Counts the snapshot-stream restarts a group's network asked for; shared by the group's
/// network and the copies its storage hands out.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamRestarts(Arc<AtomicU64>);

impl StreamRestarts {
    /// Every outgoing copy taken before now fails its next seek.
    pub(crate) fn restart(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn count(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
enum Direction {
    /// A leader's copy; stale once `restarts` has moved past `taken_at`.
    Outgoing {
        restarts: StreamRestarts,
        taken_at: u64,
    },
    Incoming,
}

/// A snapshot's bytes in memory (see the module).
#[derive(Debug)]
pub struct SnapshotBytes {
    cursor: Cursor<Vec<u8>>,
    direction: Direction,
}

impl SnapshotBytes {
    /// A leader's copy of `bytes`, valid until the next restart counted in `restarts`.
    pub(crate) fn outgoing(bytes: Vec<u8>, restarts: &StreamRestarts) -> SnapshotBytes {
        SnapshotBytes {
            cursor: Cursor::new(bytes),
            direction: Direction::Outgoing {
                restarts: restarts.clone(),
                taken_at: restarts.count(),
            },
        }
    }

    /// An empty buffer for a snapshot streaming in.
    pub(crate) fn incoming() -> SnapshotBytes {
        SnapshotBytes {
            cursor: Cursor::new(Vec::new()),
            direction: Direction::Incoming,
        }
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.cursor.into_inner()
    }

    fn seek_now(&mut self, position: SeekFrom) -> std::io::Result<u64> {
        if let Direction::Outgoing { restarts, taken_at } = &self.direction {
            if restarts.count() != *taken_at {
                return Err(std::io::Error::other(
                    "the follower refused the stream: it starts again from offset 0",
                ));
            }
        }
        let at = self.cursor.seek(position)?;
        if matches!(self.direction, Direction::Incoming) {
            let bytes = self.cursor.get_mut();
            let keep = usize::try_from(at).unwrap_or(usize::MAX).min(bytes.len());
            bytes.truncate(keep);
        }
        Ok(at)
    }
}

impl AsyncRead for SnapshotBytes {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        // Copied straight into the caller's buffer: `initialize_unfilled` would zero all of its
        // spare capacity (a whole chunk) first, on every read.
        let cursor = &mut self.get_mut().cursor;
        let start = usize::try_from(cursor.position())
            .unwrap_or(usize::MAX)
            .min(cursor.get_ref().len());
        let remaining = &cursor.get_ref()[start..];
        let read = remaining.len().min(buf.remaining());
        buf.put_slice(&remaining[..read]);
        cursor.set_position((start + read) as u64);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SnapshotBytes {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.get_mut().cursor.write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for SnapshotBytes {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> std::io::Result<()> {
        self.get_mut().seek_now(position).map(|_| ())
    }

    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Poll::Ready(Ok(self.get_mut().cursor.position()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_restarted_stream_leaves_no_bytes_of_the_old_one() {
        let mut buffer = SnapshotBytes::incoming();
        buffer.write_all(b"old stream, longer").await.unwrap();
        buffer.seek(SeekFrom::Start(0)).await.unwrap();
        buffer.write_all(b"new").await.unwrap();
        assert_eq!(buffer.into_inner(), b"new");
    }

    #[tokio::test]
    async fn a_resent_chunk_replaces_what_followed_its_offset() {
        let mut buffer = SnapshotBytes::incoming();
        buffer.write_all(b"abcdef").await.unwrap();
        buffer.seek(SeekFrom::Start(3)).await.unwrap();
        buffer.write_all(b"DE").await.unwrap();
        assert_eq!(buffer.into_inner(), b"abcDE");
    }

    #[tokio::test]
    async fn an_outgoing_copy_fails_to_seek_after_a_restart_and_a_fresh_one_reads() {
        let restarts = StreamRestarts::default();
        let mut stale = SnapshotBytes::outgoing(b"snapshot".to_vec(), &restarts);
        stale.seek(SeekFrom::Start(4)).await.unwrap();
        restarts.restart();
        assert!(stale.seek(SeekFrom::Start(4)).await.is_err());
        let mut fresh = SnapshotBytes::outgoing(b"snapshot".to_vec(), &restarts);
        fresh.seek(SeekFrom::Start(0)).await.unwrap();
        let mut read = Vec::new();
        fresh.read_to_end(&mut read).await.unwrap();
        assert_eq!(read, b"snapshot");
    }
}
