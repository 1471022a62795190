//! The crate's one error type.

use crate::Offset;

/// Why a storage call failed.
///
/// `OffsetOutOfRange` is an operating condition the caller answers; everything else means this
/// store cannot be trusted to serve the group (or, for `Poisoned`, anything) any more.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: Offset,
        log_start: Offset,
        log_end: Offset,
    },
    #[error("storage is corrupt: {0}")]
    Corrupt(String),
    /// The caller handed in something that cannot be stored (a programming error upstream, but
    /// one that must not reach the disk).
    #[error("entry {index} cannot be stored: {reason}")]
    InvalidEntry { index: u64, reason: &'static str },
    /// A log write would replace or remove an entry the state machine already applied: the
    /// consensus layer is broken and continuing would make replicas diverge.
    #[error("log write would change applied entry {index} (last applied {last_applied})")]
    AppliedEntryConflict { index: u64, last_applied: u64 },
    /// A write or fsync failed earlier; nothing this store says can be trusted until restart.
    #[error("storage is poisoned by an earlier failure: {0}")]
    Poisoned(String),
    #[error("storage i/o failed")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Fjall(#[from] fjall::Error),
}

impl StorageError {
    pub(crate) fn corrupt(what: impl Into<String>) -> StorageError {
        StorageError::Corrupt(what.into())
    }
}
