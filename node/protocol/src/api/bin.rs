//! Record batches travel as msgpack bin and are read only from bin: serde's own decoding of
//! `Bytes` would also take a string or an array of integers, which PROTOCOL.md does not allow.
//!
//! A batch decoded inside [`sharing`] is a slice of the frame's buffer rather than a copy of
//! it: a 1 MiB produce request would otherwise cost a second megabyte and a memcpy before it
//! reaches the log. Outside [`sharing`] (clients, tests, `from_slice` on a plain slice) each
//! batch is copied, as serde's `Deserialize` alone cannot know which buffer it borrows from.

use bytes::Bytes;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::cell::RefCell;
use std::fmt;

thread_local! {
    /// The buffer being decoded by [`sharing`] on this thread, if any.
    static SOURCE: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Runs `decode` (a deserialization of `source`) so that the batches it reads borrowed from
/// `source` become slices of it. Only the thread-local source is set: decoding itself, and so
/// every check it makes, is the same as without it.
pub(crate) fn sharing<T>(source: &Bytes, decode: impl FnOnce() -> T) -> T {
    /// Puts back the outer source even if `decode` panics, so a later decode on this thread
    /// never slices a buffer it was not reading.
    struct Restore(Option<Bytes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SOURCE.with(|s| *s.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(SOURCE.with(|s| s.replace(Some(source.clone()))));
    decode()
}

/// `bytes` as a slice of the buffer being decoded when it lies inside it, else a copy.
fn shared_or_copied(bytes: &[u8]) -> Bytes {
    SOURCE.with(|s| match &*s.borrow() {
        Some(source) if lies_within(bytes, source) => source.slice_ref(bytes),
        _ => Bytes::copy_from_slice(bytes),
    })
}

fn lies_within(inner: &[u8], outer: &[u8]) -> bool {
    let outer = outer.as_ptr_range();
    let inner = inner.as_ptr_range();
    outer.start <= inner.start && inner.end <= outer.end
}

/// Deserializes an array of bin values.
pub(super) fn batches<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Bytes>, D::Error> {
    deserializer.deserialize_seq(BatchesVisitor)
}

struct BatchesVisitor;

impl<'de> Visitor<'de> for BatchesVisitor {
    type Value = Vec<Bytes>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of bin (record batches)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Bytes>, A::Error> {
        // Each element takes at least one byte, so the hint cannot make us reserve more than
        // the frame holds; cap it all the same.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(Bin(bytes)) = seq.next_element()? {
            out.push(bytes);
        }
        Ok(out)
    }
}

struct Bin(Bytes);

impl<'de> Deserialize<'de> for Bin {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(BinVisitor)
    }
}

struct BinVisitor;

impl<'de> Visitor<'de> for BinVisitor {
    type Value = Bin;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bin (a record batch)")
    }

    fn visit_borrowed_bytes<E>(self, bytes: &'de [u8]) -> Result<Bin, E> {
        Ok(Bin(shared_or_copied(bytes)))
    }

    fn visit_bytes<E>(self, bytes: &[u8]) -> Result<Bin, E> {
        Ok(Bin(Bytes::copy_from_slice(bytes)))
    }

    fn visit_byte_buf<E>(self, bytes: Vec<u8>) -> Result<Bin, E> {
        Ok(Bin(Bytes::from(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Wire<'a> {
        #[serde(with = "serde_bytes_like")]
        batches: Vec<&'a [u8]>,
    }

    #[derive(Deserialize)]
    struct Decoded {
        #[serde(deserialize_with = "batches")]
        batches: Vec<Bytes>,
    }

    /// Encodes each batch as bin, as `Bytes` does.
    mod serde_bytes_like {
        use serde::ser::{SerializeSeq, Serializer};
        pub fn serialize<S: Serializer>(v: &[&[u8]], s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(v.len()))?;
            for b in v {
                seq.serialize_element(&bytes::Bytes::copy_from_slice(b))?;
            }
            seq.end()
        }
    }

    fn encoded() -> Bytes {
        let wire = Wire {
            batches: vec![b"first batch", b"", b"second"],
        };
        Bytes::from(rmp_serde::to_vec_named(&wire).expect("encode"))
    }

    #[test]
    fn batches_decoded_while_sharing_are_slices_of_the_source() {
        let source = encoded();
        let decoded: Decoded = sharing(&source, || rmp_serde::from_slice(&source)).expect("decode");
        let expected: [&[u8]; 3] = [b"first batch", b"", b"second"];
        assert_eq!(decoded.batches, expected);
        for batch in decoded.batches.iter().filter(|b| !b.is_empty()) {
            assert!(lies_within(batch, &source), "batch {batch:?} was copied");
        }
    }

    #[test]
    fn batches_decoded_from_another_buffer_or_outside_sharing_are_copies() {
        let source = encoded();
        let elsewhere = source.to_vec();
        for decoded in [
            sharing(&source, || rmp_serde::from_slice::<Decoded>(&elsewhere)),
            rmp_serde::from_slice::<Decoded>(&source),
        ] {
            let decoded = decoded.expect("decode");
            assert_eq!(decoded.batches[0], &b"first batch"[..]);
            assert!(!lies_within(&decoded.batches[0], &source));
            assert!(!lies_within(&decoded.batches[0], &elsewhere));
        }
    }

    #[test]
    fn the_outer_source_is_restored_after_a_nested_or_panicking_decode() {
        let outer = encoded();
        let inner = encoded();
        sharing(&outer, || {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                sharing(&inner, || panic!("decoder failed"))
            }));
            let decoded: Decoded = rmp_serde::from_slice(&outer).expect("decode");
            assert!(lies_within(&decoded.batches[0], &outer));
        });
        let after: Decoded = rmp_serde::from_slice(&outer).expect("decode");
        assert!(!lies_within(&after.batches[0], &outer));
    }
}
