//! Where the workload writes what it did and saw: the history the checkers read, and the
//! trace.

use crate::history::{
    Commit, CommittedRead, FinalRead, History, LeaderSeen, LogStartSeen, Poll, Send, SendOutcome,
    TopicLife, Tp,
};
use crate::trace::SharedTrace;
use std::cell::{Ref, RefCell};
use std::rc::Rc;

#[derive(Clone)]
pub struct Recorder {
    history: Rc<RefCell<History>>,
    pub trace: SharedTrace,
}

impl Recorder {
    pub fn new(history: History, trace: SharedTrace) -> Recorder {
        Recorder {
            history: Rc::new(RefCell::new(history)),
            trace,
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.trace.now_ms()
    }

    pub fn history(&self) -> Ref<'_, History> {
        self.history.borrow()
    }

    /// Takes the history out (at the end of the run).
    pub fn take(&self) -> History {
        std::mem::take(&mut *self.history.borrow_mut())
    }

    /// Records a send as invoked; returns its index for [`Recorder::send_completed`].
    pub fn send_invoked(&self, send: Send) -> usize {
        self.trace.event(format_args!(
            "send producer={} {} seq={} acks={:?} value={}",
            send.producer, send.tp, send.seq, send.acks, send.value
        ));
        let mut history = self.history.borrow_mut();
        history.sends.push(send);
        history.sends.len() - 1
    }

    pub fn send_completed(&self, index: usize, outcome: SendOutcome) {
        let now = self.now_ms();
        let mut history = self.history.borrow_mut();
        let send = &mut history.sends[index];
        self.trace.event(format_args!(
            "sent producer={} seq={} -> {outcome:?}",
            send.producer, send.seq
        ));
        send.completed_ms = Some(now);
        send.outcome = outcome;
    }

    pub fn poll(&self, poll: Poll) {
        let first = poll.records.first().map(|r| r.0);
        let last = poll.records.last().map(|r| r.0);
        self.trace.event(format_args!(
            "poll consumer={} session={} {} {} records {first:?}..={last:?}",
            poll.consumer,
            poll.session,
            poll.tp,
            poll.records.len()
        ));
        self.history.borrow_mut().polls.push(poll);
    }

    pub fn commit(&self, commit: Commit) {
        self.trace.event(format_args!(
            "commit group={} {} offset={} ok={}",
            commit.group, commit.tp, commit.offset, commit.ok
        ));
        self.history.borrow_mut().commits.push(commit);
    }

    pub fn committed_read(&self, read: CommittedRead) {
        self.trace.event(format_args!(
            "committed group={} {} -> {:?}",
            read.group, read.tp, read.offset
        ));
        self.history.borrow_mut().committed_reads.push(read);
    }

    pub fn leader(&self, seen: LeaderSeen) {
        self.trace.event(format_args!(
            "leader group={} term={} node={}",
            seen.group, seen.term, seen.node
        ));
        self.history.borrow_mut().leaders.push(seen);
    }

    pub fn log_start(&self, seen: LogStartSeen) {
        self.trace
            .event(format_args!("log start {} -> {}", seen.tp, seen.offset));
        self.history.borrow_mut().log_starts.push(seen);
    }

    pub fn topic_created(&self, life: TopicLife) {
        self.trace.event(format_args!(
            "topic created {}#{} partitions={} retention_ms={:?}",
            life.topic, life.incarnation, life.partitions, life.retention_ms
        ));
        self.history.borrow_mut().topics.push(life);
    }

    pub fn topic_deleted(&self, topic: &str, incarnation: u32) {
        let now = self.now_ms();
        self.trace
            .event(format_args!("topic deleted {topic}#{incarnation}"));
        let mut history = self.history.borrow_mut();
        if let Some(life) = history
            .topics
            .iter_mut()
            .find(|t| t.topic == topic && t.incarnation == incarnation)
        {
            life.deleted_ms.get_or_insert(now);
        }
    }

    pub fn final_read(&self, read: FinalRead) {
        self.trace.event(format_args!(
            "final read {} [{}, {}) {} records",
            read.tp,
            read.log_start,
            read.high_watermark,
            read.records.len()
        ));
        self.history.borrow_mut().final_reads.push(read);
    }

    pub fn note(&self, what: impl std::fmt::Display) {
        self.trace.event(what);
    }

    /// Marks every send still pending on `tp` (for the tests' access).
    pub fn pending_sends(&self, tp: &Tp) -> usize {
        self.history
            .borrow()
            .sends
            .iter()
            .filter(|s| &s.tp == tp && s.outcome == SendOutcome::Pending)
            .count()
    }
}
