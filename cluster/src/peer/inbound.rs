//! Serving a connection's inbound requests: concurrently across groups, in arrival order within
//! one group (a lane per busy group serves its requests one after another; a lane ends when
//! its group has nothing queued, so idle groups cost nothing). Node messages, which belong to
//! no group, each get a task of their own.

use super::link::ReplyTo;
use crate::rpc::{self, RpcRequest};
use crate::transport::PeerHandler;
use gregor_storage::{GroupId, NodeId};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedSemaphorePermit;

/// One inbound request and where its outcome goes.
pub(crate) struct Job {
    pub(crate) request: RpcRequest,
    /// Holds the request's share of the connection's inbound budget until it is answered.
    pub(crate) budget: Option<OwnedSemaphorePermit>,
    pub(crate) reply_to: ReplyTo,
}

pub(crate) struct Lanes {
    from: NodeId,
    handler: Arc<dyn PeerHandler>,
    waiting: Mutex<BTreeMap<GroupId, VecDeque<Job>>>,
}

impl Lanes {
    pub(crate) fn new(from: NodeId, handler: Arc<dyn PeerHandler>) -> Arc<Lanes> {
        Arc::new(Lanes {
            from,
            handler,
            waiting: Mutex::new(BTreeMap::new()),
        })
    }

    pub(crate) fn dispatch(self: &Arc<Self>, job: Job) {
        let Some(group) = job.request.group() else {
            tokio::spawn(run(self.handler.clone(), self.from, job));
            return;
        };
        {
            let mut waiting = self.lock();
            if let Some(lane) = waiting.get_mut(&group) {
                lane.push_back(job);
                return;
            }
            waiting.insert(group, VecDeque::new());
        }
        tokio::spawn(self.clone().serve_lane(group, job));
    }

    async fn serve_lane(self: Arc<Self>, group: GroupId, first: Job) {
        let mut job = first;
        loop {
            run(self.handler.clone(), self.from, job).await;
            let mut waiting = self.lock();
            let lane = waiting
                .get_mut(&group)
                .expect("a running lane keeps its entry");
            match lane.pop_front() {
                Some(next) => job = next,
                None => {
                    waiting.remove(&group);
                    return;
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<GroupId, VecDeque<Job>>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn run(handler: Arc<dyn PeerHandler>, from: NodeId, job: Job) {
    let outcome = rpc::serve(handler.as_ref(), from, job.request).await;
    job.reply_to.send(outcome).await;
    drop(job.budget);
}
