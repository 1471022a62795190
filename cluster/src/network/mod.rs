//! The network a group's Raft talks through: async-raft's `RaftNetwork` for one group on one
//! node, over the node's [`Transport`]. It is where the leader side of async-raft is contained:
//!
//! - **commit clamp**: every outgoing `leader_commit` is clamped to what responses in this term
//!   prove committed by Raft's rule ([`crate::commit`]);
//! - **byte bound**: an AppendEntries above `max_append_bytes` goes as several messages, each
//!   continuing from the last entry the follower just took, within the one call async-raft made
//!   (answering async-raft with a conflict hint instead would send its stream to the "lagging"
//!   state, which drops the uncommitted entries it buffered and sends them again only when a
//!   newer entry arrives: the tail of a burst would stall);
//! - **a timeout of its own**: async-raft cuts every AppendEntries and snapshot chunk off at its
//!   heartbeat interval and then sends the same request again; the call runs on under
//!   `append_timeout` (`snapshot_timeout`) and the retry joins it ([`calls`]), so a follower
//!   slower than one heartbeat interval still makes progress. Vote requests, which async-raft
//!   never times out, get `vote_timeout`;
//! - **no immediate errors**: a failed call returns no sooner than `failure_delay` after it
//!   started, because async-raft retries at once and would spin;
//! - **the dropped tail**: async-raft's stream forgets the entries it buffered when it turns
//!   "lagging" and sends them again only once a newer entry arrives; a heartbeat that finds
//!   the follower behind what this leader appended carries those entries instead;
//! - **bounded buffers**: while a follower cannot be reached, async-raft's stream to it keeps
//!   every new entry in memory (its line-rate buffer only drains on success). A failed
//!   AppendEntries that carried entries is answered "no, continue after your previous entry"
//!   instead of with an error: the stream turns "lagging", which drops its buffers and reads
//!   from the log (and sends a snapshot once the log no longer holds what the follower needs).

mod bound;
mod calls;
pub(crate) mod elections;

use crate::codec::{decode_membership, from_stored};
use crate::command::Command;
use crate::commit::{CommitTracker, Voters};
use crate::containment::Containment;
use crate::dispatch::STALE_TERM_LEAD;
use crate::rpc::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    RpcError, VoteRequest, VoteResponse,
};
use crate::snapshot_bytes::StreamRestarts;
use crate::transport::Transport;
use async_raft::raft::{ConflictOpt, Entry, EntryPayload};
use async_raft::RaftNetwork;
use calls::Calls;
use elections::{ElectionGate, NotAdmitted};
use gregor_storage::{GroupId, NodeId, Store};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Limits of a group's outbound calls.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NetworkSettings {
    pub(crate) max_append_bytes: usize,
    pub(crate) append_timeout: Duration,
    pub(crate) vote_timeout: Duration,
    pub(crate) snapshot_timeout: Duration,
    pub(crate) failure_delay: Duration,
    pub(crate) max_payload_entries: u64,
    pub(crate) containment: Containment,
}

/// What a finished AppendEntries call answered, in a form a waiting retry can share.
#[derive(Debug, Clone)]
struct Reply {
    term: u64,
    success: bool,
    conflict: Option<(u64, u64)>,
}

impl From<AppendEntriesResponse> for Reply {
    fn from(response: AppendEntriesResponse) -> Reply {
        Reply {
            term: response.term,
            success: response.success,
            conflict: response.conflict_opt.map(|c| (c.index, c.term)),
        }
    }
}

impl From<Reply> for AppendEntriesResponse {
    fn from(reply: Reply) -> AppendEntriesResponse {
        AppendEntriesResponse {
            term: reply.term,
            success: reply.success,
            conflict_opt: reply
                .conflict
                .map(|(index, term)| ConflictOpt { term, index }),
        }
    }
}

/// Identifies a request async-raft may send again: a retry carries the same previous entry and
/// the same entries. Heartbeats also carry the same commit index, so a heartbeat with news is
/// never answered by an older one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AppendKey {
    term: u64,
    prev: (u64, u64),
    entries: Option<(u64, u64)>,
    heartbeat_commit: Option<u64>,
}

impl AppendKey {
    fn of(rpc: &AppendEntriesRequest<Command>) -> AppendKey {
        let entries = match (rpc.entries.first(), rpc.entries.last()) {
            (Some(first), Some(last)) => Some((first.index, last.index)),
            _ => None,
        };
        AppendKey {
            term: rpc.term,
            prev: (rpc.prev_log_index, rpc.prev_log_term),
            entries,
            heartbeat_commit: entries.is_none().then_some(rpc.leader_commit),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SnapshotKey {
    term: u64,
    last_included: (u64, u64),
    offset: u64,
    done: bool,
}

/// What the group's storage tells its network about the log (see [`Shared`]).
pub(crate) struct LogMarks {
    pub(crate) leader_tail: Arc<AtomicU64>,
    pub(crate) hollow_below: Arc<AtomicU64>,
    pub(crate) snapshot_restarts: StreamRestarts,
}

/// Whether a group's Raft core has ended, and with it every reason to keep its replication
/// streams going (see [`GroupNetwork::dismiss_streams`]).
#[derive(Clone, Default)]
pub(crate) struct StreamDismissal(Arc<AtomicBool>);

impl StreamDismissal {
    /// Only once the core has ended.
    pub(crate) fn dismiss_streams(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn dismissed(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

pub(crate) struct GroupNetwork {
    shared: Arc<Shared>,
    appends: Calls<AppendKey, Result<Reply, RpcError>>,
    snapshots: Calls<SnapshotKey, Result<u64, RpcError>>,
}

struct Shared {
    group: GroupId,
    node: NodeId,
    transport: Arc<dyn Transport>,
    store: Store,
    /// The highest index this node appended as leader (durable).
    leader_tail: Arc<AtomicU64>,
    /// Blank entries below this index may be record entries a long scan answered hollow.
    hollow_below: Arc<AtomicU64>,
    /// Moved when a follower refuses a snapshot chunk (see `install_snapshot`).
    snapshot_restarts: StreamRestarts,
    settings: NetworkSettings,
    tracker: Mutex<Option<CommitTracker>>,
    elections: Arc<ElectionGate>,
    /// Set once the group's Raft core has ended (see [`GroupNetwork::dismiss_streams`]).
    core_ended: StreamDismissal,
}

impl GroupNetwork {
    pub(crate) fn new(
        group: GroupId,
        node: NodeId,
        transport: Arc<dyn Transport>,
        store: Store,
        marks: LogMarks,
        settings: NetworkSettings,
        elections: Arc<ElectionGate>,
    ) -> GroupNetwork {
        let LogMarks {
            leader_tail,
            hollow_below,
            snapshot_restarts,
        } = marks;
        GroupNetwork {
            shared: Arc::new(Shared {
                group,
                node,
                transport,
                store,
                leader_tail,
                hollow_below,
                snapshot_restarts,
                settings,
                tracker: Mutex::new(None),
                elections,
                core_ended: StreamDismissal::default(),
            }),
            appends: Calls::new(),
            snapshots: Calls::new(),
        }
    }

    /// Ends the replication streams the group's Raft core left behind. Call it only once the
    /// core has ended: from then on every AppendEntries and InstallSnapshot is answered at once
    /// with a term above the stream's, which is the one way to stop a stream async-raft left
    /// lagging or sending a snapshot. Such a stream ignores its closed channel (the core stopped
    /// on an error, without telling it to terminate) and retries a failed send for ever, and
    /// the network (the transport of a stopped node fails every call) and the storage it holds
    /// kept the node's store open after the node stopped: a restart of the node in the same
    /// process could not open it. The stream's step down goes to a core that no longer exists.
    pub(crate) fn dismiss_streams(&self) {
        self.shared.core_ended.dismiss_streams();
    }

    /// What dismisses the streams later without holding the network (nor its store).
    pub(crate) fn stream_dismissal(&self) -> StreamDismissal {
        self.shared.core_ended.clone()
    }

    /// The answer that stops a stream of leader term `term` once the core has ended.
    fn dismissal(&self, term: u64) -> Option<u64> {
        self.shared
            .core_ended
            .dismissed()
            .then(|| term.saturating_add(1))
    }

    /// Where this leader's log is settled in `term` (see [`CommitTracker::settled`]): its last
    /// entry, when every voter `counted` holds it and was told it is committed. `None` also when
    /// the node appended entries its streams have not sent yet.
    pub(crate) fn settled(&self, term: u64, counted: impl Fn(u64) -> bool) -> Option<u64> {
        let tracker = self.shared.lock_tracker();
        let settled = tracker
            .as_ref()
            .filter(|t| t.term() == term)
            .and_then(|t| t.settled(counted))?;
        (settled == self.shared.leader_tail.load(Ordering::SeqCst)).then_some(settled)
    }

    /// Whether, as far as responses of leader term `term` prove, `follower` holds everything
    /// this leader has sent and all of it is committed: a candidacy of it would be granted by
    /// this leader, and, with no proposal in flight, by every voter.
    pub(crate) fn holds_everything_sent(&self, term: u64, follower: NodeId) -> bool {
        let tracker = self.shared.lock_tracker();
        tracker.as_ref().is_some_and(|t| {
            let last = t.leader_last();
            t.term() == term && last > 0 && t.matched(follower.0) >= last && t.commit() >= last
        })
    }

    /// Asks `follower` to stand for election now (a leadership transfer): whether it stood.
    pub(crate) async fn ask_to_campaign(
        &self,
        follower: NodeId,
        term: u64,
    ) -> Result<bool, RpcError> {
        let limit = self.shared.settings.vote_timeout;
        let asked = self
            .shared
            .transport
            .campaign(follower, self.shared.group, term);
        tokio::time::timeout(limit, asked)
            .await
            .unwrap_or(Err(RpcError::Timeout {
                timeout_ms: limit.as_millis() as u64,
            }))
    }

    /// What responses of leader term `term` proved `follower` holds, and what they prove
    /// committed; `None` when no message of that term was sent.
    pub(crate) fn progress(&self, term: u64, follower: NodeId) -> Option<(u64, u64)> {
        let tracker = self.shared.lock_tracker();
        tracker
            .as_ref()
            .filter(|t| t.term() == term)
            .map(|t| (t.matched(follower.0), t.commit()))
    }
}

impl Shared {
    fn lock_tracker(&self) -> std::sync::MutexGuard<'_, Option<CommitTracker>> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the tracker of leader term `term`, starting one for a newer term; `None` for
    /// a message of an older term (a stream that has not stopped yet).
    fn with_tracker<R>(&self, term: u64, f: impl FnOnce(&mut CommitTracker) -> R) -> Option<R> {
        let mut slot = self.lock_tracker();
        match slot.as_mut() {
            Some(tracker) if tracker.term() == term => return Some(f(tracker)),
            Some(tracker) if tracker.term() > term => return None,
            _ => {}
        }
        let tracker = slot.insert(self.new_tracker(term));
        Some(f(tracker))
    }

    /// A term's account starts from what this node applied (committed before the term) and the
    /// newest configuration in its log.
    fn new_tracker(&self, term: u64) -> CommitTracker {
        let base = match self.store.partition_state(self.group) {
            Ok(state) => state.last_applied,
            Err(error) => {
                tracing::error!(group = %self.group, %error, "reading the applied index failed");
                0
            }
        };
        let config = match self.store.last_membership(self.group) {
            Ok(Some((index, bytes))) => match decode_membership(&bytes) {
                Ok(config) => (index, Voters::of(&config)),
                Err(error) => {
                    tracing::error!(group = %self.group, %error, "a stored configuration does not decode");
                    (0, Voters::none())
                }
            },
            Ok(None) => (0, Voters::none()),
            Err(error) => {
                tracing::error!(group = %self.group, %error, "reading the configuration failed");
                (0, Voters::none())
            }
        };
        CommitTracker::new(self.node.0, term, base, config)
    }

    async fn fail_after(&self, started: Instant) {
        if self.settings.containment.failure_delay {
            tokio::time::sleep_until(started + self.settings.failure_delay).await;
        }
    }

    /// Sends `rpc` to `target` as one or more bounded messages, each continuing from the last
    /// entry the follower took; stops at the first refusal.
    async fn send_append(
        self: Arc<Self>,
        target: u64,
        rpc: AppendEntriesRequest<Command>,
    ) -> Result<Reply, RpcError> {
        let AppendEntriesRequest {
            term,
            leader_id,
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } = rpc;
        let containment = self.settings.containment;
        let dropped_tail = match entries.is_empty() && containment.resend_tail {
            true => self.dropped_tail(prev_log_index),
            false => Vec::new(),
        };
        let resending = !dropped_tail.is_empty();
        let entries = if resending { dropped_tail } else { entries };
        let runs = if containment.append_byte_bound {
            bound::split(entries, self.settings.max_append_bytes)
        } else {
            vec![entries]
        };
        let mut prev = (prev_log_index, prev_log_term);
        let mut reply = None;
        for run in runs {
            let last = run.last().map_or(prev, |e| (e.index, e.term));
            let proven = self.with_tracker(term, |t| {
                t.observe_sent(&run);
                t.commit()
            });
            let commit = if containment.leader_commit_clamp {
                leader_commit.min(proven.unwrap_or(0))
            } else {
                leader_commit
            };
            let request = AppendEntriesRequest {
                term,
                leader_id,
                prev_log_index: prev.0,
                prev_log_term: prev.1,
                entries: run,
                leader_commit: commit,
            };
            let sent = self
                .transport
                .append_entries(NodeId(target), self.group, request);
            let response = if containment.append_own_timeout {
                let limit = self.settings.append_timeout;
                tokio::time::timeout(limit, sent)
                    .await
                    .unwrap_or(Err(RpcError::Timeout {
                        timeout_ms: limit.as_millis() as u64,
                    }))?
            } else {
                sent.await?
            };
            if !response.success {
                return Ok(response.into());
            }
            self.with_tracker(term, |t| {
                t.record_match(target, last.0);
                t.record_told(target, commit);
            });
            prev = last;
            reply = Some(Reply::from(response));
        }
        let reply = reply.expect("a request is sent as at least one message");
        if resending {
            // async-raft sent a heartbeat; moving its stream on to what the follower now holds
            // takes a conflict hint (its stream then continues from there).
            return Ok(Reply {
                term: reply.term,
                success: false,
                conflict: Some(prev),
            });
        }
        Ok(reply)
    }

    /// The term async-raft's leader of `term` sees in `target`'s answer: the answer's own,
    /// except from a learner (not a member of our newest configuration) that answered in a
    /// higher term, which is moved [`STALE_TERM_LEAD`] terms further.
    ///
    /// Such a learner is a former voter whose log, behind, still makes it one: it stands every
    /// election timeout, its vote requests are refused (it is not a member) without anyone
    /// taking its term, and it refuses our entries since its term is higher. async-raft steps
    /// down into that term; by the time the group has elected again the learner stands in a
    /// later term still, refuses the new leader, and deposes it in turn, for ever when its
    /// timeout is the shorter (five-node simulation seed 521: the metadata group re-elected
    /// node 3 every 1.5 s, four or five terms on each time). Stepping down further ahead lets the
    /// next leader's term pass the learner's, which then takes it and catches up. Any term above
    /// every existing one is safe to adopt.
    fn term_to_step_down_into(&self, term: u64, target: u64, answered: u64) -> u64 {
        if answered <= term
            || !self.settings.containment.outpace_stale_learners
            || self.is_member(target)
        {
            return answered;
        }
        tracing::info!(group = %self.group, learner = target, learner_term = answered, "a learner answered in a higher term: stepping down past it");
        answered + STALE_TERM_LEAD
    }

    /// Whether `node` is a member (either set) of the newest configuration in our log; true
    /// when that cannot be read, so only a learner known as such moves the term further.
    fn is_member(&self, node: u64) -> bool {
        match self.store.last_membership(self.group) {
            Ok(Some((_, bytes))) => {
                decode_membership(&bytes).map_or(true, |config| config.contains(&node))
            }
            Ok(None) => true,
            Err(error) => {
                tracing::warn!(group = %self.group, %error, "reading the configuration failed");
                true
            }
        }
    }

    /// async-raft's stream continues after a conflict from `conflict.index`, taking that
    /// entry's term from the first entry `get_log_entries` returns for it; for an index below
    /// our floor that is the snapshot pointer at the floor, whose term is not the entry's, and
    /// the stream would send an AppendEntries whose previous entry is an (index, term) pair our
    /// log never held (which a follower holding that index as its floor refuses). The entries
    /// there are gone, so the follower needs a snapshot: index 0 sends the stream to read the
    /// log from its start, find the pointer, and send one.
    fn continue_by_snapshot_below_floor(&self, conflict: &mut ConflictOpt) {
        let floor = match self.store.log_floor(self.group) {
            Ok(floor) => floor.index,
            Err(error) => {
                tracing::warn!(group = %self.group, %error, "reading the log floor failed");
                return;
            }
        };
        if conflict.index > 0 && conflict.index < floor {
            *conflict = ConflictOpt { term: 0, index: 0 };
        }
    }

    /// The entries after `prev` up to what this node appended as leader, when a heartbeat
    /// finds the follower behind it; none if they are not all in the log (a snapshot is due,
    /// which the stream sends itself).
    fn dropped_tail(&self, prev: u64) -> Vec<Entry<Command>> {
        let tail = self.leader_tail.load(Ordering::SeqCst);
        if tail <= prev {
            return Vec::new();
        }
        let stop = tail.min(prev.saturating_add(self.settings.max_payload_entries)) + 1;
        let slice = match self.store.read_log(self.group, prev + 1, stop) {
            Ok(slice) => slice,
            Err(error) => {
                tracing::warn!(group = %self.group, %error, "reading entries to resend failed");
                return Vec::new();
            }
        };
        let starts_after_prev = slice.entries.first().is_some_and(|e| e.index == prev + 1);
        if slice.compacted.is_some() || !starts_after_prev {
            return Vec::new();
        }
        slice
            .entries
            .into_iter()
            .map(from_stored)
            .collect::<anyhow::Result<Vec<_>>>()
            .unwrap_or_default()
    }

    /// `target` refused a chunk at `offset` as continuing no stream it saw begin (it
    /// restarted, say). async-raft would resend that chunk for ever; failing the copies it
    /// reads from makes it take a fresh one and send it from offset 0. Every stream of the
    /// group restarts (the copies do not know their follower), which costs a resend of the
    /// others' chunks, and only when a follower refused one.
    fn restart_snapshot_streams(&self, target: u64, offset: u64) {
        if !self.settings.containment.snapshot_stream_restart {
            return;
        }
        tracing::info!(group = %self.group, follower = target, offset, "a follower refused a snapshot chunk: the stream starts again from offset 0");
        self.snapshot_restarts.restart();
    }

    async fn send_snapshot(
        self: Arc<Self>,
        target: u64,
        rpc: InstallSnapshotRequest,
    ) -> Result<u64, RpcError> {
        let limit = self.settings.snapshot_timeout;
        let sent = self
            .transport
            .install_snapshot(NodeId(target), self.group, rpc);
        let response =
            tokio::time::timeout(limit, sent)
                .await
                .unwrap_or(Err(RpcError::Timeout {
                    timeout_ms: limit.as_millis() as u64,
                }))?;
        Ok(response.term)
    }
}

fn replaced() -> RpcError {
    RpcError::Timeout { timeout_ms: 0 }
}

#[async_trait::async_trait]
impl RaftNetwork<Command> for GroupNetwork {
    async fn append_entries(
        &self,
        target: u64,
        rpc: AppendEntriesRequest<Command>,
    ) -> anyhow::Result<AppendEntriesResponse> {
        if let Some(term) = self.dismissal(rpc.term) {
            return Ok(AppendEntriesResponse {
                term,
                success: false,
                conflict_opt: None,
            });
        }
        let started = Instant::now();
        let shared = self.shared.clone();
        let mut rpc = rpc;
        let hollow_below = shared.hollow_below.load(Ordering::SeqCst);
        if let Err(error) = hydrate(&shared.store, shared.group, hollow_below, &mut rpc.entries) {
            // Not at once: async-raft retries a failed send without yielding.
            shared.fail_after(started).await;
            return Err(error);
        }
        let (term, prev, carries_entries) = (
            rpc.term,
            (rpc.prev_log_index, rpc.prev_log_term),
            !rpc.entries.is_empty(),
        );
        // Heartbeats go in place: nothing is lost when async-raft cuts one off (the next one
        // follows within an interval), and a task per heartbeat is the idle cost of a node.
        let outcome = if shared.settings.containment.append_own_timeout && carries_entries {
            let key = AppendKey::of(&rpc);
            let task = shared.clone();
            self.appends
                .call(target, key, move || task.send_append(target, rpc))
                .await
                .unwrap_or_else(|| Err(replaced()))
        } else {
            shared.clone().send_append(target, rpc).await
        };
        let mut response = match outcome {
            Ok(reply) => reply.into(),
            Err(_) if carries_entries && shared.settings.containment.bounded_buffers => {
                shared.fail_after(started).await;
                AppendEntriesResponse {
                    term,
                    success: false,
                    conflict_opt: Some(ConflictOpt {
                        term: prev.1,
                        index: prev.0,
                    }),
                }
            }
            Err(error) => {
                shared.fail_after(started).await;
                return Err(error.into());
            }
        };
        if shared.settings.containment.conflict_below_floor {
            if let Some(conflict) = response.conflict_opt.as_mut() {
                shared.continue_by_snapshot_below_floor(conflict);
            }
        }
        response.term = shared.term_to_step_down_into(term, target, response.term);
        Ok(response)
    }

    async fn install_snapshot(
        &self,
        target: u64,
        rpc: InstallSnapshotRequest,
    ) -> anyhow::Result<InstallSnapshotResponse> {
        if let Some(term) = self.dismissal(rpc.term) {
            return Ok(InstallSnapshotResponse { term });
        }
        let started = Instant::now();
        let key = SnapshotKey {
            term: rpc.term,
            last_included: (rpc.last_included_index, rpc.last_included_term),
            offset: rpc.offset,
            done: rpc.done,
        };
        let task = self.shared.clone();
        let outcome = self
            .snapshots
            .call(target, key, move || task.send_snapshot(target, rpc))
            .await
            .unwrap_or_else(|| Err(replaced()));
        match outcome {
            Ok(answered) => Ok(InstallSnapshotResponse {
                term: self
                    .shared
                    .term_to_step_down_into(key.term, target, answered),
            }),
            Err(error) => {
                if let RpcError::SnapshotOutOfOrder { offset } = error {
                    self.shared.restart_snapshot_streams(target, offset);
                }
                self.shared.fail_after(started).await;
                Err(error.into())
            }
        }
    }

    async fn vote(&self, target: u64, rpc: VoteRequest) -> anyhow::Result<VoteResponse> {
        let turn = match self.shared.settings.containment.pace_elections {
            true => match self
                .shared
                .elections
                .admit(self.shared.group, rpc.term)
                .await
            {
                Ok(ticket) => Some(ticket),
                Err(NotAdmitted::Superseded) => anyhow::bail!(
                    "not sent: the candidacy of term {} stood again before its turn",
                    rpc.term
                ),
            },
            false => None,
        };
        let started = Instant::now();
        let limit = self.shared.settings.vote_timeout;
        let sent = self
            .shared
            .transport
            .vote(NodeId(target), self.shared.group, rpc);
        match tokio::time::timeout(limit, sent).await {
            Ok(Ok(response)) => {
                if let Some(turn) = turn {
                    turn.answered();
                }
                Ok(response)
            }
            Ok(Err(error)) => {
                drop(turn);
                self.shared.fail_after(started).await;
                Err(error.into())
            }
            Err(_) => Err(RpcError::Timeout {
                timeout_ms: limit.as_millis() as u64,
            }
            .into()),
        }
    }
}

/// Puts back the records of entries a long log scan answered without them
/// (`HOLLOW_SCAN_ENTRIES` in `raft_store`): every blank entry about to be sent below the
/// highest index such a scan reached is read again from our log, so a follower never stores a
/// blank in place of records. Such scans are rare (a leadership after a restart), and so are
/// blanks (one per leadership): this costs a point read now and then.
pub(crate) fn hydrate(
    store: &Store,
    group: GroupId,
    hollow_below: u64,
    entries: &mut [Entry<Command>],
) -> anyhow::Result<()> {
    for entry in entries
        .iter_mut()
        .filter(|e| e.index < hollow_below && matches!(e.payload, EntryPayload::Blank))
    {
        let stored = store
            .read_log(group, entry.index, entry.index + 1)?
            .entries
            .into_iter()
            .next()
            .filter(|s| s.index == entry.index && s.term == entry.term)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "entry {} of term {} of group {group} is no longer in the log",
                    entry.index,
                    entry.term
                )
            })?;
        *entry = from_stored(stored)?;
    }
    Ok(())
}
