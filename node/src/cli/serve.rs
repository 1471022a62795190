//! `gregor serve`.
