//! The client-facing TCP server.
