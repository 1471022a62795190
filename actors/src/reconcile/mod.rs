//! Reconciliation: every node compares what the applied metadata assigns to it with the
//! replicas it runs and stores, and starts, stops and deletes replicas until they agree.
//! [`plan`] decides; the executor carries the plan out.

pub mod converge;
pub mod executor;
pub mod local;
pub mod plan;
#[cfg(test)]
mod tests;

pub use converge::Converger;
pub use executor::{PendingDeletions, Reconciler, ReplicaFactory, StopAll};
pub use local::{LocalRegistry, Registered, LOCAL_GROUP};
pub use plan::{plan, Action, Local, StartMode};
