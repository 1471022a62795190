//! The seams of a node that is a cluster member: the peer port (the node-to-node TCP transport
//! and chitchat's UDP gossip on one port number) and gossip's settings.

use crate::config::{ClusterConfig, ServeConfig};
use anyhow::Context;
use gregor_actors::{ClusterEnv, NodeEnv};
use gregor_cluster::membership::{GossipTuning, MembershipConfig, UdpTransport};
use gregor_cluster::peer::{PeerConfig, PeerTransport};
use gregor_cluster::Dispatcher;
use gregor_storage::{Clock, SystemClock};
use std::net::SocketAddr;
use std::sync::Arc;

/// What `serve` hands the node, and the transport it keeps for its own reports.
pub(super) struct ClusterSeams {
    pub env: NodeEnv,
    pub transport: Arc<PeerTransport>,
    /// The peer address other nodes are told.
    pub advertised: SocketAddr,
    /// The `--join` peers, resolved; empty founds a cluster.
    pub seeds: Vec<SocketAddr>,
}

/// Binds the peer port and prepares gossip; nothing is sent until the node starts.
pub(super) async fn bind(
    config: &ServeConfig,
    cluster: &ClusterConfig,
) -> anyhow::Result<ClusterSeams> {
    let node = config.node.node_id;
    let listen = resolve(&cluster.peer_listen, "--peer-listen").await?;
    let dispatcher = Dispatcher::new();
    let peer = PeerConfig::new(node, cluster.cluster_id.clone());
    let transport = PeerTransport::bind(peer, listen, dispatcher.clone())
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen for peers on {}: {e}; pick another port with --peer-listen HOST:PORT",
                cluster.peer_listen
            )
        })?;
    let bound = transport.local_addr();
    let advertised = match &cluster.advertised_peer_address {
        Some(address) => resolve(address, "--advertised-peer-address").await?,
        None => bound,
    };
    let mut seeds = Vec::new();
    for address in &cluster.join {
        let seed = resolve(address, "--join").await?;
        if seed != advertised && seed != bound {
            seeds.push(seed);
        }
    }
    let membership = MembershipConfig {
        cluster_id: cluster.cluster_id.clone(),
        // Peers tell a restarted node from its previous run by a larger generation.
        generation: SystemClock.now_ms().max(0) as u64,
        listen_addr: bound,
        seeds: seeds.clone(),
        tuning: GossipTuning::default(),
    };
    let env = NodeEnv {
        transport: transport.clone(),
        raft_tuning: config.raft,
        cluster: Some(ClusterEnv {
            dispatcher,
            gossip: Arc::new(UdpTransport),
            membership,
            peer_addr: advertised,
            peer_addresses: Some(transport.address_book().clone()),
        }),
        ..NodeEnv::production()
    };
    Ok(ClusterSeams {
        env,
        transport,
        advertised,
        seeds,
    })
}

async fn resolve(address: &str, flag: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(address)
        .await
        .with_context(|| format!("cannot resolve {address} (given with {flag})"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{address} (given with {flag}) resolves to no address"))
}
