//! Quiescence: a group with nothing to replicate need not tick.
//!
//! Upstream, every follower stream of a leader sends a heartbeat each interval and every
//! follower arms an election timer, for as long as the group exists. A node hosting thousands
//! of idle groups spends most of its time on that. The application, which can see when a group
//! is idle and when a peer node is gone, quiets the group on every member: a quiet leader's
//! caught-up streams send no heartbeats, and a quiet follower arms no election timer. Data
//! still flows while quiet. Waking restores both at once: the leader's streams send a
//! heartbeat immediately, and the follower's election timer starts a full timeout from the
//! moment of waking.
//!
//! Safety does not depend on it: only when elections may start changes. Liveness does: a
//! follower quiet while its leader is gone never stands, so the application must wake it when
//! it loses sight of the leader's node. Every change of role wakes the group, so a stale flag
//! never outlives the role it was set for.

use std::sync::Arc;
use tokio::sync::watch;

/// The quiet flag of one Raft node's group, shared by its core, its replication streams and
/// the application. Cheap to clone.
#[derive(Clone)]
pub struct Quiescence(Arc<watch::Sender<bool>>);

impl Quiescence {
    pub(crate) fn new() -> Self {
        Quiescence(Arc::new(watch::channel(false).0))
    }

    /// Quiets the group; returns whether it was awake.
    pub fn quiet(&self) -> bool {
        self.0.send_if_modified(|quiet| !std::mem::replace(quiet, true))
    }

    /// Wakes the group; returns whether it was quiet.
    pub fn wake(&self) -> bool {
        self.0.send_if_modified(|quiet| std::mem::replace(quiet, false))
    }

    pub fn is_quiet(&self) -> bool {
        *self.0.borrow()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
}
