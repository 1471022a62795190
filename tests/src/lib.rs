//! Harness for Gregor's end-to-end tests: builds the real `gregor` binary once, starts it as a
//! child process on a free loopback port with a temporary data directory, and drives it
//! through the CLI. The tests themselves are in `tests/tests/`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

/// How long a node may take to print that it is serving.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds `gregor` (same profile as the tests) once per test process and returns its path.
///
/// # Panics
/// If the build fails: nothing can be tested without the binary.
pub fn gregor_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "--quiet", "-p", "gregor", "--bin", "gregor"])
            .current_dir(manifest);
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        if profile == "release" {
            build.arg("--release");
        }
        let status = build
            .status()
            .expect("running cargo build for the gregor binary");
        assert!(status.success(), "building the gregor binary failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest.parent().expect("workspace root").join("target"));
        let binary = target.join(profile).join("gregor");
        assert!(binary.exists(), "no binary at {}", binary.display());
        binary
    })
}

/// Ports handed to nodes come from below Linux's ephemeral range (32768-60999 by default): a
/// port the OS picked as ephemeral and that was closed again for the node to bind could be
/// taken meanwhile as the local port of any outgoing connection (the tests run many), and the
/// node then failed to start with `Address already in use`.
const NODE_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free loopback port for a node: never handed out twice by this process (each test binary
/// starts at its own place in the range), bound once to check it is free, then closed before
/// the node binds it.
pub fn free_port() -> u16 {
    static NEXT: std::sync::OnceLock<std::sync::atomic::AtomicU32> = std::sync::OnceLock::new();
    let span = u32::from(NODE_PORTS.end - NODE_PORTS.start);
    let next = NEXT.get_or_init(|| std::sync::atomic::AtomicU32::new(std::process::id() % span));
    for _ in 0..span {
        let offset = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % span;
        let port = NODE_PORTS.start + offset as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {NODE_PORTS:?}");
}

/// One running `gregor serve` process.
pub struct Node {
    child: Child,
    pub address: String,
    pub data_dir: PathBuf,
    stderr_lines: mpsc::Receiver<String>,
}

impl Node {
    /// Starts a node on `address` with `data_dir` and waits until it says it is serving.
    ///
    /// # Panics
    /// If it exits or stays silent past the startup timeout.
    pub fn start(data_dir: &Path, address: &str) -> Node {
        Node::start_with(data_dir, address, &[])
    }

    /// [`Node::start`] with more `gregor serve` arguments (`--node-id`, `--peer-listen`, ...).
    ///
    /// # Panics
    /// As [`Node::start`].
    pub fn start_with(data_dir: &Path, address: &str, args: &[String]) -> Node {
        let mut child = Command::new(gregor_binary())
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", address])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("GREGOR_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting gregor serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // GREGOR_TEST_ECHO=1 copies every node's log to the test's stderr, prefixed by its
        // address: the way to see what a cluster did in a failing run.
        let echo = std::env::var_os("GREGOR_TEST_ECHO").is_some();
        let prefix = address.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("[{prefix}] {line}");
                }
                if tx.send(line).is_err() && !echo {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(STARTUP_TIMEOUT) {
                Ok(line) if line.contains("serving on") => break,
                Ok(line) => seen.push(line),
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "gregor did not start serving on {address}; it said:\n{}",
                        seen.join("\n")
                    );
                }
            }
        }
        Node {
            child,
            address: address.to_string(),
            data_dir: data_dir.to_path_buf(),
            stderr_lines: rx,
        }
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, ...) to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "sending signal {signal}");
    }

    /// Starts a node on a free port.
    pub fn start_fresh(data_dir: &Path) -> Node {
        Node::start(data_dir, &format!("127.0.0.1:{}", free_port()))
    }

    /// Runs a client command against this node.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_stdin(args, b"")
    }

    /// Runs a client command with `stdin` as its standard input.
    pub fn cli_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = Command::new(gregor_binary())
            .args(args)
            .env("GREGOR_BOOTSTRAP", &self.address)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting a gregor client command");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(stdin)
            .expect("writing stdin");
        child
            .wait_with_output()
            .expect("waiting for the client command")
    }

    /// `kill -9`: no shutdown path runs.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit; returns the exit status and everything it logged
    /// after startup.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "sending SIGTERM");
        let status = self.child.wait().expect("waiting for gregor to exit");
        let lines = self.stderr_lines.try_iter().collect();
        (status, lines)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard output of a finished command, asserting it succeeded.
///
/// # Panics
/// If the command failed; the message has its stderr.
pub fn success(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed ({}): stdout={} stderr={}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8 output")
}

/// Standard error of a finished command, asserting it failed.
///
/// # Panics
/// If the command succeeded.
pub fn failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "command unexpectedly succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr.clone()).expect("utf-8 output")
}

/// A loopback port free for both TCP and UDP (a peer port carries both).
pub fn free_peer_port() -> u16 {
    loop {
        let port = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Polls `done` until it holds or `within` passes; returns how long it took.
///
/// # Panics
/// When the deadline passes first, saying what was awaited.
pub fn eventually(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = wall_clock();
    while !done() {
        assert!(
            started.elapsed() < within,
            "{what}: not within {} s",
            within.as_secs_f64()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

/// Where one node of a [`ProcessCluster`] lives; kept across restarts.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub id: u64,
    pub listen: String,
    pub peer_listen: String,
    pub data_dir: PathBuf,
}

/// N `gregor serve` processes on loopback forming one cluster: node 1 founds it, the others
/// join through it. Nodes can be killed, stopped, restarted and added.
pub struct ProcessCluster {
    _dir: tempfile::TempDir,
    root: PathBuf,
    pub specs: Vec<NodeSpec>,
    pub nodes: std::collections::BTreeMap<u64, Node>,
    /// Extra `serve` arguments every node gets (timeouts, voters).
    pub serve_args: Vec<String>,
}

impl ProcessCluster {
    /// Starts `n` nodes at once and waits until every one serves.
    pub fn start(n: u64, serve_args: &[&str]) -> ProcessCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let mut cluster = ProcessCluster {
            _dir: dir,
            root,
            specs: Vec::new(),
            nodes: std::collections::BTreeMap::new(),
            serve_args: serve_args.iter().map(|s| s.to_string()).collect(),
        };
        for _ in 0..n {
            cluster.add_spec();
        }
        let ids: Vec<u64> = cluster.specs.iter().map(|s| s.id).collect();
        cluster.start_nodes(&ids);
        cluster
    }

    fn add_spec(&mut self) -> u64 {
        let id = self.specs.len() as u64 + 1;
        self.specs.push(NodeSpec {
            id,
            listen: format!("127.0.0.1:{}", free_port()),
            peer_listen: format!("127.0.0.1:{}", free_peer_port()),
            data_dir: self.root.join(format!("node-{id}")),
        });
        id
    }

    fn spec(&self, id: u64) -> &NodeSpec {
        &self.specs[id as usize - 1]
    }

    fn args_of(&self, id: u64) -> Vec<String> {
        let spec = self.spec(id);
        let mut args = vec![
            "--node-id".to_string(),
            id.to_string(),
            "--peer-listen".to_string(),
            spec.peer_listen.clone(),
        ];
        if id != 1 {
            args.push("--join".into());
            args.push(self.specs[0].peer_listen.clone());
        }
        args.extend(self.serve_args.iter().cloned());
        args
    }

    /// Starts the given (stopped) nodes concurrently and waits until each serves.
    pub fn start_nodes(&mut self, ids: &[u64]) {
        let started: Vec<(u64, Node)> = std::thread::scope(|scope| {
            let handles: Vec<_> = ids
                .iter()
                .map(|&id| {
                    let spec = self.spec(id).clone();
                    let args = self.args_of(id);
                    scope.spawn(move || (id, Node::start_with(&spec.data_dir, &spec.listen, &args)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a node failed to start"))
                .collect()
        });
        self.nodes.extend(started);
    }

    /// Adds and starts one more node, joining through node 1.
    pub fn add_node(&mut self) -> u64 {
        let id = self.add_spec();
        self.start_nodes(&[id]);
        id
    }

    /// Every node's client address, as a bootstrap list.
    pub fn bootstrap(&self) -> String {
        self.specs
            .iter()
            .map(|s| s.listen.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client address of node `id`.
    pub fn address(&self, id: u64) -> String {
        self.spec(id).listen.clone()
    }

    /// `kill -9` node `id`; its data stays for a restart.
    pub fn kill9(&mut self, id: u64) {
        self.nodes.remove(&id).expect("a running node").kill9();
    }

    /// SIGTERM every node and wait, then start them all again; returns once every node serves.
    pub fn restart_all(&mut self) {
        let nodes = std::mem::take(&mut self.nodes);
        for (_, node) in nodes {
            let (status, lines) = node.terminate();
            assert!(status.success(), "a node did not stop cleanly: {lines:?}");
        }
        let ids: Vec<u64> = self.specs.iter().map(|s| s.id).collect();
        self.start_nodes(&ids);
    }

    /// Runs a client command with every node as bootstrap.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(gregor_binary())
            .args(args)
            .env("GREGOR_BOOTSTRAP", self.bootstrap())
            .stdin(Stdio::null())
            .output()
            .expect("running a gregor client command")
    }
}

/// Real processes run on wall time: these tests measure and wait in it, outside any simulation.
#[allow(clippy::disallowed_methods)]
pub fn wall_clock() -> std::time::Instant {
    std::time::Instant::now()
}
