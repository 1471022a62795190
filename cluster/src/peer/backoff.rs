//! Reconnection delays: exponential, capped, with "equal jitter" (half fixed, half drawn) from
//! a seeded generator, so peers that lost each other at the same moment do not redial in
//! lockstep, and a seed replays the same delays.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

pub(crate) struct Backoff {
    rng: SmallRng,
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(seed: u64, min: Duration, max: Duration) -> Backoff {
        assert!(
            min <= max,
            "backoff minimum {min:?} above its maximum {max:?}"
        );
        Backoff {
            rng: SmallRng::seed_from_u64(seed),
            min,
            max,
            attempt: 0,
        }
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let doubled = self.min.saturating_mul(1 << self.attempt.min(20));
        let ceiling = doubled.min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let drawn_us = self.rng.gen_range(0..=half.as_micros() as u64);
        half + Duration::from_micros(drawn_us)
    }

    /// A connection succeeded: the next failure starts again from the minimum.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_with_jitter_and_replay_from_the_seed() {
        let min = Duration::from_millis(50);
        let max = Duration::from_secs(2);
        let mut backoff = Backoff::new(7, min, max);
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        for (attempt, delay) in delays.iter().enumerate() {
            let ceiling = (min * (1 << attempt)).min(max);
            assert!(
                *delay >= ceiling / 2 && *delay <= ceiling,
                "{attempt}: {delay:?}"
            );
        }
        let mut again = Backoff::new(7, min, max);
        let replayed: Vec<Duration> = (0..10).map(|_| again.next_delay()).collect();
        assert_eq!(delays, replayed);
        backoff.reset();
        assert!(backoff.next_delay() <= min);
    }
}
