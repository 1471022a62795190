//! The Rust client for Gregor: [`Admin`], [`Producer`] and [`Consumer`] over Gregor's msgpack
//! TCP protocol, on tokio. It depends on the protocol crate (`gregor-protocol`) and nothing of
//! the broker: no actix, no Raft, no storage engine.
//!
//! Layers, bottom up: a [`Connection`] pipelines requests to one broker; a [`Cluster`] keeps a
//! connection per broker, routes each request (to a partition's leader when it must) and
//! retries retriable failures; the three clients build on it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), gregor_client::ClientError> {
//! use gregor_client::{Producer, ProducerConfig, ProducerRecord};
//! let producer = Producer::connect(ProducerConfig::new("127.0.0.1:9092")).await?;
//! let delivery = producer.send(ProducerRecord::new("orders", b"hello").key(b"customer-7")).await?;
//! let metadata = delivery.await?;
//! println!("stored at {}/{:?}", metadata.partition, metadata.offset);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod admin;
mod clock;
mod cluster;
mod connection;
mod consumer;
mod error;
mod producer;

pub use admin::{Admin, NewTopic};
pub use clock::{Clock, SystemClock};
pub use cluster::{ClientConfig, Cluster, Route, TopicIncarnation, DEFAULT_BOOTSTRAP};
pub use connection::{
    BrokerStream, ConnectFuture, Connection, ConnectionConfig, Connector, PendingReply,
    PendingWrite,
};
pub use consumer::{
    AutoOffsetReset, Consumer, ConsumerConfig, ConsumerRecord, MembershipView, RebalanceListener,
    SeekTo, TopicPartition,
};
pub use error::ClientError;
/// The wire types the client's API speaks in (requests, replies, ids, record batches).
pub use gregor_protocol as protocol;
pub use producer::{
    BatchObserver, BatchOutcome, DeliveryHandle, Header, PartitionFn, Partitioner, Producer,
    ProducerConfig, ProducerRecord, RecordMetadata,
};

/// A seed for the client's random choices when the caller gives none.
///
/// This is the one place the client library reads the wall clock for randomness: everything
/// else draws from generators seeded by [`ClientConfig::seed`], so a run with a fixed seed
/// replays (the simulation sets one).
#[allow(clippy::disallowed_methods)]
pub fn seed_from_clock() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // splitmix64, so that seeds taken a moment apart differ in every bit.
    let mut z = nanos.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
