//! When this node last heard from each peer: a beat it sent answered, or one the peer sent.

use gregor_storage::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

pub(crate) struct PeerSight {
    silence: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    heard: BTreeMap<NodeId, Instant>,
    /// Peers heard again after a silence (or for the first time) since the last `take_returned`.
    returned: BTreeSet<NodeId>,
}

impl PeerSight {
    /// A peer unheard for longer than `silence` counts as gone.
    pub(crate) fn new(silence: Duration) -> PeerSight {
        PeerSight {
            silence,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn heard(&self, peer: NodeId) {
        let now = Instant::now();
        let mut inner = self.lock();
        let before = inner.heard.insert(peer, now);
        if before.is_none_or(|at| now.duration_since(at) > self.silence) {
            inner.returned.insert(peer);
        }
    }

    /// Whether `peer` was heard within the silence bound.
    pub(crate) fn is_present(&self, peer: NodeId) -> bool {
        let now = Instant::now();
        self.lock()
            .heard
            .get(&peer)
            .is_some_and(|at| now.duration_since(*at) <= self.silence)
    }

    /// The peers of `peers` not heard within the silence bound.
    pub(crate) fn silent(&self, peers: &BTreeSet<NodeId>) -> BTreeSet<NodeId> {
        peers
            .iter()
            .copied()
            .filter(|p| !self.is_present(*p))
            .collect()
    }

    pub(crate) fn take_returned(&self) -> BTreeSet<NodeId> {
        std::mem::take(&mut self.lock().returned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_peer_is_present_until_the_silence_bound_and_returns_once() {
        let sight = PeerSight::new(Duration::from_millis(500));
        let peer = NodeId(2);
        assert!(!sight.is_present(peer));
        sight.heard(peer);
        assert_eq!(sight.take_returned(), BTreeSet::from([peer]));
        tokio::time::sleep(Duration::from_millis(400)).await;
        sight.heard(peer);
        assert!(
            sight.take_returned().is_empty(),
            "heard within the bound: not a return"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(sight.is_present(peer));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            sight.silent(&BTreeSet::from([peer])),
            BTreeSet::from([peer])
        );
        sight.heard(peer);
        assert_eq!(sight.take_returned(), BTreeSet::from([peer]));
    }
}
