//! Gregor's actors: the metadata service and the metadata leader's controller, the reconciler
//! that runs this node's replicas, partition replicas and group coordinators, and the typed
//! messages that are Gregor's public in-process API (see [`api`]).
//!
//! Each actor is a thin shell over an I/O-free core (`metadata::core`, `placement`,
//! `reconcile::plan`, `operations::planner`, `partition::core`, `groups::core`) that unit tests
//! drive directly. Actors reach storage and Raft only through
//! `gregor-cluster` and `gregor-storage`; they open no sockets or files themselves.

pub mod api;
mod directory;
mod fail_stop;
pub mod groups;
pub mod hints;
pub mod inbound;
pub mod liveness;
pub mod messages;
pub mod metadata;
pub mod node;
pub mod operations;
pub mod partition;
pub mod peers;
pub mod placement;
pub mod publisher;
pub mod reconcile;
pub mod shards;
mod storage_io;
#[cfg(test)]
mod testdata;

pub use node::{
    start_node, start_node_with, Broker, ClusterEnv, ClusterSettings, NodeConfig, NodeEnv,
    StartError, StorageSeam,
};
