//! What was seen at each offset, gathered once from every source the checkers trust.

use crate::history::{AckLevel, History, SendOutcome, Tp};
use std::collections::{BTreeMap, BTreeSet};

/// Where a value was seen at an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// An acks=all acknowledgement.
    Ack,
    /// A consumer's poll.
    Poll,
    /// The final read.
    FinalRead,
    /// A replica's stored log, on this node.
    Replica(u64),
}

#[derive(Debug, Default)]
pub struct Observed {
    /// Per partition, per offset: each value seen there and where.
    pub at: BTreeMap<Tp, BTreeMap<u64, BTreeMap<String, BTreeSet<Source>>>>,
    /// Per value: every (partition, offset) a read or replica returned it at.
    pub read_at: BTreeMap<String, BTreeSet<(Tp, u64)>>,
    /// Replica groups mapped to the partition their records belong to.
    pub group_tp: BTreeMap<u64, Tp>,
}

impl Observed {
    pub fn build(history: &History) -> Observed {
        let mut observed = Observed::default();
        let sends = history.sends_by_value();
        for send in &history.sends {
            if let (AckLevel::All, SendOutcome::Acked(offset)) = (send.acks, &send.outcome) {
                observed.see(&send.tp, *offset, &send.value, Source::Ack, false);
            }
        }
        for poll in &history.polls {
            for (offset, value) in &poll.records {
                observed.see(&poll.tp, *offset, value, Source::Poll, true);
            }
        }
        for read in &history.final_reads {
            for (offset, value) in &read.records {
                observed.see(&read.tp, *offset, value, Source::FinalRead, true);
            }
        }
        for dump in &history.replicas {
            // A replica's group is the partition its records were sent to.
            let tp = dump
                .records
                .values()
                .find_map(|value| sends.get(value.as_str()).map(|s| s.tp.clone()));
            let Some(tp) = tp else {
                continue;
            };
            observed.group_tp.insert(dump.group, tp.clone());
            for (offset, value) in &dump.records {
                let source = Source::Replica(dump.node.0);
                observed.see(&tp, *offset, value, source, true);
            }
        }
        observed
    }

    fn see(&mut self, tp: &Tp, offset: u64, value: &str, source: Source, read: bool) {
        self.at
            .entry(tp.clone())
            .or_default()
            .entry(offset)
            .or_default()
            .entry(value.to_owned())
            .or_default()
            .insert(source);
        if read {
            self.read_at
                .entry(value.to_owned())
                .or_default()
                .insert((tp.clone(), offset));
        }
    }

    /// The one value every source agrees on at `offset` of `tp`, if they agree.
    pub fn value_at(&self, tp: &Tp, offset: u64) -> Option<&str> {
        let values = self.at.get(tp)?.get(&offset)?;
        (values.len() == 1).then(|| values.keys().next().map(String::as_str))?
    }

    /// Whether any read or replica returned `value`.
    pub fn was_read(&self, value: &str) -> bool {
        self.read_at.contains_key(value)
    }
}
