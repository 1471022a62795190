//! `gregor dev cluster`: a local cluster in one command, N `gregor serve` processes on loopback.
//!
//! The ports are chosen once and written to `DIR/dev-cluster.toml`, so running the command
//! again with the same data directory brings the same cluster back (same ids, same addresses,
//! same data). Ctrl-C stops every node cleanly.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

const LAYOUT_FILE: &str = "dev-cluster.toml";
/// How long all nodes together may take to say they are serving.
const STARTUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Run a local cluster for development
#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    #[command(subcommand)]
    pub command: DevCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum DevCommand {
    /// Start N nodes on loopback with free ports; Ctrl-C stops them all. Run it again with the
    /// same --data-dir to bring the same cluster back.
    Cluster(ClusterArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// How many nodes (the first three vote in the metadata group)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub nodes: u64,
    /// Where the nodes keep their data, one subdirectory each
    #[arg(long, value_name = "DIR", default_value = "gregor-dev-cluster")]
    pub data_dir: PathBuf,
}

/// The addresses of a dev cluster's nodes, kept next to their data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Layout {
    nodes: Vec<NodeLayout>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct NodeLayout {
    node_id: u64,
    listen: String,
    peer_listen: String,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    match args.command {
        DevCommand::Cluster(args) => cluster(args).await,
    }
}

async fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    let layout = layout(&args.data_dir, args.nodes)?;
    let binary = std::env::current_exe().context("cannot find the gregor executable")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let (lines_tx, mut lines) = mpsc::unbounded_channel::<(u64, Option<String>)>();
    let mut children = Vec::new();
    for node in &layout.nodes {
        let child = spawn_node(&binary, &args.data_dir, node, &layout, &lines_tx)?;
        children.push((node.node_id, child));
    }
    drop(lines_tx);
    eprintln!(
        "starting {} nodes in {} (logs below, prefixed with the node id)",
        layout.nodes.len(),
        args.data_dir.display()
    );

    let mut serving = std::collections::BTreeSet::new();
    let deadline = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(deadline);
    let outcome: anyhow::Result<()> = loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some((node, Some(line))) => {
                    eprintln!("[node {node}] {line}");
                    if line.contains("serving on") && serving.insert(node) && serving.len() == layout.nodes.len() {
                        print_usage(&layout);
                    }
                }
                Some((node, None)) => break Err(anyhow::anyhow!(
                    "node {node} exited; see its log above (a port taken by another process? \
                     remove {} to start afresh with new ports)",
                    args.data_dir.join(LAYOUT_FILE).display()
                )),
                None => break Ok(()),
            },
            () = &mut deadline, if serving.len() < layout.nodes.len() => break Err(anyhow::anyhow!(
                "only {} of {} nodes were serving after {} s; see their logs above",
                serving.len(), layout.nodes.len(), STARTUP_TIMEOUT.as_secs()
            )),
            _ = interrupt.recv() => break Ok(()),
            _ = terminate.recv() => break Ok(()),
        }
    };
    eprintln!("stopping the nodes");
    stop_all(children).await;
    // The nodes' last words.
    while let Ok((node, Some(line))) = lines.try_recv() {
        eprintln!("[node {node}] {line}");
    }
    outcome
}

fn print_usage(layout: &Layout) {
    let bootstrap = layout
        .nodes
        .iter()
        .map(|n| n.listen.as_str())
        .collect::<Vec<_>>()
        .join(",");
    println!();
    println!("the cluster is up; bootstrap list: {bootstrap}");
    println!("  export GREGOR_BOOTSTRAP={bootstrap}");
    println!("  gregor cluster status");
    println!("  gregor topic create orders --partitions 6 --replication-factor 3");
    println!("  echo hello | gregor produce orders");
    println!("  gregor consume orders --from earliest");
    println!("Ctrl-C stops every node; run the same command again to bring the cluster back.");
    println!();
}

/// The layout stored in `dir`, or a new one with free ports (written there) on first use.
fn layout(dir: &Path, nodes: u64) -> anyhow::Result<Layout> {
    let path = dir.join(LAYOUT_FILE);
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let layout: Layout = toml::from_str(&text).with_context(|| {
            format!(
                "{} is not a dev cluster layout; remove it, or pick another --data-dir",
                path.display()
            )
        })?;
        if layout.nodes.len() as u64 != nodes {
            bail!(
                "{} holds a cluster of {} nodes, not {nodes}; run with --nodes {} or pick \
                 another --data-dir",
                dir.display(),
                layout.nodes.len(),
                layout.nodes.len()
            );
        }
        return Ok(layout);
    }
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create {}; pick a writable --data-dir",
            dir.display()
        )
    })?;
    let mut taken = Vec::new();
    let mut layout = Layout { nodes: Vec::new() };
    for node_id in 1..=nodes {
        let listen = free_port(&mut taken, false)?;
        let peer = free_port(&mut taken, true)?;
        layout.nodes.push(NodeLayout {
            node_id,
            listen: format!("127.0.0.1:{listen}"),
            peer_listen: format!("127.0.0.1:{peer}"),
        });
    }
    let text = toml::to_string(&layout).context("encoding the layout")?;
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(layout)
}

/// A loopback port free for TCP (and UDP too when `udp`), not already handed out. The sockets
/// are closed before the nodes bind; another process may take the port meanwhile, which the
/// node then reports.
fn free_port(taken: &mut Vec<u16>, udp: bool) -> anyhow::Result<u16> {
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
        let port = tcp.local_addr().context("reading a bound port")?.port();
        if taken.contains(&port) || (udp && UdpSocket::bind(("127.0.0.1", port)).is_err()) {
            continue;
        }
        taken.push(port);
        return Ok(port);
    }
    bail!("found no free loopback port in 100 tries")
}

fn spawn_node(
    binary: &Path,
    dir: &Path,
    node: &NodeLayout,
    layout: &Layout,
    lines: &mpsc::UnboundedSender<(u64, Option<String>)>,
) -> anyhow::Result<Child> {
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .args(["--node-id", &node.node_id.to_string()])
        .arg("--data-dir")
        .arg(dir.join(format!("node-{}", node.node_id)))
        .args(["--listen", &node.listen])
        .args(["--peer-listen", &node.peer_listen]);
    // Node 1 founds the cluster; the others join through it. A node with data ignores this
    // and comes back as the member it was.
    if node.node_id != 1 {
        command.args(["--join", &layout.nodes[0].peer_listen]);
    }
    let voters = if layout.nodes.len() >= 3 { 3 } else { 1 };
    command
        .args(["--metadata-voters", &voters.to_string()])
        .env_remove("GREGOR_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start node {}", node.node_id))?;
    let id = node.node_id;
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let (out_tx, err_tx) = (lines.clone(), lines.clone());
    tokio::spawn(async move {
        let mut out = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = out.next_line().await {
            let _ = out_tx.send((id, Some(line)));
        }
    });
    tokio::spawn(async move {
        let mut err = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = err.next_line().await {
            let _ = err_tx.send((id, Some(line)));
        }
        // stderr closes when the process exits.
        let _ = err_tx.send((id, None));
    });
    Ok(child)
}

/// SIGTERM to every node, then waits for them (SIGKILL after 30 s).
async fn stop_all(children: Vec<(u64, Child)>) {
    for (_, child) in &children {
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) on a child we spawned and have not reaped; no memory effects.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    for (node, mut child) in children {
        match tokio::time::timeout(std::time::Duration::from_secs(30), child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => eprintln!("node {node} exited with {status}"),
            Ok(Err(e)) => eprintln!("node {node}: {e}"),
            Err(_) => {
                eprintln!("node {node} did not stop within 30 s; killing it");
                let _ = child.kill().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_is_kept_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = layout(dir.path(), 3).expect("new layout");
        assert_eq!(first.nodes.len(), 3);
        let ports: std::collections::BTreeSet<&str> = first
            .nodes
            .iter()
            .flat_map(|n| [n.listen.as_str(), n.peer_listen.as_str()])
            .collect();
        assert_eq!(ports.len(), 6, "every address distinct");
        assert_eq!(layout(dir.path(), 3).expect("reused"), first);
        let err = layout(dir.path(), 5).expect_err("another size");
        assert!(err.to_string().contains("--nodes 3"), "{err}");
    }
}
