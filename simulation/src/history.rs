//! What the workload did and saw, as the checkers read it: every send with its outcome, every
//! record a consumer was handed, every commit and committed-offset read, every log start and
//! leader observed, and (at the end) every replica's stored log. Times are virtual
//! milliseconds since the run began.
//!
//! A topic is named with its incarnation ([`Tp::incarnation`]): a topic deleted and created
//! again is another log. Every record value the workload sends is unique in the run, so a value
//! read anywhere names the one send it came from.

use gregor_storage::NodeId;
use std::collections::BTreeMap;

/// One partition of one incarnation of a topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tp {
    pub topic: String,
    pub incarnation: u32,
    pub partition: u32,
}

impl std::fmt::Display for Tp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}/{}", self.topic, self.incarnation, self.partition)
    }
}

/// The acknowledgement a send asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AckLevel {
    None,
    Leader,
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// No answer yet (the run ended first): the record may or may not be stored.
    Pending,
    /// Acknowledged at this offset.
    Acked(u64),
    /// acks=0: handed to the connection, nothing more is known.
    Unacknowledged,
    /// Failed. `definite`: the record cannot have been stored (the broker refused it before
    /// appending, or the request never left the client).
    Failed { definite: bool, error: String },
}

#[derive(Debug, Clone)]
pub struct Send {
    pub producer: u32,
    /// The producer deduplicates retries (or the run claims it does, in a self-test).
    pub idempotent: bool,
    /// The producer retries a send that failed: without idempotence a retried send may land
    /// after a later one, which Kafka does not promise against (nonmonotonic-send skips it).
    pub retries: bool,
    pub acks: AckLevel,
    pub tp: Tp,
    /// The producer's n-th send (all partitions).
    pub seq: u64,
    pub value: String,
    pub timestamp_ms: i64,
    pub invoked_ms: u64,
    pub completed_ms: Option<u64>,
    pub outcome: SendOutcome,
}

/// Records one consumer was handed for one partition by one poll, in offset order.
#[derive(Debug, Clone)]
pub struct Poll {
    pub consumer: u32,
    /// A consumer's positions are checked within one session (between (re)assignments).
    pub session: u64,
    pub tp: Tp,
    pub at_ms: u64,
    pub records: Vec<(u64, String)>,
}

/// A commit of one partition's position by a consumer group.
#[derive(Debug, Clone)]
pub struct Commit {
    pub group: String,
    pub consumer: u32,
    pub session: u64,
    pub tp: Tp,
    pub offset: u64,
    pub invoked_ms: u64,
    pub completed_ms: u64,
    pub ok: bool,
}

/// A read of a group's committed offset for one partition (`None`: nothing committed).
#[derive(Debug, Clone)]
pub struct CommittedRead {
    pub group: String,
    pub tp: Tp,
    pub offset: Option<u64>,
    pub invoked_ms: u64,
    pub completed_ms: u64,
}

/// A partition's log start offset as some reply reported it.
#[derive(Debug, Clone)]
pub struct LogStartSeen {
    pub tp: Tp,
    pub offset: u64,
    pub invoked_ms: u64,
    pub completed_ms: u64,
}

/// A node reporting itself leader of a Raft group in a term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderSeen {
    pub group: u64,
    pub term: u64,
    pub node: NodeId,
    pub at_ms: u64,
}

/// A topic's lifetime and retention, as the workload created it.
#[derive(Debug, Clone)]
pub struct TopicLife {
    pub topic: String,
    pub incarnation: u32,
    pub partitions: u32,
    pub retention_ms: Option<i64>,
    pub created_ms: u64,
    /// Deleted (or its deletion attempted) at this time: its records may vanish from then on.
    pub deleted_ms: Option<u64>,
    /// The workload reads and checks it to the end (it is never deleted).
    pub stable: bool,
}

/// One replica's committed log at the end of the run, read from its node's store.
#[derive(Debug, Clone, Default)]
pub struct ReplicaDump {
    pub node: NodeId,
    pub group: u64,
    pub log_start: u64,
    pub next_offset: u64,
    pub last_applied: u64,
    /// Raft entries still stored, up to `last_applied`: (index, term, digest of the payload).
    pub entries: Vec<(u64, u64, u64)>,
    /// Records by offset, in `[log_start, next_offset)`.
    pub records: BTreeMap<u64, String>,
}

/// A final read of a partition: everything from its log start to its high watermark.
#[derive(Debug, Clone)]
pub struct FinalRead {
    pub tp: Tp,
    pub log_start: u64,
    pub high_watermark: u64,
    pub records: Vec<(u64, String)>,
    pub at_ms: u64,
}

#[derive(Debug, Clone, Default)]
pub struct History {
    pub sends: Vec<Send>,
    pub polls: Vec<Poll>,
    pub commits: Vec<Commit>,
    pub committed_reads: Vec<CommittedRead>,
    pub log_starts: Vec<LogStartSeen>,
    pub leaders: Vec<LeaderSeen>,
    pub topics: Vec<TopicLife>,
    pub final_reads: Vec<FinalRead>,
    pub replicas: Vec<ReplicaDump>,
    /// The largest clock skew any node had at any time (ms, absolute).
    pub max_skew_ms: i64,
    /// Wall-clock time (ms since the epoch) at virtual time zero.
    pub epoch_ms: i64,
    /// How often nodes check retention; a removal may lag its eligibility by this much.
    pub retention_check_ms: u64,
}

impl History {
    /// The topic life of `tp`'s incarnation.
    pub fn topic(&self, tp: &Tp) -> Option<&TopicLife> {
        self.topics
            .iter()
            .find(|t| t.topic == tp.topic && t.incarnation == tp.incarnation)
    }

    /// Sends by value.
    pub fn sends_by_value(&self) -> BTreeMap<&str, &Send> {
        self.sends.iter().map(|s| (s.value.as_str(), s)).collect()
    }
}
