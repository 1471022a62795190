//! `gregor cluster status|drain`.

use super::{table, ConnectArgs};
use anyhow::Context;
use clap::{Args, Subcommand};
use gregor_client::protocol::api::{ClusterStatusReply, NodeStatus};
use gregor_client::protocol::NodeId;
use gregor_client::Admin;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// How often `drain` reports progress.
const DRAIN_POLL: Duration = Duration::from_secs(1);
/// Polls without a replica moving before `drain` says why that can be (30 s).
const STALLED_POLLS: u32 = 30;

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the members: liveness, addresses, replica and leader counts, metadata voters
    Status {
        /// Print the status as JSON
        #[arg(long)]
        json: bool,
    },
    /// Move every replica off a node so it can be removed; shows progress until done
    Drain {
        /// The node to drain
        node: u64,
        /// Ask for the drain and return without waiting for it to finish
        #[arg(long)]
        no_wait: bool,
    },
}

pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let admin = Admin::connect(args.connect.client_config("gregor-cluster")).await?;
    match args.command {
        ClusterCommand::Status { json } => {
            let status = admin.cluster_status().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status_text(&status));
            }
        }
        ClusterCommand::Drain { node, no_wait } => drain(&admin, NodeId(node), no_wait).await?,
    }
    Ok(())
}

async fn drain(admin: &Admin, node: NodeId, no_wait: bool) -> anyhow::Result<()> {
    admin.drain_node(node).await.with_context(|| {
        format!("cannot drain node {node}; `gregor cluster status` lists the nodes")
    })?;
    println!("node {node} is draining: its replicas move to the other nodes");
    if no_wait {
        println!("follow it with: gregor cluster status");
        return Ok(());
    }
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut last = None;
    let mut unchanged = 0;
    loop {
        let status = admin.cluster_status().await?;
        let replicas = status
            .nodes
            .iter()
            .find(|n| n.node_id == node)
            .map_or(0, |n| n.replicas);
        if last != Some(replicas) {
            println!("node {node}: {replicas} replica(s) left");
            last = Some(replicas);
            unchanged = 0;
        } else {
            unchanged += 1;
            if unchanged == STALLED_POLLS {
                println!(
                    "nothing has moved for a while: a replica moves only to a live active node \
                     that holds none of its partition's replicas; if every other node holds one, \
                     add a node (gregor serve --join ...); partitions of replication factor 1 \
                     never move"
                );
            }
        }
        if replicas == 0 {
            println!("node {node} holds no replicas; it can be stopped and removed");
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(DRAIN_POLL) => {}
            _ = interrupt.recv() => {
                println!("stopped watching; the drain goes on in the cluster (gregor cluster status)");
                return Ok(());
            }
        }
    }
}

/// A summary line, then one row per node.
pub fn status_text(status: &ClusterStatusReply) -> String {
    let voters: Vec<String> = status
        .nodes
        .iter()
        .filter(|n| n.metadata_role == "voter")
        .map(|n| n.node_id.to_string())
        .collect();
    let rows: Vec<Vec<String>> = status.nodes.iter().map(row).collect();
    format!(
        "Nodes: {}  Live: {}  Metadata leader: {}  Metadata voters: {}  (answered by node {})\n{}",
        status.nodes.len(),
        status.nodes.iter().filter(|n| n.live).count(),
        status
            .metadata_leader
            .map_or_else(|| "none".to_owned(), |l| l.to_string()),
        if voters.is_empty() {
            "none".to_owned()
        } else {
            voters.join(",")
        },
        status.node_id,
        table::render(
            &[
                "NODE",
                "STATE",
                "LIVE",
                "METADATA",
                "REPLICAS",
                "LEADERS",
                "ADDRESS",
                "PEER-ADDRESS",
                "RACK",
            ],
            &rows
        )
    )
}

fn row(node: &NodeStatus) -> Vec<String> {
    vec![
        node.node_id.to_string(),
        node.state.clone(),
        if node.live { "yes" } else { "no" }.to_owned(),
        node.metadata_role.clone(),
        node.replicas.to_string(),
        node.leaders.to_string(),
        node.address.clone(),
        node.peer_address.clone(),
        node.rack.clone().unwrap_or_else(|| "-".to_owned()),
    ]
}
