//! Runs a simulation in a forked child process and brings its report back over a pipe.
//!
//! tokio seeds the generator of every new runtime (which `select!` draws from to pick among
//! ready branches) from a process-wide counter hashed with the thread's hash keys. The keys
//! follow the run's seed (see [`crate::determinism`]); the counter follows how many runtimes the
//! process made before. A child forked from a process that made none starts every run from the
//! same counter, so the n-th seed of a sweep replays exactly as when it runs alone.

use crate::check::Checker;
use crate::run::Report;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::Duration;

enum Answer {
    Report(Vec<u8>),
    TooLate,
}

/// Reads the pipe to its end, or until `limit` of wall time has passed.
fn read_until(pipe: &mut std::fs::File, limit: Option<Duration>) -> std::io::Result<Answer> {
    let Some(limit) = limit else {
        let mut bytes = Vec::new();
        pipe.read_to_end(&mut bytes)?;
        return Ok(Answer::Report(bytes));
    };
    let deadline = wall_clock() + limit;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(wall_clock());
        if left.is_zero() {
            return Ok(Answer::TooLate);
        }
        let mut poll = libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout_ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd, for a descriptor this function's caller owns.
        let ready = unsafe { libc::poll(&mut poll, 1, timeout_ms) };
        if ready < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        if ready == 0 {
            continue;
        }
        match pipe.read(&mut chunk)? {
            0 => return Ok(Answer::Report(bytes)),
            n => bytes.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The harness's own wall clock, for the per-run limit.
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> std::time::Instant {
    std::time::Instant::now()
}

/// Runs, once per process and before any fork, the one-time initialisations a child would
/// otherwise start itself: tokio sets up its signal handling in a process-wide `OnceLock` when
/// the first runtime is built. A fork taken while another test thread was inside that
/// initialisation left the child waiting for it for ever (a whole-run test hung in one run of
/// about ten with two tests forking at once). Callers wait here until it is done, so no fork
/// happens in the middle of it.
fn initialise_before_forking() {
    static INITIALISED: std::sync::Once = std::sync::Once::new();
    INITIALISED.call_once(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        drop(runtime);
    });
}

/// A report with the fields its JSON form leaves out.
#[derive(Serialize, Deserialize)]
struct Wire {
    report: Report,
    trace_tail: Vec<String>,
    plan: String,
    checkers: Vec<String>,
}

/// Runs `work` in a child process and returns its report; `Err` says how the child died
/// without one, or that it ran past `limit` of wall time and was killed (a busy loop in the
/// code under test never returns to the simulation's scheduler, so only this can end it).
///
/// # Panics
/// If no pipe or child process can be made.
pub fn in_child(work: impl FnOnce() -> Report, limit: Option<Duration>) -> Result<Report, String> {
    initialise_before_forking();
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe(2) failed");
    let [read_fd, write_fd] = fds;
    // SAFETY: the child only runs `work` (on a thread of its own) and writes to the pipe, then
    // leaves with _exit, running no destructor or handler of the parent's.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork(2) failed");
    if pid == 0 {
        // SAFETY: the child owns its copy of the read end, which it does not use.
        unsafe { libc::close(read_fd) };
        let report = work();
        let wire = Wire {
            trace_tail: report.trace_tail.clone(),
            plan: report.plan.clone(),
            checkers: report
                .checkers
                .iter()
                .map(|c| c.name().to_owned())
                .collect(),
            report,
        };
        // SAFETY: the write end belongs to this child alone from here.
        let mut pipe = unsafe { std::fs::File::from_raw_fd(write_fd) };
        let written = serde_json::to_vec(&wire)
            .map_err(std::io::Error::other)
            .and_then(|bytes| pipe.write_all(&bytes));
        // SAFETY: ends the child at once, as fork(2) children must.
        unsafe { libc::_exit(i32::from(written.is_err())) };
    }
    // SAFETY: the parent owns its copy of the write end, which it does not use.
    unsafe { libc::close(write_fd) };
    // SAFETY: the read end belongs to the parent alone.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(read_fd) };
    let read = read_until(&mut pipe, limit);
    if let Ok(Answer::TooLate) = read {
        // SAFETY: the child made above, not yet waited for, so its pid is still its own.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut status = 0;
    // SAFETY: waits for the child made above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let bytes = match read.map_err(|e| format!("reading the run's report failed: {e}"))? {
        Answer::Report(bytes) => bytes,
        Answer::TooLate => {
            return Err(format!(
                "hung: no report within {} s of wall time; the run was killed",
                limit.unwrap_or_default().as_secs()
            ))
        }
    };
    let wire: Wire = serde_json::from_slice(&bytes)
        .map_err(|e| format!("the run's process died without a report (status {status}): {e}"))?;
    let mut report = wire.report;
    report.trace_tail = wire.trace_tail;
    report.plan = wire.plan;
    report.checkers = wire
        .checkers
        .iter()
        .filter_map(|name| Checker::ALL.into_iter().find(|c| c.name() == name))
        .collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::in_child;
    use std::time::Duration;

    #[test]
    fn a_run_that_never_reports_is_killed_at_its_wall_limit_and_called_hung() {
        let died = in_child(
            || loop {
                std::thread::park();
            },
            Some(Duration::from_millis(300)),
        )
        .map(|report| report.seed)
        .expect_err("a run that never ends has no report");
        assert!(died.starts_with("hung:"), "{died}");
    }
}
