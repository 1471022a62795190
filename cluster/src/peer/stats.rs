//! Counters of one transport, all peers together.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the counters. Frames against messages shows the coalescing at work: an idle
/// node with thousands of groups should send a handful of frames per heartbeat interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    pub frames_out: u64,
    pub messages_out: u64,
    pub bytes_out: u64,
    pub frames_in: u64,
    pub messages_in: u64,
    pub bytes_in: u64,
    /// Handshakes completed, dialed or accepted.
    pub connections: u64,
    /// Handshakes this node refused or saw refused (wrong cluster, wrong node, rule broken).
    pub handshakes_refused: u64,
    pub requests_timed_out: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    frames_out: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
    frames_in: AtomicU64,
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    connections: AtomicU64,
    handshakes_refused: AtomicU64,
    requests_timed_out: AtomicU64,
}

fn add(counter: &AtomicU64, amount: u64) {
    counter.fetch_add(amount, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn frame_out(&self, messages: usize, bytes: usize) {
        add(&self.frames_out, 1);
        add(&self.messages_out, messages as u64);
        add(&self.bytes_out, bytes as u64);
    }

    pub(crate) fn frame_in(&self, messages: usize, bytes: usize) {
        add(&self.frames_in, 1);
        add(&self.messages_in, messages as u64);
        add(&self.bytes_in, bytes as u64);
    }

    pub(crate) fn connected(&self) {
        add(&self.connections, 1);
    }

    pub(crate) fn handshake_refused(&self) {
        add(&self.handshakes_refused, 1);
    }

    pub(crate) fn request_timed_out(&self) {
        add(&self.requests_timed_out, 1);
    }

    pub(crate) fn snapshot(&self) -> PeerStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        PeerStats {
            frames_out: read(&self.frames_out),
            messages_out: read(&self.messages_out),
            bytes_out: read(&self.bytes_out),
            frames_in: read(&self.frames_in),
            messages_in: read(&self.messages_in),
            bytes_in: read(&self.bytes_in),
            connections: read(&self.connections),
            handshakes_refused: read(&self.handshakes_refused),
            requests_timed_out: read(&self.requests_timed_out),
        }
    }
}
