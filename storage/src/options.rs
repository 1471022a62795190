//! How the store is opened: durability policy and where fsyncs run.

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
    #[default]
    Thread,
    Inline,
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub flush: FlushPolicy,
    pub sync_mode: SyncMode,
    pub cache_bytes: u64,
}
