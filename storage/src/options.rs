//! How a [`Store`](crate::Store) is opened.

/// When an acknowledged write reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// fsync (fdatasync) before an append counts as durable; concurrent appends share one fsync.
    #[default]
    Always,
    /// Leave it to the OS page cache (Kafka's default): survives a process crash, not power loss.
    Never,
}

/// Where fsyncs run. `Thread` in production; `Inline` in the deterministic simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// A dedicated `gregor-sync` thread gathers every pending request into one fsync, so the
    /// caller's thread (an async runtime) never blocks on the disk.
    #[default]
    Thread,
    /// `request_sync` fsyncs on the calling thread and calls back before it returns: no thread,
    /// so a simulation run stays a pure function of its seed.
    Inline,
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
