//! Gregor's wire protocol: what a client and a broker say to each other, and nothing else.
//!
//! - [`api`]: the typed requests, replies and error codes, and the one table of request kinds;
//! - [`frame`]: the length-prefixed msgpack framing of requests and replies;
//! - [`batch`]: Kafka's v2 record batch format, in which records travel and are stored;
//! - [`partitioner`]: Kafka's murmur2 key partitioner, so keys land where Kafka clients put them;
//! - [`ids`]: the identifier newtypes.
//!
//! It holds no I/O beyond reading a frame from a tokio stream, no broker logic and no client
//! logic: the broker (`gregor`) and the client library (`gregor-client`) both build on it.
//! With the `actix` feature every request is also an `actix::Message` (the broker's actors
//! use the same types in-process); clients leave it off. PROTOCOL.md is the full description.

pub mod api;
pub mod batch;
pub mod frame;
pub mod ids;
pub mod partitioner;

pub use ids::{NodeId, Offset, PartitionId, TopicId};
