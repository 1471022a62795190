//! Topics: the table ([`core`]) and the [`TopicManager`] actor that replicates it through the
//! metadata Raft group and starts the partition replicas.

pub mod core;
mod manager;

pub use self::core::{TopicCore, TopicRecord, OFFSETS_TOPIC};
pub(crate) use manager::{AttachGroups, ReplicaFactory};
pub use manager::{Shutdown, TopicManager};
