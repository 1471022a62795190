//! A node whose store poisoned itself stops serving at once. After a failed fsync the kernel
//! may have dropped the pages it could not write, so nothing the node would still answer from
//! its store (a fetch, a vote, an acknowledgement) can be trusted; PostgreSQL and Redpanda stop
//! the process for the same reason. The node refuses every later request with a typed error,
//! leaves gossip's ready set, and stops its replicas and Raft groups without another write; its
//! owner (the `gregor serve` process, the simulation) waits on [`crate::Broker::when_failed`],
//! closes the client connections and ends the process. The next start recovers from the last
//! successful fsync, as after a crash.

use crate::api::{ApiError, ErrorCode};
use crate::reconcile::{Reconciler, StopAll};
use actix::WeakAddr;
use gregor_cluster::membership::Membership;
use gregor_cluster::ClusterNode;
use gregor_storage::{NodeId, StorePoisoned};
use std::sync::Weak;
use tokio::sync::watch;

/// What the node does once its store is poisoned. Holds nothing that keeps the store open
/// (weak handles only), so a node that shuts down normally is not held up by it.
pub(crate) struct FailStop {
    pub node: NodeId,
    pub reconciler: WeakAddr<Reconciler>,
    pub cluster: Weak<ClusterNode>,
    pub membership: Option<Weak<Membership>>,
}

/// The failure the broker reports: `None` while it serves.
pub(crate) type Failure = watch::Receiver<Option<String>>;

impl FailStop {
    /// Starts waiting on `poisoned`; the receiver says whether (and why) the node stopped.
    pub fn spawn(self, poisoned: StorePoisoned) -> Failure {
        let (failed, failure) = watch::channel(None);
        actix_rt::spawn(async move {
            // `None`: the store closed without a failure; the node shut down normally.
            if let Some(cause) = poisoned.await {
                self.stop(cause, &failed).await;
            }
        });
        failure
    }

    async fn stop(self, cause: String, failed: &watch::Sender<Option<String>>) {
        tracing::error!(
            node = self.node.0,
            %cause,
            "node {} stops serving: its storage failed ({cause}). Check the disk (kernel log, \
             SMART) and this log, then restart the node: it recovers from its last successful \
             fsync",
            self.node
        );
        failed.send_replace(Some(cause));
        if let Some(membership) = self.membership.as_ref().and_then(Weak::upgrade) {
            membership.set_ready(false).await;
        }
        if let Some(reconciler) = self.reconciler.upgrade() {
            let _ = reconciler.send(StopAll).await;
        }
        if let Some(cluster) = self.cluster.upgrade() {
            cluster.shutdown().await;
        }
    }
}

/// The refusal every request gets once the node's storage failed.
pub(crate) fn refusal(node: NodeId, cause: &str) -> ApiError {
    ApiError::new(
        ErrorCode::UNAVAILABLE,
        format!(
            "node {node} has stopped serving: its storage failed ({cause}); retry against \
             another node"
        ),
    )
}

/// Resolves with the cause once the node has stopped serving after a storage failure, or with
/// `None` once it shut down without one.
pub(crate) async fn when_failed(mut failure: Failure) -> Option<String> {
    let failed = failure
        .wait_for(Option::is_some)
        .await
        .map(|cause| cause.clone());
    // Closed: the node shut down; a failure may still have been the last thing it said.
    failed.unwrap_or_else(|_| failure.borrow().clone())
}
