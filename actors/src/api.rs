//! The public API: the typed requests and replies of `gregor-protocol`, which are also the
//! actors' in-process messages (the protocol crate's `actix` feature makes each request an
//! `actix::Message`). Re-exported here so that code written against the actors keeps one path.

pub use gregor_protocol::api::*;
