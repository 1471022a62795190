//! Errors of the cluster layer.

use gregor_storage::NodeId;

/// Why a proposal did not commit. Only `Fatal` means the group is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProposeError {
    #[error("this node is not the group's leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// This leader carried out a membership change and steps down before it takes proposals
    /// again (its bookkeeping would not count the new member). Retry, at the next leader.
    #[error("the group's membership is changing; retry shortly")]
    MembershipChanging,
    /// This leader is handing leadership to `to` and takes no proposals meanwhile. Retry, at
    /// `to` (or wherever the leader is by then).
    #[error("leadership of the group is moving to node {to}; retry there")]
    LeadershipMoving { to: NodeId },
    #[error("the proposal did not commit within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("the raft group is shutting down")]
    ShuttingDown,
    #[error("the raft group failed: {0}")]
    Fatal(String),
}

/// Why a membership or leadership operation on a group did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    #[error("this node is not the group's leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// A change is still going on (a joint configuration in the log); retry later.
    #[error("a membership change is in progress")]
    ChangeInProgress,
    #[error("the operation did not finish within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("invalid membership target: {0}")]
    InvalidTarget(String),
    /// The group's only voter is this node: no other node could lead it.
    #[error("this node is the group's only voter")]
    OnlyVoter,
    /// The chosen successor could not be asked to stand, or did not (it follows another
    /// leader or term); this node leads on.
    #[error("leadership was not handed over: {0}")]
    NotHandedOver(String),
    #[error("the raft group is shutting down")]
    ShuttingDown,
    #[error("the raft group failed: {0}")]
    Fatal(String),
}
