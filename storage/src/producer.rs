//! Idempotent-producer state: per partition and producer, the last five batches applied.
//!
//! Applying a `Records` entry records every batch with a producer id (>= 0) and a sequence
//! (>= 0) in that producer's window, in the same atomic write as the offsets. The leader checks a
//! new batch against it (a duplicate is answered with the original offset, a gap refused); that
//! check is not storage's. Rows live in `meta`:
//!
//! ```text
//! state (tag 4, producer_id:u64)                   := 1 epoch:i16 count:u8
//!                                                      (first_seq:i32 last_seq:i32
//!                                                       first_offset:u64 records:u32){count}
//! age   (tag 5, newest first_offset:u64, producer) := (empty)
//! ```
//!
//! The age rows order producers by their newest batch, so the one to evict once a partition
//! holds more than [`MAX_PRODUCERS_PER_PARTITION`] is the first of them: deterministic on every
//! replica, whatever the number of producers.

use crate::entry::{Reader, FORMAT_V1};
use crate::{Offset, StorageError};

/// Batches remembered per producer, as Kafka does.
pub const PRODUCER_WINDOW: usize = 5;
/// Producers remembered per partition (about 100 bytes each). Beyond it the producer whose
/// newest batch is oldest is forgotten; its next batch then finds no state, as after Kafka's
/// producer-id expiry.
pub const MAX_PRODUCERS_PER_PARTITION: u32 = 1024;

/// Kafka sequences are non-negative i32s that wrap from `i32::MAX` to 0.
const SEQUENCE_SPACE: i64 = 1 << 31;

/// One producer's recent batches in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProducerState {
    pub epoch: i16,
    /// Oldest first; at most [`PRODUCER_WINDOW`].
    pub batches: Vec<ProducerBatch>,
}

/// A batch as applied: its sequence range and where its records went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub first_offset: Offset,
    pub record_count: u32,
}

impl ProducerBatch {
    /// The batch of `record_count` records from sequence `first_sequence`, at `first_offset`.
    pub fn new(first_sequence: i32, record_count: u32, first_offset: Offset) -> ProducerBatch {
        let last = (i64::from(first_sequence) + i64::from(record_count) - 1) % SEQUENCE_SPACE;
        ProducerBatch {
            first_sequence,
            last_sequence: last as i32,
            first_offset,
            record_count,
        }
    }
}

impl ProducerState {
    /// Offset of the newest batch: the producer's age for eviction.
    pub fn newest_offset(&self) -> Offset {
        self.batches.last().map_or(Offset(0), |b| b.first_offset)
    }

    /// Adds an applied batch. A newer epoch starts a new window; an older epoch, or a batch
    /// whose sequence does not come after the newest one's, is already known (a re-applied
    /// entry) and changes nothing. Returns whether the state changed.
    pub(crate) fn record(&mut self, epoch: i16, batch: ProducerBatch) -> bool {
        if epoch < self.epoch {
            return false;
        }
        if epoch > self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
        if let Some(newest) = self.batches.last() {
            if !follows(newest.last_sequence, batch.first_sequence) {
                return false;
            }
        }
        if self.batches.len() == PRODUCER_WINDOW {
            self.batches.remove(0);
        }
        self.batches.push(batch);
        true
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        assert!(
            self.batches.len() <= PRODUCER_WINDOW,
            "producer window overflow"
        );
        let mut out = Vec::with_capacity(4 + self.batches.len() * 20);
        out.push(FORMAT_V1);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.push(self.batches.len() as u8);
        for b in &self.batches {
            out.extend_from_slice(&b.first_sequence.to_be_bytes());
            out.extend_from_slice(&b.last_sequence.to_be_bytes());
            out.extend_from_slice(&b.first_offset.0.to_be_bytes());
            out.extend_from_slice(&b.record_count.to_be_bytes());
        }
        out
    }

    pub(crate) fn decode(value: &[u8]) -> Result<ProducerState, StorageError> {
        let mut reader = Reader { rest: value };
        let state = read(&mut reader)
            .map_err(|why| StorageError::corrupt(format!("producer state: {why}")))?;
        if !reader.rest.is_empty() {
            return Err(StorageError::corrupt("producer state: trailing bytes"));
        }
        Ok(state)
    }
}

/// Reads one encoded state from `reader` (snapshots embed them).
pub(crate) fn read(reader: &mut Reader<'_>) -> Result<ProducerState, &'static str> {
    if reader.u8()? != FORMAT_V1 {
        return Err("unknown format version");
    }
    let epoch = reader.u16()? as i16;
    let count = usize::from(reader.u8()?);
    if count > PRODUCER_WINDOW {
        return Err("window longer than five batches");
    }
    let mut batches = Vec::with_capacity(count);
    for _ in 0..count {
        batches.push(ProducerBatch {
            first_sequence: reader.u32()? as i32,
            last_sequence: reader.u32()? as i32,
            first_offset: Offset(reader.u64()?),
            record_count: reader.u32()?,
        });
    }
    Ok(ProducerState { epoch, batches })
}

/// Whether `first` starts a batch after one ending at `last`: within the half of the wrapping
/// sequence space that lies ahead of it.
fn follows(last: i32, first: i32) -> bool {
    let distance = (i64::from(first) - i64::from(last) - 1).rem_euclid(SEQUENCE_SPACE);
    distance < SEQUENCE_SPACE / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture_hex::{hex, unhex};

    /// Format version 1 as committed.
    const STATE_V1: &str = "01 0003 02
        00000000 00000009 0000000000000064 0000000a
        0000000a 0000000b 000000000000006e 00000002";

    #[test]
    fn v1_fixture_decodes_and_reencodes() {
        let state = ProducerState {
            epoch: 3,
            batches: vec![
                ProducerBatch::new(0, 10, Offset(100)),
                ProducerBatch::new(10, 2, Offset(110)),
            ],
        };
        assert_eq!(
            ProducerState::decode(&unhex(STATE_V1)).expect("decode"),
            state
        );
        assert_eq!(hex(&state.encode()), hex(&unhex(STATE_V1)));
        assert!(ProducerState::decode(&unhex(STATE_V1)[..20]).is_err());
    }

    #[test]
    fn the_window_keeps_the_last_five_batches_and_skips_what_it_has() {
        let mut state = ProducerState::default();
        for i in 0..7 {
            assert!(state.record(0, ProducerBatch::new(i * 2, 2, Offset(u64::from(i as u32)))));
        }
        assert_eq!(state.batches.len(), PRODUCER_WINDOW);
        assert_eq!(state.batches[0].first_sequence, 4);
        // Re-applying any of them, or an older one, changes nothing.
        let before = state.clone();
        assert!(!state.record(0, ProducerBatch::new(12, 2, Offset(6))));
        assert!(!state.record(0, ProducerBatch::new(0, 2, Offset(0))));
        assert_eq!(state, before);
        // An older epoch is fenced; a newer one starts afresh.
        assert!(!state.record(-1, ProducerBatch::new(14, 1, Offset(9))));
        assert!(state.record(1, ProducerBatch::new(0, 1, Offset(9))));
        assert_eq!(state.batches.len(), 1);
    }

    #[test]
    fn sequences_wrap() {
        let last = ProducerBatch::new(i32::MAX - 1, 3, Offset(0));
        assert_eq!(last.last_sequence, 0);
        assert!(follows(i32::MAX, 0));
        assert!(follows(0, 1));
        assert!(!follows(5, 5));
        assert!(!follows(5, 0));
    }
}
