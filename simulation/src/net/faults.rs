//! The fault model of one directed link, and how a message's fate is drawn from it.

use rand::rngs::SmallRng;
use rand::Rng;
use std::time::Duration;

/// A link's one-way latency: `base` plus a uniform draw in `0..=jitter`. Messages sent close
/// together overtake each other when the jitter exceeds their spacing, so reordering needs no
/// rule of its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delay {
    pub base: Duration,
    pub jitter: Duration,
}

/// Now and then a message takes much longer (a stalled switch, a GC pause on the way).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DelaySpike {
    pub probability: f64,
    pub extra: Duration,
}

/// Everything that can happen to messages sent from one node to another.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkFaults {
    /// A link that is down delivers nothing (a partition, one direction at a time).
    pub up: bool,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    pub delay: Delay,
    pub spike: Option<DelaySpike>,
}

impl Default for LinkFaults {
    /// A healthy link: up, lossless, 1 ms plus up to 1 ms of jitter.
    fn default() -> Self {
        LinkFaults {
            up: true,
            loss: 0.0,
            duplicate: 0.0,
            delay: Delay {
                base: Duration::from_millis(1),
                jitter: Duration::from_millis(1),
            },
            spike: None,
        }
    }
}

/// What becomes of one message sent over a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// The link is down.
    Cut,
    Lost,
    /// Delivered after `delay`, and a second copy after `duplicate_delay` if duplicated.
    Delivered {
        delay: Duration,
        duplicate_delay: Option<Duration>,
    },
}

impl LinkFaults {
    /// Draws the fate of one message. The number of draws depends only on the faults, so a
    /// seed replays the same fates for the same sequence of sends.
    pub(crate) fn draw(&self, rng: &mut SmallRng) -> Fate {
        if !self.up {
            return Fate::Cut;
        }
        if chance(rng, self.loss) {
            return Fate::Lost;
        }
        let delay = self.sample_delay(rng);
        let duplicate_delay = chance(rng, self.duplicate).then(|| self.sample_delay(rng));
        Fate::Delivered {
            delay,
            duplicate_delay,
        }
    }

    pub(crate) fn sample_delay(&self, rng: &mut SmallRng) -> Duration {
        let jitter_us = self.delay.jitter.as_micros() as u64;
        let mut delay = self.delay.base + Duration::from_micros(rng.gen_range(0..=jitter_us));
        if let Some(spike) = self.spike {
            if chance(rng, spike.probability) {
                delay += spike.extra;
            }
        }
        delay
    }
}

fn chance(rng: &mut SmallRng, probability: f64) -> bool {
    probability > 0.0 && rng.gen_bool(probability.min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_down_link_cuts_whatever_its_other_faults() {
        let mut rng = SmallRng::seed_from_u64(1);
        let faults = LinkFaults {
            up: false,
            ..LinkFaults::default()
        };
        assert_eq!(faults.draw(&mut rng), Fate::Cut);
    }

    #[test]
    fn delays_stay_within_base_plus_jitter_plus_spike() {
        let mut rng = SmallRng::seed_from_u64(2);
        let faults = LinkFaults {
            spike: Some(DelaySpike {
                probability: 0.5,
                extra: Duration::from_millis(100),
            }),
            ..LinkFaults::default()
        };
        let mut spiked = 0;
        for _ in 0..1000 {
            let Fate::Delivered { delay, .. } = faults.draw(&mut rng) else {
                panic!("a lossless link lost a message");
            };
            assert!(delay >= Duration::from_millis(1));
            assert!(delay <= Duration::from_millis(102));
            if delay > Duration::from_millis(2) {
                spiked += 1;
            }
        }
        assert!((400..600).contains(&spiked), "{spiked} spikes in 1000");
    }
}
