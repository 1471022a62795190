//! Paces a node's elections: its candidacies send their vote requests a few groups at a time.
//!
//! When thousands of groups lose their leaders at once (a node stalled past the election
//! timeout, a restart, a starved machine), each starts an election, and every vote costs a
//! write and an fsync on both sides. Once answers take longer than the vote timeout, every
//! candidate times out and stands again in a newer term, all the work done for the old one is
//! wasted, and no group ever wins: seen with 2,850 replicas per node on a loaded 2-core
//! machine, where no group had a leader for minutes and the metadata group none either.
//! Admitting a bounded number of candidacies keeps each one short enough to win; the winners
//! stop campaigning, and the rest follow.
//!
//! A candidacy is a group's vote requests of one term. It waits in arrival order; a newer term
//! of a group already waiting takes its place in the queue (the older term's requests give up
//! at once: async-raft has moved past them), so a group never loses its turn by standing
//! again. Its slot is freed by the first answer to any of its requests (in a group of three that
//! answer decides the election, and a request to a dead peer must not hold the slot for the
//! whole vote timeout), or once every one of its requests failed. A failure alone does not
//! free it: a dead peer fails requests at once, and freeing on that would let every candidacy
//! through.

use gregor_storage::GroupId;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// Candidacies of one node sending vote requests at once.
pub const CANDIDACIES_AT_ONCE: usize = 32;

/// Why a vote request was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAdmitted {
    /// The group stood again in a newer term while this request waited.
    Superseded,
}

/// Admits candidacies (see the module documentation). One per node.
pub struct ElectionGate {
    state: Mutex<GateState>,
    limit: usize,
}

struct GateState {
    running: usize,
    /// Groups waiting, in arrival order.
    queue: VecDeque<GroupId>,
    /// Each waiting group's newest term and the requests of that term waiting for it.
    waiting: BTreeMap<GroupId, Waiting>,
    /// Candidacies running, by group: requests of the same term join theirs.
    admitted: BTreeMap<GroupId, (u64, Arc<Slot>)>,
}

struct Waiting {
    term: u64,
    requests: Vec<oneshot::Sender<Result<Ticket, NotAdmitted>>>,
}

/// A running candidacy's place: freed once, by the first answer or the last failure.
struct Slot {
    freed: AtomicBool,
    /// Requests holding a ticket to it.
    outstanding: AtomicUsize,
}

/// Held by a vote request while it runs: [`Ticket::answered`] frees the candidacy's slot; a
/// ticket dropped without an answer frees it only if it was the candidacy's last.
pub struct Ticket {
    gate: Arc<ElectionGate>,
    group: GroupId,
    slot: Arc<Slot>,
    answered: bool,
    /// Never handed to its request (see [`ElectionGate::admit_waiting`]): its drop does nothing.
    given_back: bool,
}

impl ElectionGate {
    pub fn new(limit: usize) -> Arc<ElectionGate> {
        assert!(limit > 0, "an election gate admits at least one candidacy");
        Arc::new(ElectionGate {
            state: Mutex::new(GateState {
                running: 0,
                queue: VecDeque::new(),
                waiting: BTreeMap::new(),
                admitted: BTreeMap::new(),
            }),
            limit,
        })
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        // Every change keeps the state consistent between statements.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for `group`'s candidacy of `term` to be admitted.
    ///
    /// # Errors
    /// `Superseded` if the group stood in a newer term meanwhile.
    pub async fn admit(self: &Arc<Self>, group: GroupId, term: u64) -> Result<Ticket, NotAdmitted> {
        let (tx, rx) = oneshot::channel();
        let superseded = {
            let mut state = self.lock();
            if let Some((running_term, slot)) = state.admitted.get(&group) {
                if *running_term == term && !slot.freed.load(Ordering::SeqCst) {
                    return Ok(self.ticket(group, slot.clone()));
                }
                if *running_term > term {
                    return Err(NotAdmitted::Superseded);
                }
            }
            let superseded = match state.waiting.get_mut(&group) {
                Some(waiting) if waiting.term > term => return Err(NotAdmitted::Superseded),
                Some(waiting) if waiting.term == term => {
                    waiting.requests.push(tx);
                    Vec::new()
                }
                Some(waiting) => {
                    waiting.term = term;
                    std::mem::replace(&mut waiting.requests, vec![tx])
                }
                None => {
                    state.queue.push_back(group);
                    state.waiting.insert(
                        group,
                        Waiting {
                            term,
                            requests: vec![tx],
                        },
                    );
                    Vec::new()
                }
            };
            self.admit_waiting(&mut state);
            superseded
        };
        for request in superseded {
            let _ = request.send(Err(NotAdmitted::Superseded));
        }
        // The gate outlives every waiter (each holds it), so the sender is never dropped unsent.
        rx.await.unwrap_or(Err(NotAdmitted::Superseded))
    }

    fn ticket(self: &Arc<Self>, group: GroupId, slot: Arc<Slot>) -> Ticket {
        slot.outstanding.fetch_add(1, Ordering::SeqCst);
        Ticket {
            gate: self.clone(),
            group,
            slot,
            answered: false,
            given_back: false,
        }
    }

    /// Admits waiting candidacies while slots are free.
    fn admit_waiting(self: &Arc<Self>, state: &mut GateState) {
        while state.running < self.limit {
            let Some(group) = state.queue.pop_front() else {
                return;
            };
            let Some(waiting) = state.waiting.remove(&group) else {
                continue;
            };
            let slot = Arc::new(Slot {
                freed: AtomicBool::new(false),
                outstanding: AtomicUsize::new(0),
            });
            state.running += 1;
            state.admitted.insert(group, (waiting.term, slot.clone()));
            for request in waiting.requests {
                // A request whose group shut down while it waited is gone: its ticket comes
                // back here, and dropping it would free the slot under the lock we hold.
                if let Err(Ok(unclaimed)) = request.send(Ok(self.ticket(group, slot.clone()))) {
                    unclaimed.give_back();
                }
            }
            if slot.outstanding.load(Ordering::SeqCst) == 0 {
                Self::free_locked(state, group, &slot);
            }
        }
    }

    fn free(self: &Arc<Self>, group: GroupId, slot: &Arc<Slot>) {
        let mut state = self.lock();
        Self::free_locked(&mut state, group, slot);
        self.admit_waiting(&mut state);
    }

    /// Frees `slot` once, whoever gets here first: its first answer, its last failure, or an
    /// admission that found none of its requests waiting any more.
    fn free_locked(state: &mut GateState, group: GroupId, slot: &Arc<Slot>) {
        if slot.freed.swap(true, Ordering::SeqCst) {
            return;
        }
        assert!(state.running > 0, "a slot freed that was never taken");
        state.running -= 1;
        if state
            .admitted
            .get(&group)
            .is_some_and(|(_, running)| Arc::ptr_eq(running, slot))
        {
            state.admitted.remove(&group);
        }
    }

    /// Candidacies sending vote requests now, and waiting to.
    #[cfg(test)]
    pub fn load(&self) -> (usize, usize) {
        let state = self.lock();
        (state.running, state.waiting.len())
    }
}

impl Ticket {
    /// The request got its answer: the candidacy's slot goes to the next in line.
    pub fn answered(mut self) {
        self.answered = true;
    }

    /// Withdraws a ticket its request never received, without freeing the slot: the caller
    /// holds the gate's lock and frees it if no other request holds a ticket.
    fn give_back(mut self) {
        self.slot.outstanding.fetch_sub(1, Ordering::SeqCst);
        self.given_back = true;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.given_back {
            return;
        }
        let last = self.slot.outstanding.fetch_sub(1, Ordering::SeqCst) == 1;
        if self.answered || last {
            self.gate.free(self.group, &self.slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor_storage::{PartitionId, TopicId};

    fn group(n: u32) -> GroupId {
        GroupId::for_partition(TopicId(1), PartitionId(n))
    }

    fn now<T>(future: impl std::future::Future<Output = T>) -> Option<T> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match std::pin::pin!(future).poll(&mut cx) {
            std::task::Poll::Ready(value) => Some(value),
            std::task::Poll::Pending => None,
        }
    }

    fn spawn_admit(
        gate: &Arc<ElectionGate>,
        group: GroupId,
        term: u64,
    ) -> tokio::task::JoinHandle<Result<Ticket, NotAdmitted>> {
        let gate = gate.clone();
        tokio::spawn(async move { gate.admit(group, term).await })
    }

    #[tokio::test]
    async fn candidacies_past_the_limit_wait_and_go_in_arrival_order() {
        let gate = ElectionGate::new(2);
        let a = gate.admit(group(1), 5).await.unwrap();
        let _b = gate.admit(group(2), 5).await.unwrap();
        let third = spawn_admit(&gate, group(3), 5);
        tokio::task::yield_now().await;
        let fourth = spawn_admit(&gate, group(4), 5);
        tokio::task::yield_now().await;
        assert_eq!(gate.load(), (2, 2));
        a.answered();
        let third = third.await.unwrap().unwrap();
        assert_eq!(third.group, group(3));
        assert_eq!(gate.load(), (2, 1));
        assert!(!fourth.is_finished());
        third.answered();
        assert_eq!(fourth.await.unwrap().unwrap().group, group(4));
    }

    #[tokio::test]
    async fn requests_of_one_term_share_a_slot_and_the_first_to_finish_frees_it() {
        let gate = ElectionGate::new(1);
        let to_one = gate.admit(group(1), 7).await.unwrap();
        let to_two = gate.admit(group(1), 7).await.unwrap();
        assert_eq!(gate.load(), (1, 0));
        to_one.answered();
        assert_eq!(gate.load(), (0, 0));
        // The other request runs on to its answer, holding nothing.
        let next = now(gate.admit(group(2), 1))
            .expect("the slot is free")
            .unwrap();
        to_two.answered();
        assert_eq!(gate.load(), (1, 0));
        next.answered();
        assert_eq!(gate.load(), (0, 0));
    }

    #[tokio::test]
    async fn a_failed_request_frees_the_slot_only_if_it_was_the_candidacy_s_last() {
        let gate = ElectionGate::new(1);
        let to_dead_peer = gate.admit(group(1), 2).await.unwrap();
        let to_live_peer = gate.admit(group(1), 2).await.unwrap();
        drop(to_dead_peer);
        assert_eq!(gate.load(), (1, 0), "one request still runs");
        drop(to_live_peer);
        assert_eq!(gate.load(), (0, 0));
    }

    #[tokio::test]
    async fn a_newer_term_keeps_the_group_s_place_and_its_older_requests_give_up() {
        let gate = ElectionGate::new(1);
        let running = gate.admit(group(9), 1).await.unwrap();
        let first = spawn_admit(&gate, group(1), 3);
        tokio::task::yield_now().await;
        let second = spawn_admit(&gate, group(2), 3);
        tokio::task::yield_now().await;
        let newer = spawn_admit(&gate, group(1), 4);
        assert_eq!(first.await.unwrap().err(), Some(NotAdmitted::Superseded));
        assert_eq!(
            gate.admit(group(1), 2).await.err(),
            Some(NotAdmitted::Superseded)
        );
        running.answered();
        // Group 1 stood again but kept its place ahead of group 2.
        let newer = newer.await.unwrap().unwrap();
        assert_eq!(newer.group, group(1));
        assert!(!second.is_finished());
        newer.answered();
        assert_eq!(second.await.unwrap().unwrap().group, group(2));
    }

    /// A group shut down while its candidacy waits drops its `admit` future: when its turn
    /// comes the ticket finds nobody to take it, and the slot must go to the next in line
    /// (from inside the admission, which holds the gate's lock) rather than stay taken.
    #[test]
    fn a_candidacy_dropped_while_it_waits_gives_its_turn_to_the_next() {
        let (done, finished) = std::sync::mpsc::channel();
        let run = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(async {
                let gate = ElectionGate::new(1);
                let running = gate.admit(group(1), 1).await.unwrap();
                let abandoned = spawn_admit(&gate, group(2), 1);
                tokio::task::yield_now().await;
                let next = spawn_admit(&gate, group(3), 1);
                tokio::task::yield_now().await;
                assert_eq!(gate.load(), (1, 2));
                abandoned.abort();
                assert!(abandoned.await.is_err_and(|e| e.is_cancelled()));
                running.answered();
                let next = next.await.unwrap().unwrap();
                assert_eq!(next.group, group(3));
                assert_eq!(gate.load(), (1, 0));
                next.answered();
                assert_eq!(gate.load(), (0, 0));
            });
            let _ = done.send(());
        });
        match finished.recv_timeout(std::time::Duration::from_secs(10)) {
            Ok(()) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::panic::resume_unwind(run.join().expect_err("the run ended without a word"))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("the gate never admitted the next candidacy (a deadlock, or a slot kept)")
            }
        }
    }
}
