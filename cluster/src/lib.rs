//! Gregor's cluster layer: one async-raft group per partition (and one for metadata), wired to
//! the node's storage, behind one narrow seam ([`RaftGroup`]).
//!
//! async-raft 0.6.1 has known safety bugs (see DEPENDENCY_NOTES.md, "Project policy"); this crate
//! is where they are contained: the state machine applies from our own log up to the index it
//! is told (a skipped apply call cannot skip an entry), truncate-then-append is one atomic
//! storage write, `client_read` is never used, and every call into Raft has a timeout. It knows
//! nothing about client requests. [`membership`] runs chitchat gossip (liveness and hints);
//! [`peer`] is the node-to-node TCP transport behind the [`Transport`] and [`PeerHandler`]
//! seams, whose messages [`rpc`] defines.

mod codec;
pub mod command;
pub mod error;
pub mod group;
pub mod membership;
pub mod peer;
mod raft_store;
pub mod rpc;
pub mod transport;

pub use command::{ApplyOutcome, Command, KvWrite};
pub use error::ProposeError;
pub use group::{GroupRole, RaftGroup, RaftTuning};
pub use rpc::{RpcError, RpcKind, RpcRequest, RpcResponse};
pub use transport::{NoPeers, PeerHandler, Transport};
