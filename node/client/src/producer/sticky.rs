//! The sticky partition of keyless records (KIP-480).
//!
//! Keyless records go to a sticky partition that changes once a batch for it is closed, so they
//! fill whole batches instead of spraying tiny ones, as Kafka's Java producer does.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// Per-topic sticky partition for keyless records.
///
/// The current partition holds until [`StickyPartitioner::batch_closed`] reports that a batch
/// for it was closed (full, or sent after its linger); the next keyless record then moves to a
/// partition drawn at random from the others. The generator is seeded by the caller so that a
/// run can be replayed.
#[derive(Debug)]
pub struct StickyPartitioner {
    current: BTreeMap<String, u32>,
    rng: SmallRng,
}

impl StickyPartitioner {
    pub fn new(seed: u64) -> Self {
        StickyPartitioner {
            current: BTreeMap::new(),
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// The partition for the next keyless record of `topic`.
    ///
    /// # Panics
    /// If `partitions` is 0.
    pub fn partition(&mut self, topic: &str, partitions: u32) -> u32 {
        assert!(partitions > 0, "a topic has at least one partition");
        if let Some(&p) = self.current.get(topic) {
            if p < partitions {
                return p;
            }
        }
        let p = self.rng.gen_range(0..partitions);
        self.current.insert(topic.to_owned(), p);
        p
    }

    /// A batch for `topic`/`partition` was closed: if that was the sticky partition, move on.
    pub fn batch_closed(&mut self, topic: &str, partition: u32, partitions: u32) {
        let Some(current) = self.current.get_mut(topic) else {
            return;
        };
        if *current != partition || partitions <= 1 {
            return;
        }
        // Draw among the other partitions only, so that a switch always moves.
        let pick = self.rng.gen_range(0..partitions - 1);
        *current = if pick >= partition { pick + 1 } else { pick };
    }

    /// Forget the sticky choice for `topic` (its partition count changed).
    pub fn forget(&mut self, topic: &str) {
        self.current.remove(topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sticky_partition_holds_until_its_batch_closes_then_moves() {
        let mut sticky = StickyPartitioner::new(7);
        let first = sticky.partition("t", 4);
        for _ in 0..100 {
            assert_eq!(sticky.partition("t", 4), first);
        }
        // A batch closing on another partition changes nothing.
        sticky.batch_closed("t", (first + 1) % 4, 4);
        assert_eq!(sticky.partition("t", 4), first);
        sticky.batch_closed("t", first, 4);
        let second = sticky.partition("t", 4);
        assert_ne!(second, first);
        assert_eq!(sticky.partition("t", 4), second);
    }

    #[test]
    fn sticky_is_reproducible_from_its_seed() {
        let run = |seed| {
            let mut s = StickyPartitioner::new(seed);
            (0..20)
                .map(|_| {
                    let p = s.partition("t", 10);
                    s.batch_closed("t", p, 10);
                    p
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
    }

    #[test]
    fn single_partition_topic_never_moves() {
        let mut sticky = StickyPartitioner::new(1);
        assert_eq!(sticky.partition("t", 1), 0);
        sticky.batch_closed("t", 0, 1);
        assert_eq!(sticky.partition("t", 1), 0);
    }

    proptest! {
        #[test]
        fn sticky_partition_is_always_in_range(seed in any::<u64>(), n in 1u32..64, closes in 0usize..20) {
            let mut s = StickyPartitioner::new(seed);
            for _ in 0..closes {
                let p = s.partition("t", n);
                prop_assert!(p < n);
                s.batch_closed("t", p, n);
            }
            prop_assert!(s.partition("t", n) < n);
        }
    }
}
