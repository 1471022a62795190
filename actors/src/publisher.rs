//! [`HintPublisher`]: tells the other live members which partitions this node leads. Every
//! round it compares the leaderships of its replicas with what it last said and sends the
//! change; every few rounds it sends the whole list, which repairs whatever a lost message or
//! a restarted peer missed. Sends are fire-and-forget: a peer that misses one hears the next.

use crate::directory::{Directory, LocalSnapshot};
use crate::hints::{LeadershipHint, Led};
use crate::liveness::Liveness;
use crate::messages::NodeMessage;
use crate::metadata::NodeState;
use crate::peers::ask;
use actix::prelude::*;
use gregor_cluster::membership::Membership;
use gregor_cluster::{GroupRole, Transport};
use gregor_storage::{GroupId, NodeId};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub struct HintPublisher {
    directory: Arc<Directory>,
    transport: Arc<dyn Transport>,
    liveness: Liveness,
    /// Gossip, where this node also publishes how many replicas it hosts and leads.
    membership: Option<Arc<Membership>>,
    load: (u32, u32),
    interval: Duration,
    /// Every this many rounds the whole list goes out.
    full_every: u32,
    rounds: u32,
    /// What the peers were last told.
    told: BTreeMap<GroupId, Led>,
    /// The inputs of the last round: a change round with the same inputs would find no change,
    /// so it is skipped without walking the replicas.
    last: Option<LocalSnapshot>,
}

impl HintPublisher {
    pub fn new(
        directory: Arc<Directory>,
        transport: Arc<dyn Transport>,
        liveness: Liveness,
        membership: Option<Arc<Membership>>,
        interval: Duration,
        full_every: u32,
    ) -> Self {
        HintPublisher {
            directory,
            transport,
            liveness,
            membership,
            load: (0, 0),
            interval,
            full_every: full_every.max(1),
            rounds: 0,
            told: BTreeMap::new(),
            last: None,
        }
    }

    /// The partitions this node leads now, with the replicas that are not (yet) caught-up
    /// voters of each.
    fn leading(&self) -> BTreeMap<GroupId, Led> {
        let view = self.directory.view();
        self.directory
            .locals()
            .into_iter()
            .filter(|r| r.group.role() == GroupRole::Leader)
            .map(|r| {
                let group = r.group.id();
                let voters = r.group.settled_voters();
                let lagging = view
                    .partition_of_group(group)
                    .map(|p| {
                        p.assignment()
                            .members()
                            .into_iter()
                            .filter(|n| !voters.contains(n))
                            .collect()
                    })
                    .unwrap_or_default();
                let state = *r.state.borrow();
                let led = Led {
                    group,
                    term: r.group.term(),
                    lagging,
                    log_start_offset: state.log_start_offset,
                    high_watermark: state.next_offset,
                };
                (group, led)
            })
            .collect()
    }

    fn peers(&self) -> Vec<NodeId> {
        let me = self.directory.node();
        self.directory
            .view()
            .nodes()
            .filter(|n| n.id != me && n.state != NodeState::Removed)
            .filter(|n| self.liveness.is_live(n.id))
            .map(|n| n.id)
            .collect()
    }

    fn publish(&mut self) {
        // Gossip is the only one to say a leader died: its partitions may elect no successor.
        let me = self.directory.node();
        self.directory
            .hints()
            .forget_dead(|n| n == me || self.liveness.is_live(n));
        self.rounds += 1;
        let full = self.rounds.is_multiple_of(self.full_every);
        let snapshot = self.directory.snapshot();
        if !full && self.last.as_ref() == Some(&snapshot) {
            return;
        }
        self.last = Some(snapshot);
        let leading = self.leading();
        let load = (self.directory.running().len() as u32, leading.len() as u32);
        if let Some(membership) = self.membership.clone().filter(|_| load != self.load) {
            self.load = load;
            actix::spawn(async move { membership.set_load(load.0, load.1).await });
        }
        let hint = if full {
            LeadershipHint {
                full: true,
                led: leading.values().cloned().collect(),
                lost: Vec::new(),
            }
        } else {
            LeadershipHint {
                full: false,
                // Offsets move with every write: they go out with the whole list only.
                led: leading
                    .values()
                    .filter(|led| {
                        self.told.get(&led.group).is_none_or(|told| {
                            (told.term, &told.lagging) != (led.term, &led.lagging)
                        })
                    })
                    .cloned()
                    .collect(),
                lost: self
                    .told
                    .keys()
                    .filter(|g| !leading.contains_key(g))
                    .copied()
                    .collect(),
            }
        };
        self.told = leading;
        if !full && hint.led.is_empty() && hint.lost.is_empty() {
            return;
        }
        let message = NodeMessage::Leadership(hint);
        for peer in self.peers() {
            let transport = self.transport.clone();
            let message = message.clone();
            actix::spawn(async move {
                if let Err(error) = ask(&*transport, peer, &message).await {
                    tracing::debug!(%peer, %error, "a leadership hint was not delivered");
                }
            });
        }
    }
}

impl Actor for HintPublisher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.interval, |act, _| act.publish());
    }
}
