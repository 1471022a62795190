//! One group's quiet flag as the node's quiescence loop and dispatcher use it.

use async_raft::Quiescence;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

pub(crate) struct GroupQuiet {
    flag: Quiescence,
    /// Counts wakes. An offer to quiet records it and is void once it moved: a proposal that
    /// woke the group while its followers were agreeing must not be slept through.
    wakes: Mutex<u64>,
    /// The settled point last seen on this leader, and in how many rounds in a row.
    idle: Mutex<Option<(Settled, u32)>>,
    /// Whether the members were told this replica started (see `announce`).
    announced: AtomicBool,
    /// Whether the members were told this replica's Raft core ended (see `farewell`).
    farewelled: AtomicBool,
    /// Proposals and membership changes under way: a leader with one is not idle, even before
    /// its entry reaches the log.
    in_flight: AtomicU64,
}

/// Holds a group awake while a proposal or a membership change is under way.
pub(crate) struct Busy<'a>(&'a GroupQuiet);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A leader's term and the index at which its log was settled.
pub(crate) type Settled = (u64, u64);

impl GroupQuiet {
    pub(crate) fn new(flag: Quiescence) -> GroupQuiet {
        GroupQuiet {
            flag,
            wakes: Mutex::new(0),
            idle: Mutex::new(None),
            announced: AtomicBool::new(false),
            farewelled: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
        }
    }

    /// Wakes the group and keeps offers to quiet it away until the guard drops. On every
    /// proposal, so it takes no lock unless the group is quiet: the count goes up first and
    /// `quiet_unless_woken_since` sets the flag first, each then reading the other's, so one of
    /// them always sees the other.
    pub(crate) fn busy(&self) -> Busy<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if self.flag.is_quiet() {
            self.wake();
        }
        Busy(self)
    }

    pub(crate) fn is_busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0
    }

    fn wakes(&self) -> std::sync::MutexGuard<'_, u64> {
        self.wakes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn is_quiet(&self) -> bool {
        self.flag.is_quiet()
    }

    /// Wakes the group (if quiet) and voids any offer to quiet it under way; the count of
    /// settled rounds starts again.
    pub(crate) fn wake(&self) {
        let mut wakes = self.wakes();
        *wakes += 1;
        self.flag.wake();
        *self.idle.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Wakes the group if it is quiet; returns whether it was.
    pub(crate) fn wake_if_quiet(&self) -> bool {
        if !self.flag.is_quiet() {
            return false;
        }
        self.wake();
        true
    }

    /// The wake count an offer to quiet is made at.
    pub(crate) fn offer(&self) -> u64 {
        *self.wakes()
    }

    /// Quiets the group unless it was woken since `offer` or a proposal is under way; returns
    /// whether it did.
    pub(crate) fn quiet_unless_woken_since(&self, offer: u64) -> bool {
        let wakes = self.wakes();
        if *wakes != offer || self.is_busy() {
            return false;
        }
        self.flag.quiet();
        if self.is_busy() {
            self.flag.wake();
            return false;
        }
        true
    }

    /// Quiets a follower that agreed with its leader's offer.
    pub(crate) fn quiet(&self) {
        let _wakes = self.wakes();
        self.flag.quiet();
    }

    /// Counts the rounds in a row that found the leader settled at `settled`; a round that
    /// found it elsewhere (or not settled) starts the count again.
    pub(crate) fn idle_rounds(&self, settled: Option<Settled>) -> u32 {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let rounds = match (settled, *idle) {
            (None, _) => 0,
            (Some(now), Some((before, rounds))) if now == before => rounds.saturating_add(1),
            (Some(_), _) => 1,
        };
        *idle = settled.map(|s| (s, rounds));
        rounds
    }

    /// True the first time only.
    pub(crate) fn announce(&self) -> bool {
        !self.announced.swap(true, Ordering::SeqCst)
    }

    /// True the first time only.
    pub(crate) fn farewell(&self) -> bool {
        !self.farewelled.swap(true, Ordering::SeqCst)
    }
}
