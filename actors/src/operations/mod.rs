//! The metadata leader's operations: registering nodes, growing the metadata group, moving
//! replicas (drain, dead nodes, spreading) and balancing leaders. [`planner`] decides each
//! round, free of I/O; the controller carries the plan out, throttled.

pub mod controller;
pub mod planner;
#[cfg(test)]
mod tests;

pub use controller::Controller;
pub use planner::{plan, LiveNode, Observed, OperationSettings, Plan, StepDown, VoterTarget};
