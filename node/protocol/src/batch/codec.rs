//! Compression of a batch's records section, with Kafka's codecs and framings.
//!
//! A compressed batch keeps its 61-byte header in the clear; everything after it (the records,
//! back to back, exactly as in an uncompressed batch) is replaced by one compressed blob. The
//! codec is in attribute bits 0-2. Framings are the ones Kafka's clients write and read, so
//! batches move between Gregor and Kafka tooling unchanged:
//!
//! - gzip (1): an RFC 1952 gzip stream (one or more members);
//! - snappy (2): written as one raw snappy block; read as a raw block or in the "xerial"
//!   framing of Kafka's Java client (magic `82 53 4e 41 50 50 59 00`, two i32 versions, then
//!   blocks each prefixed by its big-endian i32 length);
//! - lz4 (3): the LZ4 frame format (magic `04 22 4d 18`), as Kafka since magic 1;
//! - zstd (4): one or more zstd frames (RFC 8878).
//!
//! Decompression is bounded: a records section that would decompress to more than
//! [`MAX_DECOMPRESSED_BYTES`] is refused before (snappy) or while (the others) it is inflated.

use super::BatchError;
use std::io::{Read, Write};

/// Largest decompressed records section accepted, in bytes (64 MiB). A batch is at most the
/// topic's `max_message_bytes` compressed; this bounds what one batch may expand to in memory.
pub const MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;

/// gzip level the producer writes with: Kafka's default (zlib's 6).
const GZIP_LEVEL: u32 = 6;
/// zstd level the producer writes with: zstd's and Kafka's default.
const ZSTD_LEVEL: i32 = 3;
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// Magic, then the writer's version and the oldest compatible version, each an i32.
const XERIAL_HEADER_LEN: usize = 16;

/// A batch compression codec; the numbers are Kafka's attribute codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Records stored as they are.
    #[default]
    None,
    /// gzip (RFC 1952), code 1.
    Gzip,
    /// snappy, code 2.
    Snappy,
    /// LZ4 frame format, code 3.
    Lz4,
    /// zstd frame format, code 4.
    Zstd,
}

impl Compression {
    /// Every codec, in code order.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec named by attribute bits 0-2.
    ///
    /// # Errors
    /// [`BatchError::UnsupportedCompression`] for codes 5 to 7.
    pub fn from_code(code: i16) -> Result<Compression, BatchError> {
        Compression::ALL
            .into_iter()
            .find(|c| c.code() == code)
            .ok_or(BatchError::UnsupportedCompression(code))
    }

    /// Kafka's attribute code: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn code(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The lowercase name used in configuration and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(text: &str) -> Result<Compression, String> {
        Compression::ALL
            .into_iter()
            .find(|c| c.name() == text)
            .ok_or_else(|| {
                format!("unknown compression '{text}': use none, gzip, snappy, lz4 or zstd")
            })
    }
}

/// Compresses `plain` with `codec`, appending to `out`.
///
/// # Panics
/// If `codec` is `None` (the caller stores such records as they are), or if an encoder fails
/// writing to memory, which they do not.
pub(crate) fn compress(codec: Compression, plain: &[u8], out: &mut Vec<u8>) {
    match codec {
        Compression::None => panic!("compress called for uncompressed records"),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
            encoder.write_all(plain).expect("gzip into memory");
            encoder.finish().expect("gzip into memory");
        }
        Compression::Snappy => {
            let start = out.len();
            out.resize(start + snap::raw::max_compress_len(plain.len()), 0);
            let written = snap::raw::Encoder::new()
                .compress(plain, &mut out[start..])
                .expect("snappy output sized by max_compress_len");
            out.truncate(start + written);
        }
        Compression::Lz4 => {
            let mut encoder = lz4_flex::frame::FrameEncoder::new(out);
            encoder.write_all(plain).expect("lz4 into memory");
            encoder.finish().expect("lz4 into memory");
        }
        Compression::Zstd => {
            let mut encoder = zstd::stream::Encoder::new(out, ZSTD_LEVEL).expect("zstd encoder");
            encoder.write_all(plain).expect("zstd into memory");
            encoder.finish().expect("zstd into memory");
        }
    }
}

/// Decompresses a records section, refusing one that expands past `limit` bytes.
///
/// # Errors
/// [`BatchError::Decompression`] for data the codec cannot read, and
/// [`BatchError::DecompressedTooLarge`] past the limit.
pub(crate) fn decompress(
    codec: Compression,
    compressed: &[u8],
    limit: usize,
) -> Result<Vec<u8>, BatchError> {
    match codec {
        Compression::None => Ok(compressed.to_vec()),
        Compression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(compressed), limit),
        Compression::Snappy => decompress_snappy(compressed, limit),
        Compression::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(compressed), limit),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(compressed)
                .map_err(|e| BatchError::Decompression(e.to_string()))?;
            read_bounded(decoder, limit)
        }
    }
}

/// Reads a decoder to its end, one byte past `limit` at most.
fn read_bounded(decoder: impl Read, limit: usize) -> Result<Vec<u8>, BatchError> {
    let mut plain = Vec::new();
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut plain)
        .map_err(|e| BatchError::Decompression(e.to_string()))?;
    if plain.len() > limit {
        return Err(BatchError::DecompressedTooLarge { limit });
    }
    Ok(plain)
}

fn decompress_snappy(compressed: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    let blocks = snappy_blocks(compressed)?;
    let mut total = 0usize;
    for block in &blocks {
        total = total.saturating_add(snappy_len(block)?);
    }
    if total > limit {
        return Err(BatchError::DecompressedTooLarge { limit });
    }
    let mut plain = vec![0; total];
    let mut at = 0;
    let mut decoder = snap::raw::Decoder::new();
    for block in blocks {
        at += decoder
            .decompress(block, &mut plain[at..])
            .map_err(|e| BatchError::Decompression(e.to_string()))?;
    }
    assert_eq!(
        at, total,
        "snappy blocks decompress to their declared lengths"
    );
    Ok(plain)
}

fn snappy_len(block: &[u8]) -> Result<usize, BatchError> {
    snap::raw::decompress_len(block).map_err(|e| BatchError::Decompression(e.to_string()))
}

/// The raw snappy blocks of a records section: the section itself, or the blocks of its
/// xerial framing.
fn snappy_blocks(compressed: &[u8]) -> Result<Vec<&[u8]>, BatchError> {
    if !compressed.starts_with(&XERIAL_MAGIC) {
        return Ok(vec![compressed]);
    }
    let bad = |why: &str| BatchError::Decompression(format!("xerial snappy framing: {why}"));
    let mut rest = compressed
        .get(XERIAL_HEADER_LEN..)
        .ok_or_else(|| bad("header cut short"))?;
    let mut blocks = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("block length cut short"))?;
        let len = usize::try_from(i32::from_be_bytes(*len)).map_err(|_| bad("negative length"))?;
        if len > tail.len() {
            return Err(bad("block runs past the batch"));
        }
        let (block, after) = tail.split_at(len);
        blocks.push(block);
        rest = after;
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..20_000u32)
            .flat_map(|i| format!("{{\"order\":{i},\"qty\":{}}}", i % 7).into_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips_and_shrinks_text() {
        let plain = sample();
        for codec in Compression::ALL.into_iter().skip(1) {
            let mut packed = Vec::new();
            compress(codec, &plain, &mut packed);
            assert!(packed.len() < plain.len() / 2, "{codec} did not compress");
            assert_eq!(decompress(codec, &packed, plain.len()).unwrap(), plain);
        }
    }

    #[test]
    fn decompression_past_the_limit_is_refused() {
        let plain = sample();
        for codec in Compression::ALL.into_iter().skip(1) {
            let mut packed = Vec::new();
            compress(codec, &plain, &mut packed);
            assert_eq!(
                decompress(codec, &packed, plain.len() - 1),
                Err(BatchError::DecompressedTooLarge {
                    limit: plain.len() - 1
                }),
                "{codec}"
            );
        }
    }

    #[test]
    fn garbage_is_a_decompression_error_for_every_codec() {
        for codec in Compression::ALL.into_iter().skip(1) {
            let result = decompress(codec, &[0xff; 40], 1 << 20);
            assert!(
                matches!(result, Err(BatchError::Decompression(_))),
                "{codec}: {result:?}"
            );
        }
    }

    #[test]
    fn xerial_framed_snappy_from_kafkas_java_client_is_read() {
        let plain = sample();
        let (first, second) = plain.split_at(plain.len() / 3);
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend(1i32.to_be_bytes());
        framed.extend(1i32.to_be_bytes());
        for part in [first, second] {
            let block = snap::raw::Encoder::new().compress_vec(part).unwrap();
            framed.extend((block.len() as i32).to_be_bytes());
            framed.extend(block);
        }
        assert_eq!(
            decompress(Compression::Snappy, &framed, 1 << 24).unwrap(),
            plain
        );
        framed.pop();
        assert!(decompress(Compression::Snappy, &framed, 1 << 24).is_err());
    }

    #[test]
    fn codes_and_names_are_kafkas() {
        let names: Vec<_> = Compression::ALL
            .iter()
            .map(|c| (c.code(), c.name()))
            .collect();
        assert_eq!(
            names,
            [
                (0, "none"),
                (1, "gzip"),
                (2, "snappy"),
                (3, "lz4"),
                (4, "zstd")
            ]
        );
        assert_eq!("zstd".parse::<Compression>(), Ok(Compression::Zstd));
        assert!("brotli".parse::<Compression>().is_err());
        assert_eq!(
            Compression::from_code(5),
            Err(BatchError::UnsupportedCompression(5))
        );
    }
}
