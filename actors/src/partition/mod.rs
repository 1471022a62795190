//! [`PartitionReplica`]: the actor that owns one partition's Raft group on this node.

pub mod core;
mod idempotence;
mod ready_queue;
mod replica;

pub(crate) use replica::{compact_applied_log, propose_error as propose_error_pub};
pub use replica::{
    AddressBook, ConfirmLeadership, PartitionReplica, ProposeKv, ReplicaSettings, StopReplica,
    MAX_FETCH_BYTES, MAX_FETCH_WAIT_MS, MAX_PARKED_FETCHES,
};
