//! Gregor's actors: the topic manager, partition replicas and group coordinators, and the typed
//! messages that are Gregor's public in-process API (see [`api`]).
//!
//! Each actor is a thin shell over an I/O-free core (`topics::core`, `partition::core`,
//! `groups::core`) that unit tests drive directly. Actors reach storage and Raft only through
//! `gregor-cluster` and `gregor-storage`; they open no sockets or files themselves.

pub mod api;
mod directory;
pub mod groups;
pub mod node;
pub mod partition;
pub mod topics;

pub use node::{start_node, start_node_with, Broker, NodeConfig, NodeEnv, StartError, StorageSeam};
