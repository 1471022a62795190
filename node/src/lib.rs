//! The `gregor` binary's library: configuration, the client-facing msgpack TCP server, the Rust
//! client library, the CLI and `perf`. It holds no broker logic: that lives in `gregor-actors`.

pub mod cli;
pub mod client;
pub mod config;
pub mod partitioner;
pub mod protocol;
pub mod server;
