//! Gregor's cluster layer: one async-raft group per partition (and one for metadata), wired to
//! the node's storage, behind one narrow seam ([`RaftGroup`]).
//!
//! async-raft 0.6.1 has known safety bugs (ARCHITECTURE.md, "Containing async-raft 0.6.1"); this crate
//! is where they are contained: the state machine applies from our own log up to the index it
//! is told (a skipped apply call cannot skip an entry), truncate-then-append is one atomic
//! storage write, `client_read` is never used, and every call into Raft has a timeout; the
//! inbound [`dispatch`]er checks every message against our log before async-raft sees it, and
//! the group's network clamps what the leader says is committed (ARCHITECTURE.md lists each
//! containment; [`Containment`] switches them for the tests that show them). [`ClusterNode`]
//! owns the node's groups, transport and dispatcher. It knows nothing about client requests.
//! [`membership`] runs chitchat gossip (liveness and hints); [`peer`] is the node-to-node TCP
//! transport behind the [`Transport`] and [`PeerHandler`] seams, whose messages [`rpc`]
//! defines.

mod codec;
pub mod command;
mod commit;
pub mod containment;
pub mod dispatch;
pub mod error;
pub mod group;
pub mod membership;
mod network;
pub mod node;
pub mod peer;
mod quiescence;
mod raft_store;
mod restart_role;
pub mod rpc;
mod snapshot_bytes;
pub mod transport;

pub use command::{ApplyOutcome, Command, KvWrite};
pub use containment::Containment;
pub use dispatch::{Dispatcher, GroupChanges, NodeMessageHandler};
pub use error::{AdminError, ProposeError};
pub use group::{GroupEnv, GroupRole, GroupStatus, RaftGroup, RaftTuning, Start, StepOutcome};
pub use node::ClusterNode;
pub use rpc::{RpcError, RpcKind, RpcRequest, RpcResponse};
pub use transport::{NoPeers, PeerHandler, Transport};
