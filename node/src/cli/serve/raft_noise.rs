//! async-raft 0.6.1 logs every AppendEntries or InstallSnapshot message it fails to send at
//! ERROR, one line per message: with one node down, every group led elsewhere logs a line per
//! heartbeat interval (560,000 lines in one run holding 3,000 partitions), which buries every
//! other line and costs CPU of its own. Those four events are counted instead, and a summary is
//! logged every 10 s while they occur. Everything else async-raft logs, its storage errors
//! included, is printed as before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::{dynamic_filter_fn, DynFilterFn};
use tracing_subscriber::layer::Context;

/// The lines of async-raft's per-message send failures in `src/replication/mod.rs`: sending an
/// AppendEntries failed or timed out (217, 222), sending an InstallSnapshot chunk failed or
/// timed out (803, 808). Valid for 0.6.1 only, which Cargo.toml pins with `=`: check them again
/// with any other version.
pub(super) const SEND_FAILURE_LINES: &[u32] = &[217, 222, 803, 808];

const REPLICATION_TARGET: &str = "async_raft::replication";

const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Send failures counted since the last report.
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

fn is_send_failure(meta: &Metadata<'_>, lines: &[u32]) -> bool {
    meta.is_event()
        && *meta.level() == Level::ERROR
        && meta.target() == REPLICATION_TARGET
        && meta.line().is_some_and(|line| lines.contains(&line))
}

type IsEnabled<S> = Box<dyn Fn(&Metadata<'_>, &Context<'_, S>) -> bool + Send + Sync>;
type CallsiteInterest =
    Box<dyn Fn(&'static Metadata<'static>) -> tracing::subscriber::Interest + Send + Sync>;

/// A global filter that drops (and counts) async-raft's send failures at `lines`. Their
/// callsites are asked about on every event (`sometimes`), since a cached `never` would skip
/// the count; every other callsite is enabled for good.
pub(super) fn filter<S>(lines: &'static [u32]) -> DynFilterFn<S, IsEnabled<S>, CallsiteInterest> {
    let enabled: IsEnabled<S> = Box::new(move |meta, _| {
        if is_send_failure(meta, lines) {
            SUPPRESSED.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    });
    let interest: CallsiteInterest = Box::new(move |meta| {
        if is_send_failure(meta, lines) {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::always()
        }
    });
    dynamic_filter_fn(enabled).with_callsite_filter(interest)
}

/// Takes the count of send failures since the last call.
fn take_suppressed() -> u64 {
    SUPPRESSED.swap(0, Ordering::Relaxed)
}

/// Logs how many send failures were dropped, every [`REPORT_EVERY`] while there are any.
pub(super) async fn report() {
    let mut every = tokio::time::interval(REPORT_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        let failed = take_suppressed();
        if failed > 0 {
            tracing::warn!(
                failed,
                "Raft messages to other nodes could not be sent in the last {} s (a node is \
                 down, cut off or slow; `gregor cluster status` shows which); async-raft's \
                 per-message errors are counted here instead of logged",
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

    /// The line of the send failure `emit_send_failure` logs (the line after this one's
    /// `line!()` plus four).
    fn send_failure_line() -> u32 {
        line!() + 4
    }

    fn emit_send_failure() {
        tracing::error!(target: "async_raft::replication", "send failed");
    }

    #[test]
    fn send_failures_are_counted_not_printed_and_other_errors_pass() {
        static LINES: OnceLock<[u32; 1]> = OnceLock::new();
        let lines: &'static [u32] = LINES.get_or_init(|| [send_failure_line()]);
        let printed = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry()
            .with(filter(lines))
            .with(Recorder(printed.clone()));
        tracing::subscriber::with_default(subscriber, || {
            take_suppressed();
            emit_send_failure();
            emit_send_failure();
            tracing::error!(target: "async_raft::replication", "error fetching logs from storage");
            tracing::error!(target: "gregor_cluster::dispatch", "something of ours");
        });
        assert_eq!(take_suppressed(), 2);
        assert_eq!(
            *printed.lock().unwrap(),
            vec!["async_raft::replication", "gregor_cluster::dispatch"]
        );
    }

    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorder {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let target = event.metadata().target().to_string();
            self.0.lock().unwrap().push(target);
        }
    }
}
