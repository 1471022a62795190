//! Consumer groups: committed offsets ([`core`]), one [`GroupCoordinator`] actor per group, and
//! the [`GroupRouter`] that finds (or starts) a group's coordinator.

pub mod assignor;
mod coordinator;
pub mod core;
pub mod membership;
pub mod records;
mod router;

pub use coordinator::GroupCoordinator;
pub use router::GroupRouter;
