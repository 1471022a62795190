//! Which brokers failed recently, and until when they are skipped: Kafka's reconnect backoff.
//!
//! A broker that cannot be reached, drops a connection or lets a request time out is skipped
//! for a while, doubling with each consecutive failure, so that metadata requests and requests
//! any broker may serve go to a live one, and a dead leader is not dialled in a tight loop. One
//! success forgets its failures. Free of I/O: the caller says what time it is.

use gregor_protocol::NodeId;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// A broker as the client knows it: by id once a handshake told it, else by address (a
/// bootstrap address not reached yet).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Broker {
    Node(NodeId),
    Address(String),
}

impl std::fmt::Display for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Broker::Node(node) => write!(f, "node {node}"),
            Broker::Address(addr) => f.write_str(addr),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    consecutive: u32,
    skip_until: Instant,
}

/// The reconnect backoff of every broker that failed since it last answered.
#[derive(Debug)]
pub(crate) struct Health {
    first: Duration,
    max: Duration,
    failed: BTreeMap<Broker, Failures>,
}

impl Health {
    /// Skips a broker for `first` after one failure, doubling per further failure up to `max`.
    pub(crate) fn new(first: Duration, max: Duration) -> Health {
        assert!(
            first <= max,
            "reconnect backoff: first {first:?} above max {max:?}"
        );
        Health {
            first,
            max,
            failed: BTreeMap::new(),
        }
    }

    /// Records a failure at `now`; returns how long the broker is now skipped.
    pub(crate) fn failed(&mut self, broker: Broker, now: Instant) -> Duration {
        let consecutive = self
            .failed
            .get(&broker)
            .map_or(1, |f| f.consecutive.saturating_add(1));
        let skip = self
            .first
            .saturating_mul(1u32 << (consecutive - 1).min(16))
            .min(self.max);
        self.failed.insert(
            broker,
            Failures {
                consecutive,
                skip_until: now + skip,
            },
        );
        skip
    }

    /// The broker answered: it is healthy again.
    pub(crate) fn succeeded(&mut self, broker: &Broker) {
        self.failed.remove(broker);
    }

    /// When the broker may be tried again, if it is skipped at `now`.
    pub(crate) fn skipped_until(&self, broker: &Broker, now: Instant) -> Option<Instant> {
        self.failed
            .get(broker)
            .map(|f| f.skip_until)
            .filter(|until| *until > now)
    }

    /// How many times in a row the broker failed.
    pub(crate) fn consecutive_failures(&self, broker: &Broker) -> u32 {
        self.failed.get(broker).map_or(0, |f| f.consecutive)
    }

    /// `candidates` in the order to try them: those not skipped first (in the given order),
    /// then the skipped ones, soonest available first, so that a caller with nowhere else to go
    /// still tries the best of the bad.
    pub(crate) fn order<T>(&self, candidates: Vec<(Broker, T)>, now: Instant) -> Vec<(Broker, T)> {
        let (mut skipped, mut healthy): (Vec<_>, Vec<_>) = candidates
            .into_iter()
            .partition(|(broker, _)| self.skipped_until(broker, now).is_some());
        skipped.sort_by_key(|(broker, _)| self.skipped_until(broker, now));
        healthy.append(&mut skipped);
        healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn node(id: u64) -> Broker {
        Broker::Node(NodeId(id))
    }

    #[test]
    fn a_failing_broker_is_skipped_for_longer_each_time_up_to_the_cap() {
        let mut health = Health::new(50 * MS, 1000 * MS);
        let now = Instant::now();
        let skips: Vec<Duration> = (0..7).map(|_| health.failed(node(1), now)).collect();
        assert_eq!(
            skips,
            [50, 100, 200, 400, 800, 1000, 1000].map(|ms| ms * MS)
        );
        assert_eq!(health.consecutive_failures(&node(1)), 7);
        assert_eq!(health.skipped_until(&node(1), now), Some(now + 1000 * MS));
        assert_eq!(health.skipped_until(&node(1), now + 1000 * MS), None);
        assert_eq!(health.skipped_until(&node(2), now), None);
    }

    #[test]
    fn one_success_forgets_the_failures() {
        let mut health = Health::new(50 * MS, 1000 * MS);
        let now = Instant::now();
        health.failed(node(1), now);
        health.failed(node(1), now);
        health.succeeded(&node(1));
        assert_eq!(health.skipped_until(&node(1), now), None);
        assert_eq!(health.failed(node(1), now), 50 * MS);
    }

    #[test]
    fn healthy_brokers_come_first_then_the_soonest_back() {
        let mut health = Health::new(50 * MS, 1000 * MS);
        let now = Instant::now();
        health.failed(node(1), now);
        health.failed(node(1), now); // skipped 100 ms
        health.failed(Broker::Address("b:1".into()), now); // skipped 50 ms
        let order = health.order(
            vec![
                (node(1), 'a'),
                (Broker::Address("b:1".into()), 'b'),
                (node(3), 'c'),
                (node(4), 'd'),
            ],
            now,
        );
        let order: Vec<char> = order.into_iter().map(|(_, c)| c).collect();
        assert_eq!(order, ['c', 'd', 'b', 'a']);
        // Once the skips have run out, the given order holds again.
        let later = health.order(vec![(node(1), 'a'), (node(3), 'c')], now + 100 * MS);
        assert_eq!(later[0].1, 'a');
    }
}
