//! Quiescence: idle groups stop ticking, as CockroachDB's quiesced ranges and TiKV's hibernate
//! regions do.
//!
//! async-raft gives every follower stream of a leader its own heartbeat timer and every
//! follower an election timer, whether or not anything happens: a node with thousands of idle
//! groups spends a fifth of a core on it (BENCHMARKS.md). Our copy of async-raft has a quiet
//! flag per group (`async_raft::Quiescence`): a quiet leader's caught-up streams send no
//! heartbeats, a quiet follower arms no election timer. This module decides when to set it and
//! when to clear it, per node, in one loop over the groups hosted here:
//!
//! - **Going quiet.** A leader whose log has been settled for `rounds` beats in a row (every
//!   entry committed, every live voter holding all of it and told so, no proposal under way)
//!   offers its followers to go quiet. A follower agrees if it follows that leader in that term,
//!   its log ends at the leader's last index and it knows that index committed; it sets its
//!   flag as it answers. The leader sets its own once every live follower agreed, unless a
//!   proposal woke it in between.
//! - **Waking.** A proposal or membership change wakes the leader (its streams beat at once);
//!   entries, a newer commit, a vote request or a snapshot wake a follower; every change of
//!   role clears the flag. A member asks the others to wake a group when it starts, when it
//!   stops here, and when its Raft core ends (a follower takes the request only from its
//!   leader).
//! - **Losing sight of a node.** Every node beats every peer it shares a group with once per
//!   heartbeat interval (one message per peer, carrying the offers and wake requests). A quiet
//!   follower whose leader's node has not been heard for `silence` wakes: its election timer
//!   runs again and the group elects if the leader is gone. A leader counts only the voters it
//!   hears (a dead node does not keep every group awake), and wakes the groups it leads with a
//!   member on a node heard again after a silence, which may need to catch up.
//!
//! Safety is untouched (only when elections may start changes). A killed leader's groups
//! elect after `silence` plus an election timeout instead of an election timeout.

mod group;
mod sight;

pub(crate) use group::GroupQuiet;
pub(crate) use sight::PeerSight;

use crate::dispatch::{Dispatcher, GroupInbound, QuietOffer};
use crate::rpc::{QuiescenceRequest, QuiescenceResponse, RpcError};
use crate::transport::Transport;
use gregor_storage::{GroupId, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// When groups go quiet, and how soon a silent node counts as gone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuiescenceSettings {
    /// How often a node beats its peers (the Raft heartbeat interval).
    pub(crate) beat: Duration,
    /// Beats in a row a leader's log must be found settled before it offers to go quiet;
    /// 0 never quiets.
    pub(crate) rounds: u32,
    /// A peer unheard for this long counts as gone.
    pub(crate) silence: Duration,
}

/// Runs the node's quiescence loop until the dispatcher is dropped.
pub(crate) async fn run(
    node: NodeId,
    dispatcher: Weak<Dispatcher>,
    transport: Arc<dyn Transport>,
    settings: QuiescenceSettings,
) {
    let sight = Arc::new(PeerSight::new(settings.silence));
    let wake_soon = match dispatcher.upgrade() {
        Some(d) => {
            d.note_peers_in(sight.clone());
            d.wake_soon()
        }
        None => return,
    };
    let mut ticker = tokio::time::interval(settings.beat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut membership = Membership::default();
    loop {
        let early = tokio::select! {
            biased;
            _ = ticker.tick() => false,
            _ = wake_soon.notified() => true,
        };
        if early {
            let Some(wakes) = dispatcher.upgrade().map(|d| d.take_wake_requests()) else {
                return;
            };
            send_wakes(&*transport, wakes, &sight, settings.beat).await;
            continue;
        }
        let Some((groups, mut wakes, changes)) = dispatcher.upgrade().map(|d| {
            (
                d.hosted_groups(),
                d.take_wake_requests(),
                d.changes().count(),
            )
        }) else {
            return;
        };
        for group in groups.iter().filter(|g| g.core_ended()) {
            if group.quiet().farewell() {
                for member in group.peers(node) {
                    wakes.entry(member).or_default().insert(group.group);
                }
            }
        }
        membership.refresh(node, &groups, changes, &mut wakes);
        let round = Round::plan(
            node,
            &groups,
            &membership.peers,
            &sight,
            &mut wakes,
            settings,
        );
        let replies = round.beat(&*transport, settings.beat).await;
        for (peer, reply) in &replies {
            if reply.is_ok() {
                sight.heard(*peer);
            }
        }
        round.finish(&replies);
        let Some(dispatcher) = dispatcher.upgrade() else {
            return;
        };
        wake_around_changes(node, &groups, &round.peers, &sight, &dispatcher);
    }
}

/// The peers this node shares a group with, looked up again only when a hosted group's
/// status or voters changed (or a group came or went): a pass over ten thousand quiet groups
/// four times a second would be most of an idle node's work.
#[derive(Default)]
struct Membership {
    peers: BTreeSet<NodeId>,
    seen: Option<(u64, usize)>,
}

impl Membership {
    /// Also asks the members of each group started since the last look to wake it.
    fn refresh(
        &mut self,
        node: NodeId,
        groups: &[Arc<GroupInbound>],
        changes: u64,
        wakes: &mut BTreeMap<NodeId, BTreeSet<GroupId>>,
    ) {
        let now = Some((changes, groups.len()));
        if self.seen == now {
            return;
        }
        self.seen = now;
        self.peers.clear();
        for group in groups {
            let members = group.peers(node);
            if !members.is_empty() && group.quiet().announce() {
                for member in &members {
                    wakes.entry(*member).or_default().insert(group.group);
                }
            }
            self.peers.extend(members);
        }
    }
}

/// One beat: what goes to each peer, and the offers waiting for their answers.
struct Round {
    peers: BTreeSet<NodeId>,
    requests: BTreeMap<NodeId, QuiescenceRequest>,
    offers: Vec<(Arc<GroupInbound>, QuietOffer)>,
}

impl Round {
    fn plan(
        node: NodeId,
        groups: &[Arc<GroupInbound>],
        peers: &BTreeSet<NodeId>,
        sight: &PeerSight,
        wakes: &mut BTreeMap<NodeId, BTreeSet<GroupId>>,
        settings: QuiescenceSettings,
    ) -> Round {
        let peers = peers.clone();
        let mut offers = Vec::new();
        let present = |peer: NodeId| sight.is_present(peer);
        for group in groups.iter().filter(|g| !g.quiet().is_quiet()) {
            if settings.rounds == 0 {
                break;
            }
            if let Some(offer) = group.offer_quiet(node, settings.rounds, &present) {
                offers.push((group.clone(), offer));
            }
        }
        let mut requests: BTreeMap<NodeId, QuiescenceRequest> = peers
            .iter()
            .map(|peer| (*peer, QuiescenceRequest::default()))
            .collect();
        for (peer, groups) in std::mem::take(wakes) {
            requests.entry(peer).or_default().wake = groups.into_iter().collect();
        }
        for (_, offer) in &offers {
            for follower in &offer.followers {
                requests
                    .entry(*follower)
                    .or_default()
                    .quiet
                    .push(offer.notice);
            }
        }
        Round {
            peers,
            requests,
            offers,
        }
    }

    /// Sends every peer its beat at once; each answer is awaited at most one beat.
    async fn beat(
        &self,
        transport: &dyn Transport,
        limit: Duration,
    ) -> BTreeMap<NodeId, Result<QuiescenceResponse, RpcError>> {
        let calls = self.requests.iter().map(|(peer, request)| async move {
            let sent = transport.quiescence(*peer, request.clone());
            let reply = tokio::time::timeout(limit, sent)
                .await
                .unwrap_or(Err(RpcError::Timeout {
                    timeout_ms: limit.as_millis() as u64,
                }));
            (*peer, reply)
        });
        futures::future::join_all(calls).await.into_iter().collect()
    }

    /// Quiets each offering leader whose followers all agreed.
    fn finish(&self, replies: &BTreeMap<NodeId, Result<QuiescenceResponse, RpcError>>) {
        let agreed: BTreeMap<NodeId, BTreeSet<GroupId>> = replies
            .iter()
            .filter_map(|(peer, reply)| {
                let reply = reply.as_ref().ok()?;
                Some((*peer, reply.quieted.iter().copied().collect()))
            })
            .collect();
        for (group, offer) in &self.offers {
            let all_agreed = offer.followers.iter().all(|follower| {
                agreed
                    .get(follower)
                    .is_some_and(|groups| groups.contains(&offer.notice.group))
            });
            if all_agreed {
                group.quiet().quiet_unless_woken_since(offer.wakes);
            }
        }
    }
}

/// Sends waiting wake requests between beats.
async fn send_wakes(
    transport: &dyn Transport,
    wakes: BTreeMap<NodeId, BTreeSet<GroupId>>,
    sight: &PeerSight,
    limit: Duration,
) {
    let calls = wakes.into_iter().map(|(peer, groups)| async move {
        let request = QuiescenceRequest {
            quiet: Vec::new(),
            wake: groups.into_iter().collect(),
        };
        let sent = tokio::time::timeout(limit, transport.quiescence(peer, request)).await;
        (peer, matches!(sent, Ok(Ok(_))))
    });
    for (peer, answered) in futures::future::join_all(calls).await {
        if answered {
            sight.heard(peer);
        }
    }
}

/// Wakes the quiet followers of a silent node (and asks it to wake them too, in case it is
/// only slow), and the quiet leaders with a member on a node heard again after a silence (a
/// follower is never woken alone: with its leader quiet it would stand for election).
fn wake_around_changes(
    node: NodeId,
    groups: &[Arc<GroupInbound>],
    peers: &BTreeSet<NodeId>,
    sight: &PeerSight,
    dispatcher: &Dispatcher,
) {
    let silent = sight.silent(peers);
    let returned = sight.take_returned();
    if silent.is_empty() && returned.is_empty() {
        return;
    }
    for group in groups.iter().filter(|g| g.quiet().is_quiet()) {
        if let Some(leader) = group.quiet_leader().filter(|l| silent.contains(l)) {
            tracing::debug!(group = %group.group, %leader, "the leader's node is silent: waking");
            group.quiet().wake();
            dispatcher.request_wake(leader, group.group);
        } else if group.quiet_leader().is_none()
            && group.peers(node).iter().any(|p| returned.contains(p))
        {
            group.quiet().wake();
        }
    }
}
