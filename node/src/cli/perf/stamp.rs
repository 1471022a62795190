//! The send time `perf produce` writes into the first bytes of each record's value, so that
//! `perf consume` measures end-to-end latency in microseconds: a record's own timestamp is in
//! whole milliseconds, as coarse as the latencies this is meant to see (Redis and NATS report
//! theirs in tenths of a millisecond). The producer and the consumer must share a clock (one
//! machine, or hosts whose clocks agree far better than the latencies measured).

/// Starts a stamped value: a NUL no payload of `perf produce` contains (letters, JSON), then a
/// version.
const MARK: [u8; 4] = *b"\0gp1";

/// Bytes the stamp takes: the mark and the send time in microseconds since the epoch.
pub const STAMP_BYTES: usize = MARK.len() + 8;

/// Writes the stamp over the start of `value`; values shorter than the stamp stay as they are.
pub fn write(value: &mut [u8], sent_us: u64) {
    if value.len() >= STAMP_BYTES {
        value[..MARK.len()].copy_from_slice(&MARK);
        value[MARK.len()..STAMP_BYTES].copy_from_slice(&sent_us.to_le_bytes());
    }
}

/// The send time of a stamped value.
pub fn read(value: &[u8]) -> Option<u64> {
    let stamp = value.get(..STAMP_BYTES)?;
    let (mark, time) = stamp.split_at(MARK.len());
    (mark == MARK).then(|| u64::from_le_bytes(time.try_into().expect("eight bytes")))
}

/// Microseconds since the epoch. The benchmark measures real time, so it reads the wall clock
/// directly.
#[allow(clippy::disallowed_methods)]
pub fn wall_clock_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_and_unstamped_values_have_none() {
        let mut value = b"ABCDEFGHIJKLMNOP".to_vec();
        assert_eq!(read(&value), None);
        write(&mut value, 1_764_000_000_123_456);
        assert_eq!(read(&value), Some(1_764_000_000_123_456));
        assert_eq!(&value[STAMP_BYTES..], b"MNOP");
        let mut short = b"ABC".to_vec();
        write(&mut short, 1);
        assert_eq!((short.as_slice(), read(&short)), (&b"ABC"[..], None));
        assert_eq!(read(b"{\"order_id\":1000000}"), None);
    }
}
