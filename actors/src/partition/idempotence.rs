//! The leader's idempotent-producer check, free of I/O.
//!
//! A batch stamped with a producer id carries the producer's epoch and the sequence of its first
//! record, counted per partition from 0. The leader checks it against what the partition knows
//! of that producer: the window of its last five applied batches (replicated, in snapshots, so
//! it survives failover) followed by the batches this leader has proposed in its term and not
//! yet seen applied. Only a leader that has applied an entry of its own term checks, so the
//! applied window holds everything its predecessors committed, and its own proposals are the
//! only batches that can still commit besides.

use crate::api::{ApiError, ErrorCode};
use gregor_storage::batch::BatchView;
use gregor_storage::Offset;
use gregor_storage::ProducerState;
use std::collections::{BTreeMap, VecDeque};

/// Kafka sequences are non-negative i32s that wrap from `i32::MAX` to 0.
const SEQUENCE_SPACE: i64 = 1 << 31;

/// The idempotence fields of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub producer: i64,
    pub epoch: i16,
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub records: u32,
}

impl Stamp {
    /// The stamp of a validated batch; `None` for a batch of no idempotent producer.
    ///
    /// # Errors
    /// `INVALID_BATCH` when a producer id comes with a negative epoch or sequence.
    pub fn of(batch: &[u8]) -> Result<Option<Stamp>, ApiError> {
        let view = BatchView::trusted(batch);
        let producer = view.producer_id();
        if producer < 0 {
            return Ok(None);
        }
        let (epoch, first_sequence) = (view.producer_epoch(), view.base_sequence());
        if epoch < 0 || first_sequence < 0 {
            return Err(ApiError::new(
                ErrorCode::INVALID_BATCH,
                format!(
                    "a batch of producer {producer} needs a producer epoch and a base sequence \
                     of 0 or more (it has {epoch} and {first_sequence})"
                ),
            ));
        }
        let records = view.record_count();
        let last = (i64::from(first_sequence) + i64::from(records) - 1) % SEQUENCE_SPACE;
        Ok(Some(Stamp {
            producer,
            epoch,
            first_sequence,
            last_sequence: last as i32,
            records,
        }))
    }
}

/// Where a batch the partition already knows is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// Applied at this offset.
    Applied(Offset),
    /// Proposed by this leader, not applied yet.
    Proposed,
    /// An earlier batch of the same request.
    ThisRequest,
}

/// One producer's sequence as the partition knows it: applied, then proposed.
struct Sequence {
    epoch: i16,
    /// `(first, last, where)`, oldest first.
    batches: Vec<(i32, i32, Known)>,
}

impl Sequence {
    fn new(applied: Option<&ProducerState>, proposed: &[Proposed]) -> Option<Sequence> {
        let mut sequence = applied.map(|state| Sequence {
            epoch: state.epoch,
            batches: state
                .batches
                .iter()
                .map(|b| {
                    (
                        b.first_sequence,
                        b.last_sequence,
                        Known::Applied(b.first_offset),
                    )
                })
                .collect(),
        });
        for p in proposed {
            match &mut sequence {
                None => {
                    sequence = Some(Sequence {
                        epoch: p.epoch,
                        batches: vec![(p.first, p.last, Known::Proposed)],
                    })
                }
                Some(s) => s.add_proposed(p),
            }
        }
        sequence
    }

    /// Adds a batch this leader proposed, unless the applied window already covers it.
    fn add_proposed(&mut self, p: &Proposed) {
        if p.epoch < self.epoch {
            return;
        }
        if p.epoch > self.epoch {
            self.epoch = p.epoch;
            self.batches.clear();
        }
        let next = self.batches.last().map(|b| next_after(b.1));
        if next.is_none() || next == Some(p.first) {
            self.batches.push((p.first, p.last, Known::Proposed));
        }
    }

    fn check(&self, stamp: &Stamp) -> Result<Verdict, ApiError> {
        if stamp.epoch < self.epoch {
            return Err(ApiError::new(
                ErrorCode::INVALID_PRODUCER_EPOCH,
                format!(
                    "producer {} has epoch {} here, newer than the batch's {}: this producer \
                     was fenced; start a new one",
                    stamp.producer, self.epoch, stamp.epoch
                ),
            ));
        }
        if stamp.epoch > self.epoch || self.batches.is_empty() {
            return first_of_epoch(stamp);
        }
        if let Some(&(_, last, known)) = self.batches.iter().find(|b| b.0 == stamp.first_sequence) {
            if last != stamp.last_sequence {
                return Err(out_of_order(stamp, "overlaps a batch with other records"));
            }
            return match known {
                Known::Applied(offset) => Ok(Verdict::Duplicate(offset)),
                Known::Proposed => Ok(Verdict::InFlight),
                Known::ThisRequest => Err(out_of_order(stamp, "repeats a batch of its request")),
            };
        }
        let newest = self.batches.last().expect("not empty").1;
        let expected = next_after(newest);
        if stamp.first_sequence == expected {
            return Ok(Verdict::New);
        }
        let oldest = self.batches[0].0;
        if ahead(newest, stamp.first_sequence) {
            Err(out_of_order(
                stamp,
                &format!("leaves a gap: the next sequence is {expected}"),
            ))
        } else if ahead(stamp.first_sequence, oldest) {
            Err(ApiError::new(
                ErrorCode::DUPLICATE_SEQUENCE,
                format!(
                    "the batch of producer {} from sequence {} was written already, before the \
                     five batches the partition remembers, so its offset is not known",
                    stamp.producer, stamp.first_sequence
                ),
            ))
        } else {
            Err(out_of_order(stamp, "does not start where a batch started"))
        }
    }

    fn add_this_request(&mut self, stamp: &Stamp) {
        if stamp.epoch > self.epoch {
            self.epoch = stamp.epoch;
            self.batches.clear();
        }
        self.batches.push((
            stamp.first_sequence,
            stamp.last_sequence,
            Known::ThisRequest,
        ));
    }
}

fn first_of_epoch(stamp: &Stamp) -> Result<Verdict, ApiError> {
    if stamp.first_sequence == 0 {
        Ok(Verdict::New)
    } else {
        Err(ApiError::new(
            ErrorCode::UNKNOWN_PRODUCER_ID,
            format!(
                "partition knows no batch of producer {} in epoch {}, so sequence {} cannot \
                 follow one; its state expired or it never wrote here: start a new producer",
                stamp.producer, stamp.epoch, stamp.first_sequence
            ),
        ))
    }
}

fn out_of_order(stamp: &Stamp, why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::OUT_OF_ORDER_SEQUENCE,
        format!(
            "the batch of producer {} from sequence {} {why}",
            stamp.producer, stamp.first_sequence
        ),
    )
}

fn next_after(last: i32) -> i32 {
    ((i64::from(last) + 1) % SEQUENCE_SPACE) as i32
}

/// Whether `sequence` lies after `last`, within the half of the wrapping space ahead of it.
fn ahead(last: i32, sequence: i32) -> bool {
    let distance = (i64::from(sequence) - i64::from(last) - 1).rem_euclid(SEQUENCE_SPACE);
    distance < SEQUENCE_SPACE / 2
}

/// What to do with one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    New,
    Duplicate(Offset),
    /// A batch this leader proposed and has not seen applied: its outcome is not known yet.
    InFlight,
}

/// What to do with a whole produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Write every batch; these are the idempotent ones, to remember as proposed.
    Write(Vec<Stamp>),
    /// Every batch was written already, from this offset on, contiguously: answer with it.
    Duplicate(Offset),
}

/// A batch this leader proposed in its term.
#[derive(Debug, Clone, Copy)]
struct Proposed {
    epoch: i16,
    first: i32,
    last: i32,
    write: u64,
}

/// The batches this leader proposed in its current term, per producer, in proposal order.
/// A proposal whose outcome is unknown (it timed out) stays until the term ends: it may still
/// commit, and a retry of it must not be written again.
#[derive(Debug, Default)]
pub struct Proposals {
    term: u64,
    by_producer: BTreeMap<i64, VecDeque<Proposed>>,
}

impl Proposals {
    /// Forgets every proposal of an earlier term: a leader of `term` that has applied an entry
    /// of its own term has applied every earlier entry that can ever commit.
    pub fn enter_term(&mut self, term: u64) {
        if term != self.term {
            self.term = term;
            self.by_producer.clear();
        }
    }

    pub fn clear(&mut self) {
        self.by_producer.clear();
    }

    /// Remembers the batches of request `write` as proposed.
    pub fn add(&mut self, write: u64, stamps: &[Stamp]) {
        for s in stamps {
            self.by_producer
                .entry(s.producer)
                .or_default()
                .push_back(Proposed {
                    epoch: s.epoch,
                    first: s.first_sequence,
                    last: s.last_sequence,
                    write,
                });
        }
    }

    /// Forgets the batches of requests whose entry was applied.
    pub fn applied(&mut self, writes: &[u64]) {
        self.by_producer.retain(|_, batches| {
            batches.retain(|b| !writes.contains(&b.write));
            !batches.is_empty()
        });
    }

    #[cfg(test)]
    pub fn producers(&self) -> usize {
        self.by_producer.len()
    }

    /// Checks a request's batches in order. `applied` gives a producer's applied window.
    ///
    /// # Errors
    /// The first batch refused (`OUT_OF_ORDER_SEQUENCE`, `UNKNOWN_PRODUCER_ID`,
    /// `INVALID_PRODUCER_EPOCH`, `DUPLICATE_SEQUENCE`, `INVALID_BATCH`); `UNAVAILABLE`
    /// (retriable) when a batch is one this leader proposed and has not seen applied.
    pub fn decide(
        &self,
        stamps: &[Option<Stamp>],
        mut applied: impl FnMut(i64) -> Result<Option<ProducerState>, ApiError>,
    ) -> Result<Decision, ApiError> {
        let mut sequences: BTreeMap<i64, Option<Sequence>> = BTreeMap::new();
        let mut new = Vec::new();
        let mut duplicates: Vec<(Offset, u32)> = Vec::new();
        for stamp in stamps {
            let Some(stamp) = stamp else {
                new.push(None);
                continue;
            };
            let sequence = match sequences.entry(stamp.producer) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let state = applied(stamp.producer)?;
                    let proposed: Vec<Proposed> = self
                        .by_producer
                        .get(&stamp.producer)
                        .map(|q| q.iter().copied().collect())
                        .unwrap_or_default();
                    e.insert(Sequence::new(state.as_ref(), &proposed))
                }
            };
            let verdict = match sequence {
                Some(s) => s.check(stamp)?,
                None => first_of_epoch(stamp)?,
            };
            match verdict {
                Verdict::New => {
                    match sequence {
                        Some(s) => s.add_this_request(stamp),
                        None => {
                            *sequence = Some(Sequence {
                                epoch: stamp.epoch,
                                batches: vec![(
                                    stamp.first_sequence,
                                    stamp.last_sequence,
                                    Known::ThisRequest,
                                )],
                            })
                        }
                    }
                    new.push(Some(*stamp));
                }
                Verdict::Duplicate(offset) => duplicates.push((offset, stamp.records)),
                Verdict::InFlight => {
                    return Err(ApiError::new(
                        ErrorCode::UNAVAILABLE,
                        format!(
                            "the batch of producer {} from sequence {} is being written by an \
                             earlier request; retry shortly for its offset",
                            stamp.producer, stamp.first_sequence
                        ),
                    ))
                }
            }
        }
        if duplicates.is_empty() {
            return Ok(Decision::Write(new.into_iter().flatten().collect()));
        }
        if !new.is_empty() {
            return Err(ApiError::new(
                ErrorCode::OUT_OF_ORDER_SEQUENCE,
                "the request mixes batches written already with new ones; send the new ones \
                 in a request of their own",
            ));
        }
        let contiguous = duplicates
            .windows(2)
            .all(|w| w[0].0 .0 + u64::from(w[0].1) == w[1].0 .0);
        if !contiguous {
            return Err(ApiError::new(
                ErrorCode::DUPLICATE_SEQUENCE,
                "every batch was written already, but not at contiguous offsets, so one base \
                 offset cannot answer for them",
            ));
        }
        Ok(Decision::Duplicate(duplicates[0].0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor_storage::ProducerBatch;

    fn stamp(producer: i64, epoch: i16, first: i32, records: u32) -> Stamp {
        Stamp {
            producer,
            epoch,
            first_sequence: first,
            last_sequence: first + records as i32 - 1,
            records,
        }
    }

    fn applied(batches: &[(i32, u32, u64)]) -> ProducerState {
        ProducerState {
            epoch: 0,
            batches: batches
                .iter()
                .map(|&(seq, n, off)| ProducerBatch::new(seq, n, Offset(off)))
                .collect(),
        }
    }

    fn decide(
        proposals: &Proposals,
        state: Option<ProducerState>,
        stamps: &[Stamp],
    ) -> Result<Decision, ApiError> {
        let stamps: Vec<Option<Stamp>> = stamps.iter().copied().map(Some).collect();
        proposals.decide(&stamps, |_| Ok(state.clone()))
    }

    fn code(result: Result<Decision, ApiError>) -> ErrorCode {
        result.expect_err("refused").code
    }

    #[test]
    fn a_new_producer_starts_at_zero() {
        let p = Proposals::default();
        let s = stamp(7, 0, 0, 3);
        assert_eq!(decide(&p, None, &[s]), Ok(Decision::Write(vec![s])));
        assert_eq!(
            code(decide(&p, None, &[stamp(7, 0, 5, 1)])),
            ErrorCode::UNKNOWN_PRODUCER_ID
        );
    }

    #[test]
    fn duplicates_are_answered_with_their_offset_and_gaps_refused() {
        let p = Proposals::default();
        let state = applied(&[(0, 3, 100), (3, 2, 110)]);
        assert_eq!(
            decide(&p, Some(state.clone()), &[stamp(7, 0, 3, 2)]),
            Ok(Decision::Duplicate(Offset(110)))
        );
        let next = stamp(7, 0, 5, 1);
        assert_eq!(
            decide(&p, Some(state.clone()), &[next]),
            Ok(Decision::Write(vec![next]))
        );
        assert_eq!(
            code(decide(&p, Some(state.clone()), &[stamp(7, 0, 6, 1)])),
            ErrorCode::OUT_OF_ORDER_SEQUENCE
        );
        assert_eq!(
            code(decide(&p, Some(state.clone()), &[stamp(7, 0, 3, 1)])),
            ErrorCode::OUT_OF_ORDER_SEQUENCE
        );
        assert_eq!(
            code(decide(&p, Some(state), &[stamp(7, 0, 1, 1)])),
            ErrorCode::OUT_OF_ORDER_SEQUENCE
        );
    }

    #[test]
    fn batches_older_than_the_window_are_duplicates_without_an_offset() {
        let p = Proposals::default();
        let state = applied(&[
            (10, 1, 10),
            (11, 1, 11),
            (12, 1, 12),
            (13, 1, 13),
            (14, 1, 14),
        ]);
        assert_eq!(
            code(decide(&p, Some(state), &[stamp(7, 0, 2, 1)])),
            ErrorCode::DUPLICATE_SEQUENCE
        );
    }

    #[test]
    fn epochs_fence_and_restart_sequences() {
        let p = Proposals::default();
        let mut state = applied(&[(0, 1, 0)]);
        state.epoch = 2;
        assert_eq!(
            code(decide(&p, Some(state.clone()), &[stamp(7, 1, 1, 1)])),
            ErrorCode::INVALID_PRODUCER_EPOCH
        );
        let fresh = stamp(7, 3, 0, 1);
        assert_eq!(
            decide(&p, Some(state.clone()), &[fresh]),
            Ok(Decision::Write(vec![fresh]))
        );
        assert_eq!(
            code(decide(&p, Some(state), &[stamp(7, 3, 4, 1)])),
            ErrorCode::UNKNOWN_PRODUCER_ID
        );
    }

    #[test]
    fn proposals_of_this_term_count_until_applied_and_are_forgotten_at_a_new_term() {
        let mut p = Proposals::default();
        p.enter_term(4);
        let state = applied(&[(0, 2, 0)]);
        let first = stamp(7, 0, 2, 2);
        p.add(1, &[first]);
        // A retry of the proposed batch waits for its outcome; the next one follows it.
        assert_eq!(
            code(decide(&p, Some(state.clone()), &[first])),
            ErrorCode::UNAVAILABLE
        );
        let second = stamp(7, 0, 4, 1);
        assert_eq!(
            decide(&p, Some(state.clone()), &[second]),
            Ok(Decision::Write(vec![second]))
        );
        // Applied: the window answers for it, whether or not the proposal was forgotten yet.
        let after = applied(&[(0, 2, 0), (2, 2, 2)]);
        assert_eq!(
            decide(&p, Some(after.clone()), &[first]),
            Ok(Decision::Duplicate(Offset(2)))
        );
        p.applied(&[1]);
        assert_eq!(p.producers(), 0);
        p.add(2, &[second]);
        p.enter_term(5);
        assert_eq!(
            decide(&p, Some(after), &[second]),
            Ok(Decision::Write(vec![second]))
        );
    }

    #[test]
    fn a_request_is_checked_batch_by_batch_and_answered_whole() {
        let p = Proposals::default();
        let (a, b) = (stamp(7, 0, 0, 2), stamp(7, 0, 2, 3));
        assert_eq!(decide(&p, None, &[a, b]), Ok(Decision::Write(vec![a, b])));
        assert_eq!(
            code(decide(&p, None, &[a, a])),
            ErrorCode::OUT_OF_ORDER_SEQUENCE
        );
        let state = applied(&[(0, 2, 40), (2, 3, 42)]);
        assert_eq!(
            decide(&p, Some(state.clone()), &[a, b]),
            Ok(Decision::Duplicate(Offset(40)))
        );
        let c = stamp(7, 0, 5, 1);
        assert_eq!(
            code(decide(&p, Some(state), &[b, c])),
            ErrorCode::OUT_OF_ORDER_SEQUENCE
        );
    }
}
