//! async-raft 0.6.1 logs every message it fails to send at ERROR, one line per message: with
//! one node down, every group led elsewhere logs a line per heartbeat interval (560,000 lines
//! in one run holding 3,000 partitions), and in an election storm every candidate logs a line
//! per vote request that timed out (10,000 lines a second in one run holding 2,850 replicas per
//! node). Those lines bury every other line and cost CPU of their own, in the node and in
//! whatever collects its output. They are counted instead, and a summary is logged every 10 s
//! while they occur. Everything else async-raft logs, its storage errors included, is printed
//! as before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::{dynamic_filter_fn, DynFilterFn};
use tracing_subscriber::layer::Context;

/// An ERROR event of async-raft's counted instead of printed: its callsite's target and line,
/// and what it counts towards.
#[derive(Debug, Clone, Copy)]
pub(super) struct Noisy {
    pub target: &'static str,
    pub line: u32,
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// An AppendEntries or InstallSnapshot message not sent or not answered in time.
    Replication,
    /// A vote request not sent or not answered in time.
    Vote,
}

/// The per-message failures of our copy of async-raft 0.6.1 (`cluster/vendor/async-raft`):
/// sending an AppendEntries failed or timed out (`src/replication/mod.rs` 221, 226), sending an
/// InstallSnapshot chunk failed or timed out (813, 818), a vote request failed or timed out
/// (`src/core/vote.rs` 156). Lines move with any change to those files:
/// `the_counted_lines_are_async_raft_send_failures` reads the source and says so.
pub(super) const ASYNC_RAFT_SEND_FAILURES: &[Noisy] = &[
    replication(221),
    replication(226),
    replication(813),
    replication(818),
    Noisy {
        target: "async_raft::core::vote",
        line: 156,
        kind: Kind::Vote,
    },
];

const fn replication(line: u32) -> Noisy {
    Noisy {
        target: "async_raft::replication",
        line,
        kind: Kind::Replication,
    }
}

const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Failures counted since the last report, by kind.
static REPLICATION_FAILURES: AtomicU64 = AtomicU64::new(0);
static VOTE_FAILURES: AtomicU64 = AtomicU64::new(0);

fn counter(kind: Kind) -> &'static AtomicU64 {
    match kind {
        Kind::Replication => &REPLICATION_FAILURES,
        Kind::Vote => &VOTE_FAILURES,
    }
}

fn noisy(meta: &Metadata<'_>, events: &[Noisy]) -> Option<Kind> {
    if !meta.is_event() || *meta.level() != Level::ERROR {
        return None;
    }
    let line = meta.line()?;
    events
        .iter()
        .find(|e| e.line == line && e.target == meta.target())
        .map(|e| e.kind)
}

type IsEnabled<S> = Box<dyn Fn(&Metadata<'_>, &Context<'_, S>) -> bool + Send + Sync>;
type CallsiteInterest =
    Box<dyn Fn(&'static Metadata<'static>) -> tracing::subscriber::Interest + Send + Sync>;

/// A global filter that drops (and counts) the events of `events`. Their callsites are asked
/// about on every event (`sometimes`), since a cached `never` would skip the count; every other
/// callsite is enabled for good.
pub(super) fn filter<S>(
    events: &'static [Noisy],
) -> DynFilterFn<S, IsEnabled<S>, CallsiteInterest> {
    let enabled: IsEnabled<S> = Box::new(move |meta, _| match noisy(meta, events) {
        Some(kind) => {
            counter(kind).fetch_add(1, Ordering::Relaxed);
            false
        }
        None => true,
    });
    let interest: CallsiteInterest = Box::new(move |meta| {
        if noisy(meta, events).is_some() {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::always()
        }
    });
    dynamic_filter_fn(enabled).with_callsite_filter(interest)
}

/// Takes the count of failures of `kind` since the last call.
fn take_counted(kind: Kind) -> u64 {
    counter(kind).swap(0, Ordering::Relaxed)
}

/// Logs how many send failures were dropped, every [`REPORT_EVERY`] while there are any.
pub(super) async fn report() {
    let mut every = tokio::time::interval(REPORT_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        let failed = take_counted(Kind::Replication);
        if failed > 0 {
            tracing::warn!(
                failed,
                "Raft messages to other nodes could not be sent in the last {} s (a node is \
                 down, cut off or slow; `gregor cluster status` shows which); async-raft's \
                 per-message errors are counted here instead of logged",
                REPORT_EVERY.as_secs()
            );
        }
        let failed = take_counted(Kind::Vote);
        if failed > 0 {
            tracing::warn!(
                failed,
                "vote requests to other nodes got no answer in the last {} s (a node is down, \
                 cut off or overloaded; many at once mean many partitions are electing \
                 leaders); async-raft's per-request errors are counted here instead of logged",
                REPORT_EVERY.as_secs()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex, OnceLock};
    use tracing_subscriber::layer::SubscriberExt;

    /// The line of the replication failure `emit_failure` logs, five below this `line!()`; the
    /// vote failure's is the next.
    fn failure_line() -> u32 {
        line!() + 5
    }

    fn emit_failure(target: &'static str) {
        match target {
            "async_raft::replication" => tracing::error!(target: "async_raft::replication", "x"),
            _ => tracing::error!(target: "async_raft::core::vote", "x"),
        }
    }

    #[test]
    fn send_and_vote_failures_are_counted_not_printed_and_other_errors_pass() {
        static EVENTS: OnceLock<[Noisy; 2]> = OnceLock::new();
        let events: &'static [Noisy] = EVENTS.get_or_init(|| {
            let line = failure_line();
            [
                Noisy {
                    line,
                    ..replication(0)
                },
                Noisy {
                    target: "async_raft::core::vote",
                    line: line + 1,
                    kind: Kind::Vote,
                },
            ]
        });
        let printed = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry()
            .with(filter(events))
            .with(Recorder(printed.clone()));
        tracing::subscriber::with_default(subscriber, || {
            take_counted(Kind::Replication);
            take_counted(Kind::Vote);
            emit_failure("async_raft::replication");
            emit_failure("async_raft::replication");
            emit_failure("async_raft::core::vote");
            tracing::error!(target: "async_raft::replication", "error fetching logs from storage");
            tracing::error!(target: "async_raft::core::vote", "another line of the same module");
            tracing::error!(target: "gregor_cluster::dispatch", "something of ours");
        });
        assert_eq!(take_counted(Kind::Replication), 2);
        assert_eq!(take_counted(Kind::Vote), 1);
        assert_eq!(
            *printed.lock().unwrap(),
            vec![
                "async_raft::replication",
                "async_raft::core::vote",
                "gregor_cluster::dispatch"
            ]
        );
    }

    /// Each counted line of the vendored source is an ERROR event about a message not sent,
    /// not answered or timed out; a patch that moves them breaks this, not the filter silently.
    #[test]
    fn the_counted_lines_are_async_raft_send_failures() {
        let vendored = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../cluster/vendor/async-raft/src");
        for noisy in ASYNC_RAFT_SEND_FAILURES {
            let file = match noisy.target {
                "async_raft::replication" => "replication/mod.rs",
                "async_raft::core::vote" => "core/vote.rs",
                other => panic!("no source file known for target {other}"),
            };
            let source = std::fs::read_to_string(vendored.join(file)).unwrap();
            let line = source.lines().nth(noisy.line as usize - 1).unwrap_or("");
            let about_a_send = ["sending", "requesting vote"]
                .iter()
                .any(|what| line.contains(what));
            assert!(
                line.contains("tracing::error!") && about_a_send,
                "{file}:{} is not a send failure: {line}",
                noisy.line
            );
        }
    }

    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorder {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let target = event.metadata().target().to_string();
            self.0.lock().unwrap().push(target);
        }
    }
}
