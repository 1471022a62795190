//! chitchat's datagram seam over the simulated network: like UDP, a send never fails and never
//! waits; what the link does to the datagram (loss, delay, a cut) decides whether and when the
//! socket bound at the target address receives it.
//!
//! Datagrams are never duplicated: chitchat 0.13 can neither copy an envelope nor encode one
//! outside its own crate. Each envelope still makes a round trip through chitchat's encoding
//! (its in-memory `ChannelTransport`, used as a codec), which also measures it and enforces the
//! UDP payload limit.

use super::{Channel, GossipSocket, NetMessage, NetOutcome, SimNetwork};
use crate::net::faults::Fate;
use anyhow::{anyhow, bail};
use chitchat::transport::{ChannelTransport, RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::ChitchatEnvelope;
use gregor_storage::NodeId;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;

pub struct SimGossipTransport {
    net: SimNetwork,
    node: NodeId,
}

impl SimGossipTransport {
    pub(super) fn new(net: SimNetwork, node: NodeId) -> SimGossipTransport {
        SimGossipTransport { net, node }
    }
}

#[async_trait::async_trait]
impl Transport for SimGossipTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let codec = EnvelopeCodec::open().await?;
        let (inbox, received) = mpsc::unbounded_channel();
        let mut state = self.net.lock();
        let Some(incarnation) = state.running_incarnation(self.node) else {
            bail!("node {} is not running", self.node);
        };
        if state.gossip_sockets.contains_key(&listen_addr) {
            bail!("address {listen_addr} is already bound");
        }
        state.next_socket_id += 1;
        let socket_id = state.next_socket_id;
        state.gossip_sockets.insert(
            listen_addr,
            GossipSocket {
                node: self.node,
                socket_id,
                inbox,
            },
        );
        Ok(Box::new(SimSocket {
            net: self.net.clone(),
            node: self.node,
            incarnation,
            addr: listen_addr,
            socket_id,
            received,
            codec,
        }))
    }
}

struct SimSocket {
    net: SimNetwork,
    node: NodeId,
    incarnation: u64,
    addr: SocketAddr,
    socket_id: u64,
    received: mpsc::UnboundedReceiver<(SocketAddr, ChitchatEnvelope, usize)>,
    codec: EnvelopeCodec,
}

/// Largest UDP payload (chitchat's own limit, which it does not export).
const MAX_DATAGRAM_BYTES: usize = 65_507;

/// Two sockets of a private in-memory chitchat transport: what goes in one comes out of the
/// other encoded and decoded again, with its encoded size.
struct EnvelopeCodec {
    sender: Box<dyn Socket>,
    receiver: Box<dyn Socket>,
    receiver_addr: SocketAddr,
}

impl EnvelopeCodec {
    async fn open() -> anyhow::Result<EnvelopeCodec> {
        let channel = ChannelTransport::with_mtu(MAX_DATAGRAM_BYTES);
        let any_port: SocketAddr = ([127, 0, 0, 1], 0).into();
        let sender = channel.open(any_port).await?;
        let receiver = channel.open(any_port).await?;
        let receiver_addr = receiver.local_addr()?;
        Ok(EnvelopeCodec {
            sender,
            receiver,
            receiver_addr,
        })
    }

    async fn round_trip(
        &mut self,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<(ChitchatEnvelope, usize)> {
        let sent = self.sender.send(self.receiver_addr, envelope).await?;
        let received = self.receiver.recv().await?;
        Ok((received.envelope, sent.num_bytes_sent))
    }
}

impl Drop for SimSocket {
    fn drop(&mut self) {
        let mut state = self.net.lock();
        let ours = state
            .gossip_sockets
            .get(&self.addr)
            .is_some_and(|socket| socket.socket_id == self.socket_id);
        if ours {
            state.gossip_sockets.remove(&self.addr);
        }
    }
}

#[async_trait::async_trait]
impl Socket for SimSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.addr)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let (datagram, num_bytes_sent) = self.codec.round_trip(envelope).await?;
        let message = NetMessage::Gossip {
            bytes: num_bytes_sent,
        };
        let fate = {
            let mut state = self.net.lock();
            if !state.is_running(self.node, self.incarnation) {
                bail!("node {} crashed", self.node);
            }
            // A datagram to an address nobody binds goes nowhere, as with UDP.
            let Some(target) = state.gossip_sockets.get(&to).map(|socket| socket.node) else {
                state.record(
                    Channel::Gossip,
                    self.node,
                    self.node,
                    message,
                    NetOutcome::Sent,
                );
                state.record(
                    Channel::Gossip,
                    self.node,
                    self.node,
                    message,
                    NetOutcome::Vanished,
                );
                return Ok(SendOutcome { num_bytes_sent });
            };
            let fate = state.send(Channel::Gossip, self.node, target, message);
            (target, fate)
        };
        if let (target, Fate::Delivered { delay, .. }) = fate {
            let from = (self.node, self.incarnation, self.addr);
            let arrival = arrive(self.net.clone(), from, target, to, datagram, message, delay);
            tokio::spawn(arrival);
        }
        Ok(SendOutcome { num_bytes_sent })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        let (from_addr, envelope, num_bytes_received) = self
            .received
            .recv()
            .await
            .ok_or_else(|| anyhow!("the socket of node {} was closed by a crash", self.node))?;
        Ok(RecvOutcome {
            from_addr,
            envelope,
            num_bytes_received,
        })
    }
}

/// Puts a datagram in the inbox of the socket bound at `to_addr` after `delay`, if its sender
/// is still the same incarnation and a socket of `target` is still bound there.
async fn arrive(
    net: SimNetwork,
    (from, from_incarnation, from_addr): (NodeId, u64, SocketAddr),
    target: NodeId,
    to_addr: SocketAddr,
    datagram: ChitchatEnvelope,
    message: NetMessage,
    delay: Duration,
) {
    tokio::time::sleep(delay).await;
    let mut state = net.lock();
    let NetMessage::Gossip { bytes } = message else {
        unreachable!("a gossip arrival carries a gossip message");
    };
    let inbox = state
        .gossip_sockets
        .get(&to_addr)
        .filter(|socket| socket.node == target)
        .map(|socket| socket.inbox.clone());
    let delivered = state.is_running(from, from_incarnation)
        && inbox.is_some_and(|inbox| inbox.send((from_addr, datagram, bytes)).is_ok());
    let outcome = if delivered {
        NetOutcome::Delivered
    } else {
        NetOutcome::Vanished
    };
    state.record(Channel::Gossip, from, target, message, outcome);
}
