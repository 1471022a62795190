//! Consumer groups: committed offsets ([`core`]), one [`GroupCoordinator`] actor per group, and
//! the [`GroupRouter`] that finds (or starts) a group's coordinator.

mod coordinator;
pub mod core;
mod router;

pub use coordinator::GroupCoordinator;
pub use router::GroupRouter;
