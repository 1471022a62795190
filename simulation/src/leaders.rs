//! Watches the Raft groups of every running node and records each leadership a node reports
//! (group, term, node), for the at-most-one-leader-per-term checker. Each group's status is
//! followed from its own watch channel, so a leadership is seen when it begins, not sampled.

use crate::cluster::SimCluster;
use crate::history::LeaderSeen;
use crate::workload::Recorder;
use gregor_cluster::{GroupRole, GroupStatus, RaftGroup};
use gregor_storage::{GroupId, NodeId};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often new groups (a node restarted, a replica started) are looked for.
const DISCOVERY_INTERVAL: Duration = Duration::from_millis(100);

/// Follows the groups of `cluster` until the returned task is aborted.
pub fn observe(cluster: Rc<SimCluster>, recorder: Recorder) -> JoinHandle<()> {
    actix_rt::spawn(async move {
        let mut watched: BTreeMap<(NodeId, GroupId), Weak<RaftGroup>> = BTreeMap::new();
        loop {
            for node in cluster.up_ids() {
                for group in cluster.groups_on(node) {
                    let key = (node, group.id());
                    let known = watched
                        .get(&key)
                        .and_then(Weak::upgrade)
                        .is_some_and(|seen| Arc::ptr_eq(&seen, &group));
                    if !known {
                        watched.insert(key, Arc::downgrade(&group));
                        actix_rt::spawn(follow(group.status(), node, group.id(), recorder.clone()));
                    }
                }
            }
            tokio::time::sleep(DISCOVERY_INTERVAL).await;
        }
    })
}

/// Records every term in which this replica reports itself leader, until the group stops.
async fn follow(
    mut status: watch::Receiver<GroupStatus>,
    node: NodeId,
    group: GroupId,
    recorder: Recorder,
) {
    let mut last_led = None;
    loop {
        let now = *status.borrow_and_update();
        if now.role == GroupRole::Leader && last_led != Some(now.term) {
            last_led = Some(now.term);
            recorder.leader(LeaderSeen {
                group: group.0,
                term: now.term,
                node,
                at_ms: recorder.now_ms(),
            });
        }
        if now.role == GroupRole::Stopped || status.changed().await.is_err() {
            return;
        }
    }
}
