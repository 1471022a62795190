//! The partition of a keyed record, the way Kafka's Java producer chooses it.
//!
//! Keys hash with Kafka's murmur2 so that a key lands on the same partition here as in a Java,
//! librdkafka (`murmur2_random`) or Sarama (`KafkaHasher`) producer: mixed-language producers
//! keep per-key order. PROTOCOL.md gives the algorithm and test vectors for other languages.

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), a transcription of the Java
/// code: Java `int` arithmetic wraps, and `>>>` is a logical shift, hence the `u32` casts.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: i32 = 0x5bd1_e995;
    const R: u32 = 24;

    let length = data.len();
    // Java takes `seed ^ length` on `int`s; keys over 2 GiB cannot reach a producer anyway.
    let mut h: i32 = (SEED ^ length as u32) as i32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = i32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= ((k as u32) >> R) as i32;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    // Java's switch falls through from case 3 to case 1; the multiply happens once.
    if tail.len() >= 3 {
        h ^= i32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= i32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= i32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= ((h as u32) >> 13) as i32;
    h = h.wrapping_mul(M);
    h ^= ((h as u32) >> 15) as i32;
    h
}

/// Kafka's `Utils.toPositive`: masks the sign bit. Not `abs`, which would map `i32::MIN` out of
/// range and would send negative hashes to different partitions than Java does.
pub fn to_positive(n: i32) -> u32 {
    (n & 0x7fff_ffff) as u32
}

/// The partition Kafka's default partitioner gives `key`: `toPositive(murmur2(key)) % n`.
///
/// # Panics
/// If `partitions` is 0: every topic has at least one partition.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    to_positive(murmur2(key)) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Apache Kafka's `UtilsTest.testMurmur2` vectors, so a key hashes here exactly as in a Java
    /// producer.
    #[test]
    fn murmur2_matches_kafkas_own_test_vectors() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key), expected, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn negative_hash_is_masked_not_negated() {
        // murmur2("21") is negative: Java masks the sign bit rather than taking abs().
        let masked = (-973_932_308_i32 & 0x7fff_ffff) as u32;
        assert_eq!(to_positive(murmur2(b"21")), masked);
        assert_eq!(partition_for_key(b"21", 7), masked % 7);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(-1), i32::MAX as u32);
    }

    #[test]
    fn empty_key_hashes_like_java() {
        // Java: h = seed ^ 0, no body, no tail, then the final mix.
        let mut h = 0x9747_b28c_u32 as i32;
        h ^= ((h as u32) >> 13) as i32;
        h = h.wrapping_mul(0x5bd1_e995);
        h ^= ((h as u32) >> 15) as i32;
        assert_eq!(murmur2(b""), h);
    }

    proptest! {
        #[test]
        fn key_partition_is_always_in_range(key in proptest::collection::vec(any::<u8>(), 0..64), n in 1u32..10_000) {
            let p = partition_for_key(&key, n);
            prop_assert!(p < n);
            prop_assert_eq!(p, partition_for_key(&key, n));
        }
    }
}
