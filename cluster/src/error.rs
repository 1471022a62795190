//! Errors of the cluster layer.

use gregor_storage::NodeId;

/// Why a proposal did not commit. Only `Fatal` means the group is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProposeError {
    #[error("this node is not the group's leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("the proposal did not commit within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("the raft group is shutting down")]
    ShuttingDown,
    #[error("the raft group failed: {0}")]
    Fatal(String),
}
