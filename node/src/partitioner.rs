//! Key partitioner.
