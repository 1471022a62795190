//! The cluster's metadata: the commands of the metadata Raft group (group 0), the rules that
//! apply them ([`core`]), the rows they are stored in ([`rows`]) and the in-memory view every
//! node keeps ([`view`]).

pub mod command;
pub mod core;
pub mod machine;
pub mod records;
pub mod requests;
pub mod rows;
pub mod service;
pub mod validate;
pub mod view;

#[cfg(test)]
mod core_tests;
#[cfg(test)]
pub(crate) mod test_harness;

pub use self::command::{MetadataCommand, MetadataOutcome, Rejection};
pub use self::core::MetadataCore;
pub use self::machine::MetadataState;
pub use self::records::{NodeRecord, NodeState, PartitionAssignment, TopicRecord, TopicView};
pub use self::service::MetadataService;
pub use self::validate::OFFSETS_TOPIC;
pub use self::view::{HostedPartition, MetadataView};
