//! How a [`Store`](crate::Store) is opened.

use crate::SyncJob;
use std::sync::Arc;

/// When an acknowledged write reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// fsync (fdatasync) before an append counts as durable; concurrent appends share one fsync.
    #[default]
    Always,
    /// Leave it to the OS page cache (Kafka's default): survives a process crash, not power loss.
    Never,
}

/// Where fsyncs run. `Thread` in production; `Inline` or `External` in the deterministic
/// simulation.
#[derive(Debug, Clone, Default)]
pub enum SyncMode {
    /// A dedicated `gregor-sync` thread gathers every pending request into one fsync, so the
    /// caller's thread (an async runtime) never blocks on the disk.
    #[default]
    Thread,
    /// `request_sync` fsyncs on the calling thread and calls back before it returns: no thread,
    /// so a simulation run stays a pure function of its seed.
    Inline,
    /// `request_sync` hands a [`SyncJob`] to the runner, which runs it when the fsync is to
    /// complete (the simulation, after a virtual-time delay, to model a slow disk) or drops it
    /// (the node died first). No thread either.
    External(SyncRunner),
}

/// Takes the sync jobs of a store opened with `SyncMode::External`.
#[derive(Clone)]
pub struct SyncRunner(Arc<dyn Fn(SyncJob) + Send + Sync>);

impl SyncRunner {
    pub fn new(run: impl Fn(SyncJob) + Send + Sync + 'static) -> SyncRunner {
        SyncRunner(Arc::new(run))
    }

    pub(crate) fn run(&self, job: SyncJob) {
        (self.0)(job);
    }
}

impl std::fmt::Debug for SyncRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncRunner")
    }
}

/// Block cache used when the caller has no better number.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub flush: FlushPolicy,
    pub sync_mode: SyncMode,
    /// fjall's block cache. Memtables come on top of it (see `store.rs` for their sizes).
    pub cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            flush: FlushPolicy::default(),
            sync_mode: SyncMode::default(),
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

#[cfg(test)]
impl StoreOptions {
    /// What the storage's own tests run with: every write fsynced, a small cache.
    pub(crate) fn for_tests(sync_mode: SyncMode) -> StoreOptions {
        StoreOptions {
            flush: FlushPolicy::Always,
            sync_mode,
            cache_bytes: 1 << 20,
        }
    }
}
