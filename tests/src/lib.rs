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

/// A free loopback port (the OS picks it; the listener is closed before the node binds it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("binding an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
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
        let mut child = Command::new(gregor_binary())
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", address])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting gregor serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
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
