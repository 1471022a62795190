//! Frames encoded as a sequence of chunks: the msgpack the encoder writes, with the large
//! record batches it carries left in their own buffers instead of copied into the frame. A
//! 1 MiB fetch reply is then written to the socket straight from the batches' buffers (a
//! vectored write), not from a second megabyte assembled for it.
//!
//! The bytes are exactly those [`super::encode_frame`] produces; only where they live differs.

use super::{FrameSize, ENVELOPE_BYTES, LENGTH_PREFIX_BYTES};
use bytes::{Buf, Bytes, BytesMut};
use serde::Serialize;
use std::io::IoSlice;

/// Batches smaller than this are copied into the frame: a separate chunk (one more slice in
/// the vectored write, a reference count) costs more than copying a few hundred bytes.
pub const MIN_SHARED_BATCH_BYTES: usize = 1024;

/// One encoded frame, length prefix included, as a [`Buf`] over its chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedFrame {
    chunks: Vec<Bytes>,
    /// The first chunk not yet consumed through [`Buf::advance`].
    front: usize,
    remaining: usize,
}

impl ChunkedFrame {
    /// The frame body's length (the length prefix excluded), of what is not yet consumed.
    pub fn body_len(&self) -> usize {
        self.remaining.saturating_sub(LENGTH_PREFIX_BYTES)
    }

    /// The chunks not yet consumed, in order.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks[self.front..]
    }
}

/// A frame already encoded in one buffer, as [`super::encode_frame`] makes them.
impl From<Bytes> for ChunkedFrame {
    fn from(frame: Bytes) -> ChunkedFrame {
        ChunkedFrame {
            remaining: frame.len(),
            chunks: vec![frame],
            front: 0,
        }
    }
}

impl Buf for ChunkedFrame {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.get(self.front).map_or(&[], |c| &c[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(
            cnt <= self.remaining,
            "advance past the end of the frame: {cnt} > {}",
            self.remaining
        );
        self.remaining -= cnt;
        while cnt > 0 {
            let chunk = &mut self.chunks[self.front];
            let step = cnt.min(chunk.len());
            chunk.advance(step);
            cnt -= step;
            if chunk.is_empty() {
                self.front += 1;
            }
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, chunk) in dst.iter_mut().zip(self.chunks()) {
            *slot = IoSlice::new(chunk);
            filled += 1;
        }
        filled
    }
}

/// Encodes `value` as one frame (length prefix included) whose batches of at least
/// [`MIN_SHARED_BATCH_BYTES`] stay in their own buffers.
///
/// # Panics
/// As [`super::encode_frame`].
pub fn encode_chunked_frame<T: Serialize + FrameSize>(value: &T) -> ChunkedFrame {
    let shared = value.batches();
    let is_large = |b: &&Bytes| b.len() >= MIN_SHARED_BATCH_BYTES;
    let large = shared.iter().filter(is_large).count();
    let copied: usize = shared.iter().map(Bytes::len).sum::<usize>()
        - shared
            .iter()
            .filter(is_large)
            .map(Bytes::len)
            .sum::<usize>();
    // The head, then each large batch followed by the piece up to the next one.
    let mut chunks = Vec::with_capacity(2 * large + 1);
    chunks.push(Bytes::new());
    let mut writer = ChunkWriter {
        next: None,
        shared: shared.iter(),
        open: BytesMut::with_capacity(ENVELOPE_BYTES + copied + 5 * shared.len()),
        head: None,
        chunks,
    };
    writer.next = writer.next_shared();
    writer.open.extend_from_slice(&[0; LENGTH_PREFIX_BYTES]);
    rmp_serde::encode::write_named(&mut writer, value).expect("frame types encode to msgpack");
    writer.finish()
}

/// Collects what the encoder writes, recognising the shared batches by address: msgpack writes
/// a bin value's payload in one `write_all` of the very slice it was given.
struct ChunkWriter<'a> {
    shared: std::slice::Iter<'a, Bytes>,
    /// The next batch the encoder will write that is large enough to share.
    next: Option<&'a Bytes>,
    /// Bytes written since the last shared batch. Later pieces are split off it, so every
    /// copied piece lives in this one allocation.
    open: BytesMut,
    /// The first piece, kept mutable until the body length is known.
    head: Option<BytesMut>,
    /// `chunks[0]` is a placeholder for `head`.
    chunks: Vec<Bytes>,
}

impl<'a> ChunkWriter<'a> {
    fn next_shared(&mut self) -> Option<&'a Bytes> {
        self.shared
            .by_ref()
            .find(|b| b.len() >= MIN_SHARED_BATCH_BYTES)
    }

    fn close_open_piece(&mut self) {
        let piece = self.open.split();
        match self.head {
            None => self.head = Some(piece),
            Some(_) if piece.is_empty() => {}
            Some(_) => self.chunks.push(piece.freeze()),
        }
    }

    fn finish(mut self) -> ChunkedFrame {
        self.close_open_piece();
        let mut head = self
            .head
            .take()
            .expect("the open piece was closed into the head");
        let total: usize = head.len() + self.chunks.iter().map(Bytes::len).sum::<usize>();
        let body_len = u32::try_from(total - LENGTH_PREFIX_BYTES)
            .expect("frame bodies are bounded far below 4 GiB by max_frame_bytes and fetch limits");
        head[..LENGTH_PREFIX_BYTES].copy_from_slice(&body_len.to_be_bytes());
        self.chunks[0] = head.freeze();
        ChunkedFrame {
            chunks: self.chunks,
            front: 0,
            remaining: total,
        }
    }
}

impl std::io::Write for ChunkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.next {
            Some(batch) if std::ptr::eq(&batch[..], buf) => {
                self.close_open_piece();
                self.chunks.push(batch.clone());
                self.next = self.next_shared();
            }
            _ => self.open.extend_from_slice(buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FetchReply, ListTopics, Request, RequestFrame, Response, ResponseFrame};
    use crate::frame::encode_frame;
    use crate::Offset;

    fn fetch_reply(batches: Vec<Bytes>) -> ResponseFrame {
        ResponseFrame {
            id: 7,
            result: Ok(Response::Fetch(FetchReply {
                high_watermark: Offset(100),
                log_start_offset: Offset(0),
                batches,
            })),
        }
    }

    fn concatenated(mut frame: ChunkedFrame) -> Vec<u8> {
        let mut out = Vec::new();
        while frame.has_remaining() {
            let n = frame.chunk().len();
            out.extend_from_slice(frame.chunk());
            frame.advance(n);
        }
        out
    }

    #[test]
    fn the_bytes_are_those_of_the_one_buffer_encoding_and_large_batches_are_shared() {
        let large = Bytes::from(vec![0xab; 70_000]);
        let small = Bytes::from(vec![0xcd; 100]);
        let exact = Bytes::from(vec![0xef; MIN_SHARED_BATCH_BYTES]);
        let frame = fetch_reply(vec![large.clone(), small, exact.clone(), large.clone()]);
        let chunked = encode_chunked_frame(&frame);
        assert_eq!(
            chunked.body_len() + LENGTH_PREFIX_BYTES,
            chunked.remaining()
        );
        let shared: Vec<_> = chunked
            .chunks()
            .iter()
            .filter(|c| c.as_ptr() == large.as_ptr() || c.as_ptr() == exact.as_ptr())
            .collect();
        assert_eq!(
            shared.len(),
            3,
            "each large batch is one chunk of its own buffer"
        );
        assert_eq!(concatenated(chunked), encode_frame(&frame));
    }

    #[test]
    fn a_frame_without_large_batches_is_one_chunk() {
        let frames = [
            fetch_reply(vec![Bytes::from_static(b"tiny")]),
            fetch_reply(Vec::new()),
            ResponseFrame {
                id: 1,
                result: Ok(Response::ListGroups(vec!["g".into()])),
            },
        ];
        for frame in frames {
            let chunked = encode_chunked_frame(&frame);
            assert_eq!(chunked.chunks().len(), 1);
            assert_eq!(concatenated(chunked), encode_frame(&frame));
        }
        let request = RequestFrame {
            id: 2,
            request: Request::ListTopics(ListTopics {
                include_internal: true,
            }),
        };
        assert_eq!(
            concatenated(encode_chunked_frame(&request)),
            encode_frame(&request)
        );
    }

    #[test]
    fn advancing_across_chunks_and_vectored_views_agree() {
        let batch = Bytes::from(vec![1u8; 4096]);
        let frame = fetch_reply(vec![batch.clone(), batch]);
        let whole = encode_frame(&frame);
        let mut chunked = encode_chunked_frame(&frame);
        let mut offset = 0;
        for step in [3, 1, 4000, 100, 5, 4097] {
            chunked.advance(step);
            offset += step;
            let mut slices = [IoSlice::new(&[]); 8];
            let n = chunked.chunks_vectored(&mut slices);
            let rest: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
            assert_eq!(rest, whole[offset..], "after advancing {offset}");
            assert_eq!(chunked.remaining(), whole.len() - offset);
        }
        let rest = chunked.remaining();
        chunked.advance(rest);
        assert!(!chunked.has_remaining());
        assert!(chunked.chunk().is_empty());
    }
}
