//! Which nodes are alive, as this node sees them: itself alone when it runs without peers, or
//! what gossip (chitchat) shows. Liveness is a hint for the metadata leader's decisions; the
//! decisions themselves go through the metadata group.

use crate::operations::LiveNode;
use gregor_cluster::membership::MembershipView;
use gregor_storage::NodeId;
use std::collections::BTreeMap;
use tokio::sync::watch;

#[derive(Clone)]
pub enum Liveness {
    /// The node runs without peers: it is the only live member.
    Alone { node: NodeId, info: LiveNode },
    /// Gossip's live members (this node included).
    Gossip(watch::Receiver<MembershipView>),
}

impl Liveness {
    pub fn live(&self) -> BTreeMap<NodeId, LiveNode> {
        match self {
            Liveness::Alone { node, info } => BTreeMap::from([(*node, info.clone())]),
            Liveness::Gossip(view) => view
                .borrow()
                .live
                .iter()
                .map(|(node, member)| {
                    let info = &member.info;
                    let live = LiveNode {
                        client_addr: info.client_addr.clone(),
                        peer_addr: info.peer_addr.to_string(),
                        rack: info.rack.clone(),
                    };
                    (*node, live)
                })
                .collect(),
        }
    }

    pub fn is_live(&self, node: NodeId) -> bool {
        match self {
            Liveness::Alone { node: me, .. } => *me == node,
            Liveness::Gossip(view) => view.borrow().live.contains_key(&node),
        }
    }
}
