//! Record batches travel as msgpack bin and are read only from bin: serde's own decoding of
//! `Bytes` would also take a string or an array of integers, which PROTOCOL.md does not allow.

use bytes::Bytes;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;

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

    fn visit_bytes<E>(self, bytes: &[u8]) -> Result<Bin, E> {
        Ok(Bin(Bytes::copy_from_slice(bytes)))
    }

    fn visit_byte_buf<E>(self, bytes: Vec<u8>) -> Result<Bin, E> {
        Ok(Bin(Bytes::from(bytes)))
    }
}
