//! Gregor's actors: the topic manager, partition replicas and group coordinators, and the typed
//! messages that are Gregor's public in-process API (see [`api`]).

pub mod api;
pub mod node;

pub use node::{start_node, Broker, NodeConfig, StartError};
