//! The `gregor` binary's library: configuration, the client-facing msgpack TCP server, the CLI
//! and `perf`. It holds no broker logic (that lives in `gregor-actors`), no wire types (those
//! are `gregor-protocol`'s) and no client logic: the CLI and `perf` use `gregor-client`.

pub mod cli;
pub mod config;
pub mod server;

/// The client library, for code that reached it here before it became its own crate.
pub use gregor_client as client;
