//! The command-line interface.
pub mod serve;
