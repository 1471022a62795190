//! Framing of the client protocol: a 4-byte big-endian body length, then the body, a msgpack
//! map (rmp-serde "named" encoding) of a [`RequestFrame`] or [`ResponseFrame`]. PROTOCOL.md is
//! the full description.

mod chunked;

pub use chunked::{encode_chunked_frame, ChunkedFrame, MIN_SHARED_BATCH_BYTES};

use crate::api::{self, Request, RequestFrame, Response, ResponseFrame};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest frame body accepted by default, in bytes.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 16 * 1024 * 1024;
/// Largest reply frame body a server sends, in bytes (64 MiB): a fetch reply holds at most
/// 32 MiB of batches plus one batch of at most 8 MiB. A reply that would be larger is replaced
/// by a `FRAME_TOO_LARGE` error to its request. Clients should accept frames this large.
pub const MAX_REPLY_FRAME_BYTES: u32 = 64 * 1024 * 1024;
pub const LENGTH_PREFIX_BYTES: usize = 4;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    TooLarge { len: u32, max: u32 },
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes `value` as one frame (length prefix included).
///
/// # Panics
/// If the value cannot be encoded as msgpack (our frame types always can) or its body is over
/// 4 GiB (request and reply sizes are bounded far below that).
pub fn encode_frame<T: Serialize + FrameSize>(value: &T) -> Bytes {
    // Record batches dominate big frames: reserve for them up front instead of regrowing the
    // buffer a dozen times while a 1 MiB fetch reply is written.
    let mut buf = BytesMut::with_capacity(ENVELOPE_BYTES + value.payload_bytes());
    buf.put_u32(0);
    let mut writer = (&mut buf).writer();
    rmp_serde::encode::write_named(&mut writer, value).expect("frame types encode to msgpack");
    let body_len = u32::try_from(buf.len() - LENGTH_PREFIX_BYTES)
        .expect("frame bodies are bounded far below 4 GiB by max_frame_bytes and fetch limits");
    buf[..LENGTH_PREFIX_BYTES].copy_from_slice(&body_len.to_be_bytes());
    buf.freeze()
}

/// Room for everything in a frame but its record batches.
const ENVELOPE_BYTES: usize = 256;

/// The record batches a frame carries, to size its buffer and, in a [`ChunkedFrame`], to
/// leave them in their own buffers.
pub trait FrameSize {
    fn batches(&self) -> &[Bytes] {
        &[]
    }

    /// How many bytes of record batches the frame carries.
    fn payload_bytes(&self) -> usize {
        // Each batch also costs a msgpack bin header of at most 5 bytes.
        self.batches().iter().map(|b| b.len() + 5).sum()
    }
}

impl FrameSize for RequestFrame {
    fn batches(&self) -> &[Bytes] {
        match &self.request {
            Request::Produce(produce) => &produce.batches,
            _ => &[],
        }
    }
}

impl FrameSize for ResponseFrame {
    fn batches(&self) -> &[Bytes] {
        match &self.result {
            Ok(Response::Fetch(fetch)) => &fetch.batches,
            _ => &[],
        }
    }
}

/// Reads one frame body. `Ok(None)` on a clean end of stream between frames. The length is
/// checked against `max_frame_bytes` before anything is allocated.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_bytes: u32,
) -> Result<Option<Bytes>, FrameError> {
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    let mut filled = 0;
    while filled < LENGTH_PREFIX_BYTES {
        let n = reader.read(&mut prefix[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        filled += n;
    }
    let len = u32::from_be_bytes(prefix);
    if len > max_frame_bytes {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame_bytes,
        });
    }
    let mut body = BytesMut::zeroed(len as usize);
    reader
        .read_exact(&mut body)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
            _ => FrameError::Io(e),
        })?;
    Ok(Some(body.freeze()))
}

/// Why a request body could not be turned into a [`Request`].
#[derive(Debug, PartialEq, Eq)]
pub enum RequestDecodeError {
    /// Not even an id could be read.
    Malformed(String),
    /// The id is known, the `kind` is not one this build serves.
    UnknownKind { id: u64, kind: String },
    /// The id and kind are known, the body does not match the kind.
    BadBody { id: u64, reason: String },
}

/// Decodes a request body, telling an unknown `kind` apart from a malformed body so each gets
/// its own error code.
///
/// Decoding is strict where serde alone would be lenient: the frame and its `request` must be
/// maps and `kind` a string (serde would also take arrays, and a variant index for `kind`).
///
/// # Errors
/// [`RequestDecodeError`] saying how far decoding got.
pub fn decode_request(body: &[u8]) -> Result<RequestFrame, RequestDecodeError> {
    let head = rmp_serde::from_slice::<strict::FrameHead>(body)
        .map_err(|e| RequestDecodeError::Malformed(e.to_string()))?;
    if !Request::KINDS.contains(&head.kind.as_str()) {
        return Err(RequestDecodeError::UnknownKind {
            id: head.id,
            kind: head.kind,
        });
    }
    rmp_serde::from_slice::<RequestFrame>(body).map_err(|e| RequestDecodeError::BadBody {
        id: head.id,
        reason: e.to_string(),
    })
}

/// As [`decode_request`], but the record batches of a `Produce` are slices of `body` rather
/// than copies of it: the frame's buffer is the batches' buffer until the last of them is
/// dropped. Validation is the same, byte for byte.
///
/// # Errors
/// As [`decode_request`].
pub fn decode_shared_request(body: &Bytes) -> Result<RequestFrame, RequestDecodeError> {
    api::sharing(body, || decode_request(body))
}

/// The `id` and `kind` of a request frame, read only from maps.
mod strict {
    use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
    use serde::Deserialize;
    use std::fmt;

    pub(super) struct FrameHead {
        pub(super) id: u64,
        pub(super) kind: String,
    }

    struct Kind(String);

    impl<'de> Deserialize<'de> for FrameHead {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_map(FrameVisitor)
        }
    }

    impl<'de> Deserialize<'de> for Kind {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_map(KindVisitor)
        }
    }

    struct FrameVisitor;

    impl<'de> Visitor<'de> for FrameVisitor {
        type Value = FrameHead;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map with an integer `id` and a `request` map")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FrameHead, A::Error> {
            let (mut id, mut kind) = (None, None);
            while let Some(key) = map.next_key::<String>()? {
                match key.as_str() {
                    "id" => id = Some(map.next_value::<u64>()?),
                    "request" => kind = Some(map.next_value::<Kind>()?.0),
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(FrameHead {
                id: id.ok_or_else(|| de::Error::missing_field("id"))?,
                kind: kind.ok_or_else(|| de::Error::missing_field("request"))?,
            })
        }
    }

    struct KindVisitor;

    impl<'de> Visitor<'de> for KindVisitor {
        type Value = Kind;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a `request` map with a string `kind`")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
            let mut kind = None;
            while let Some(key) = map.next_key::<String>()? {
                if key == "kind" {
                    kind = Some(map.next_value::<String>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            kind.map(Kind)
                .ok_or_else(|| de::Error::missing_field("kind"))
        }
    }
}

/// Decodes a response body (client side).
///
/// # Errors
/// The msgpack error when the body is not a valid [`ResponseFrame`].
pub fn decode_response(body: &[u8]) -> Result<ResponseFrame, rmp_serde::decode::Error> {
    rmp_serde::from_slice(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ListGroups, ListTopics};

    #[tokio::test]
    async fn frame_round_trips_and_limit_is_checked_before_allocating() {
        let frame = RequestFrame {
            id: 9,
            request: Request::ListTopics(ListTopics {
                include_internal: false,
            }),
        };
        let bytes = encode_frame(&frame);
        let mut reader = &bytes[..];
        let body = read_frame(&mut reader, DEFAULT_MAX_FRAME_BYTES)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(decode_request(&body).unwrap(), frame);
        assert!(read_frame(&mut reader, DEFAULT_MAX_FRAME_BYTES)
            .await
            .unwrap()
            .is_none());

        let huge = [0xff, 0xff, 0xff, 0xff];
        let err = read_frame(&mut &huge[..], DEFAULT_MAX_FRAME_BYTES)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
        let err = read_frame(&mut &bytes[..bytes.len() - 1], DEFAULT_MAX_FRAME_BYTES)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Truncated));
    }

    fn produce_frame(batches: Vec<Bytes>) -> RequestFrame {
        RequestFrame {
            id: 11,
            request: Request::Produce(crate::api::Produce {
                topic: "t".into(),
                partition: crate::PartitionId(0),
                acks: crate::api::Acks::All,
                timeout_ms: 1000,
                batches,
                topic_id: None,
            }),
        }
    }

    #[test]
    fn a_shared_decode_slices_the_batches_out_of_the_frame_and_reads_the_same_request() {
        let frame = produce_frame(vec![Bytes::from(vec![3u8; 5000]), Bytes::from_static(b"b")]);
        let body = encode_frame(&frame).slice(LENGTH_PREFIX_BYTES..);
        let shared = decode_shared_request(&body).expect("decodes");
        assert_eq!(shared, frame);
        assert_eq!(decode_request(&body).expect("decodes"), frame);
        let Request::Produce(produce) = shared.request else {
            unreachable!("a produce frame decodes to a produce")
        };
        let range = body.as_ptr_range();
        for batch in &produce.batches {
            assert!(range.contains(&batch.as_ptr()), "batch copied");
        }
    }

    #[test]
    fn a_shared_decode_refuses_what_the_copying_one_refuses() {
        #[derive(Serialize)]
        struct Frame<B> {
            id: u64,
            request: Body<B>,
        }
        #[derive(Serialize)]
        struct Body<B> {
            kind: &'static str,
            body: B,
        }
        #[derive(Serialize)]
        struct LooseProduce<T> {
            topic: &'static str,
            partition: u32,
            acks: i8,
            timeout_ms: u32,
            batches: T,
        }
        fn produce<T>(batches: T) -> Frame<LooseProduce<T>> {
            Frame {
                id: 4,
                request: Body {
                    kind: "Produce",
                    body: LooseProduce {
                        topic: "t",
                        partition: 0,
                        acks: -1,
                        timeout_ms: 5,
                        batches,
                    },
                },
            }
        }
        let bodies = [
            rmp_serde::to_vec_named(&produce(vec!["a string, not bin"])).unwrap(),
            rmp_serde::to_vec_named(&produce(vec![vec![1u8, 2, 3]])).unwrap(),
            rmp_serde::to_vec_named(&produce(vec![] as Vec<&str>))
                .unwrap()
                .into_iter()
                .take(20)
                .collect(),
        ];
        for body in bodies {
            let copying = decode_request(&body);
            assert!(copying.is_err(), "{body:02x?}");
            assert_eq!(decode_shared_request(&Bytes::from(body)), copying);
        }
    }

    #[test]
    fn a_kind_that_is_not_a_string_or_a_request_that_is_not_a_map_is_malformed() {
        #[derive(Serialize)]
        struct Frame<R> {
            id: u64,
            request: R,
        }
        #[derive(Serialize)]
        struct IndexKind {
            kind: u32,
            body: ListGroups,
        }
        let by_index = rmp_serde::to_vec_named(&Frame {
            id: 3,
            request: IndexKind {
                kind: 11,
                body: ListGroups {},
            },
        })
        .unwrap();
        let as_array = rmp_serde::to_vec_named(&Frame {
            id: 3,
            request: ("ListGroups", ListGroups {}),
        })
        .unwrap();
        let frame_as_array = rmp_serde::to_vec(&RequestFrame {
            id: 3,
            request: Request::ListGroups(ListGroups {}),
        })
        .unwrap();
        for body in [by_index, as_array, frame_as_array] {
            assert!(
                matches!(decode_request(&body), Err(RequestDecodeError::Malformed(_))),
                "{body:02x?}"
            );
        }
    }

    #[test]
    fn unknown_kind_and_bad_body_are_told_apart() {
        #[derive(Serialize)]
        struct Fake<'a> {
            id: u64,
            request: FakeReq<'a>,
        }
        #[derive(Serialize)]
        struct FakeReq<'a> {
            kind: &'a str,
            body: u8,
        }
        let unknown = rmp_serde::to_vec_named(&Fake {
            id: 3,
            request: FakeReq {
                kind: "Teleport",
                body: 1,
            },
        })
        .unwrap();
        assert_eq!(
            decode_request(&unknown),
            Err(RequestDecodeError::UnknownKind {
                id: 3,
                kind: "Teleport".into()
            })
        );
        let bad = rmp_serde::to_vec_named(&Fake {
            id: 4,
            request: FakeReq {
                kind: "Produce",
                body: 1,
            },
        })
        .unwrap();
        assert!(matches!(
            decode_request(&bad),
            Err(RequestDecodeError::BadBody { id: 4, .. })
        ));
        assert!(matches!(
            decode_request(&[0xc1]),
            Err(RequestDecodeError::Malformed(_))
        ));
        let ok = rmp_serde::to_vec_named(&RequestFrame {
            id: 5,
            request: Request::ListGroups(ListGroups {}),
        })
        .unwrap();
        assert!(decode_request(&ok).is_ok());
    }
}
