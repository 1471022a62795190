//! Where each peer listens. The node keeps it current from membership
//! ([`AddressBook::follow`]); the transport dials whatever it says at the moment it dials.

use crate::membership::MembershipView;
use gregor_storage::NodeId;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Clone)]
pub struct AddressBook {
    addresses: watch::Sender<BTreeMap<NodeId, SocketAddr>>,
}

impl Default for AddressBook {
    fn default() -> Self {
        AddressBook {
            addresses: watch::channel(BTreeMap::new()).0,
        }
    }
}

impl AddressBook {
    pub fn set(&self, node: NodeId, addr: SocketAddr) {
        self.addresses
            .send_if_modified(|book| book.insert(node, addr) != Some(addr));
    }

    pub fn remove(&self, node: NodeId) {
        self.addresses
            .send_if_modified(|book| book.remove(&node).is_some());
    }

    pub fn get(&self, node: NodeId) -> Option<SocketAddr> {
        self.addresses.borrow().get(&node).copied()
    }

    pub fn snapshot(&self) -> BTreeMap<NodeId, SocketAddr> {
        self.addresses.borrow().clone()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<BTreeMap<NodeId, SocketAddr>> {
        self.addresses.subscribe()
    }

    /// Keeps the book in step with membership: every member gossip knows (live or dead, since
    /// a node declared dead may only be slow) at the peer address it publishes. Addresses are
    /// only added or changed, never dropped, so a flapping detector does not stop dialing.
    pub fn follow(&self, mut view: watch::Receiver<MembershipView>) -> JoinHandle<()> {
        let book = self.clone();
        tokio::spawn(async move {
            loop {
                let members: Vec<(NodeId, SocketAddr)> = {
                    let view = view.borrow_and_update();
                    view.live
                        .values()
                        .chain(view.dead.values())
                        .map(|member| (member.info.node, member.info.peer_addr))
                        .collect()
                };
                for (node, addr) in members {
                    book.set(node, addr);
                }
                if view.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}
