//! Switches for each of the ways this crate contains async-raft 0.6.1's bugs (the table
//! "Containing async-raft 0.6.1" in ARCHITECTURE.md). Production runs with every one on
//! ([`Containment::default`]); the tests turn one off at a time to show the behaviour it
//! prevents, so each containment has a test that fails without it.

/// Which containments are active. Every field defaults to `true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Containment {
    /// (a) Refuse an AppendEntries whose entries do not follow `prev_log_index` contiguously.
    pub append_shape: bool,
    /// (b, d) Check `prev_log_index`/`prev_log_term` against our own log (heartbeats included)
    /// and answer a mismatch ourselves, with a conflict hint that converges.
    pub prev_check: bool,
    /// (c) Strip leading entries we already hold, so a stale or duplicate AppendEntries never
    /// truncates entries we acknowledged.
    pub strip_matching: bool,
    /// (c) Clamp `leader_commit` to what the message verified, and apply our own log up to it.
    pub follower_commit_clamp: bool,
    /// (e) Refuse votes from candidates outside the group's configuration; decide
    /// up-to-dateness by Raft's lexicographic rule.
    pub vote_rules: bool,
    /// (f) Re-arm a normal election timeout on a restarted voter that hears no leader, instead
    /// of async-raft's 30 s wait.
    pub restart_rescue: bool,
    /// (g) Leader side: clamp the `leader_commit` sent to what responses in this term prove
    /// committed by Raft's rule.
    pub leader_commit_clamp: bool,
    /// (h) Send an AppendEntries larger than the byte bound as several bounded messages.
    pub append_byte_bound: bool,
    /// (h) Give each AppendEntries a timeout of its own: a call async-raft abandons at its
    /// heartbeat interval keeps going, and async-raft's identical retry joins it.
    pub append_own_timeout: bool,
    /// (i) Never hand async-raft an error before the failure delay has passed.
    pub failure_delay: bool,
    /// Answer a failed AppendEntries that carried entries with "continue after your previous
    /// entry", so the stream to an unreachable follower reads from the log instead of keeping
    /// every new entry in memory.
    pub bounded_buffers: bool,
    /// Resend, in place of a heartbeat, the entries a follower's stream dropped: async-raft's
    /// stream forgets the entries it buffered when it turns "lagging", and sends them again
    /// only when a newer entry arrives, so the tail of a burst could wait forever.
    pub resend_tail: bool,
    /// (n) Acknowledge a snapshot whose last entry we already hold without installing it:
    /// async-raft would set its view of our log back to the snapshot's index (storage keeps the
    /// entries after it), and the next time it leads write over them.
    pub redundant_snapshot: bool,
    /// (o) Never let async-raft restart a node as leader of a term it did not win: it makes a
    /// node whose newest configuration's first set has one member, and that is in either set,
    /// leader of its stored term without an election (`restart_role`).
    pub restart_leadership: bool,
    /// (p) Leader side: a follower's conflict hint below the leader's log floor sends the
    /// stream to a snapshot, instead of letting async-raft pair that index with the term of the
    /// snapshot pointer (`GroupNetwork`).
    pub conflict_below_floor: bool,
    /// (q) Refuse to step down a leader that is its group's only voter: async-raft's lone
    /// candidate asks nobody for a vote and counts votes only as replies arrive, so it never
    /// wins again.
    pub keep_lone_leader: bool,
    /// (r) A node that refuses a member candidate whose log is behind moves some terms past
    /// it instead of adopting its term: async-raft resets the election timer on every higher
    /// term it adopts, so a stale candidate with the shorter timeout would keep the node that
    /// could win from ever standing.
    pub outpace_stale_candidates: bool,
    /// (s) Leader side: a learner answering in a higher term (a former voter whose log, behind,
    /// still makes it one: it stands every election timeout and votes refuse it) makes the
    /// leader step down some terms past it instead of into its term: async-raft steps down into
    /// the learner's term, and the learner, standing in term after term, is past every leader
    /// the group elects in the meantime, which it then deposes again. With it, a candidate
    /// outside the configuration is refused without being told a higher term of ours (it
    /// would climb to it and stand above it again).
    pub outpace_stale_learners: bool,
    /// (t) Admit a node's candidacies a few at a time (`network::elections`): async-raft
    /// stands again at every election timeout, so when thousands of groups elect at once and
    /// votes take longer than that, every candidacy is abandoned before it wins, for ever.
    pub pace_elections: bool,
    /// (u) Refuse a snapshot chunk that does not continue a stream this incarnation of the
    /// node saw begin at offset 0 (`RpcError::SnapshotOutOfOrder`): async-raft's follower,
    /// with no stream in progress, takes a chunk at any offset as a whole new snapshot, and
    /// installing the truncated result is a fatal storage error that stops the replica.
    pub snapshot_chunk_order: bool,
    /// (u) Leader side: a follower's refusal of a chunk makes the stream start again from
    /// offset 0: async-raft resends a failed chunk at the same offset for ever.
    pub snapshot_stream_restart: bool,
}

impl Containment {
    /// Every containment on: what production runs.
    pub const ALL: Containment = Containment {
        append_shape: true,
        prev_check: true,
        strip_matching: true,
        follower_commit_clamp: true,
        vote_rules: true,
        restart_rescue: true,
        leader_commit_clamp: true,
        append_byte_bound: true,
        append_own_timeout: true,
        failure_delay: true,
        bounded_buffers: true,
        resend_tail: true,
        redundant_snapshot: true,
        restart_leadership: true,
        conflict_below_floor: true,
        keep_lone_leader: true,
        outpace_stale_candidates: true,
        outpace_stale_learners: true,
        pace_elections: true,
        snapshot_chunk_order: true,
        snapshot_stream_restart: true,
    };
}

impl Default for Containment {
    fn default() -> Self {
        Containment::ALL
    }
}
