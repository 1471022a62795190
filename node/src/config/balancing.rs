//! The keys of `gregor serve` that pace the metadata leader's work on the cluster's shape: how
//! uneven leaders may get before it has some handed over (Kafka's
//! `leader.imbalance.per.broker.percentage` and `leader.imbalance.check.interval.seconds`), and
//! how many hand-overs and replica moves it runs at once. Each hand-over (a leadership transfer)
//! refuses its partition's writes for a vote round, and each move copies a replica, so these
//! trade balance against disturbance.

use gregor_actors::operations::OperationSettings;
use std::ops::RangeInclusive;
use std::time::Duration;

/// Bounds that catch typos rather than tune anything.
const IMBALANCE_PERCENT: RangeInclusive<u32> = 0..=1_000;
const BALANCE_INTERVAL_MS: RangeInclusive<u64> = 1_000..=7 * 24 * 60 * 60 * 1000;
const AT_ONCE: RangeInclusive<u32> = 1..=1_000;

/// What the balancing keys of one config layer hold, before validation.
pub(super) struct RawBalancing {
    pub leader_imbalance_percent: Option<u32>,
    pub leader_balance_interval_ms: Option<u64>,
    pub max_leader_step_downs: Option<u32>,
    pub max_partition_moves: Option<u32>,
}

/// A failed check: the key, its value and why.
pub(super) type Invalid = (&'static str, String, String);

/// Writes the validated keys into `settings`, leaving what a key does not set as it was.
pub(super) fn apply(raw: &RawBalancing, settings: &mut OperationSettings) -> Result<(), Invalid> {
    if let Some(percent) = raw.leader_imbalance_percent {
        settings.leader_imbalance_percent =
            within("leader_imbalance_percent", percent, &IMBALANCE_PERCENT)?;
    }
    if let Some(ms) = raw.leader_balance_interval_ms {
        let ms = within("leader_balance_interval_ms", ms, &BALANCE_INTERVAL_MS)?;
        settings.leader_balance_interval = Duration::from_millis(ms);
    }
    if let Some(count) = raw.max_leader_step_downs {
        settings.max_step_downs = within("max_leader_step_downs", count, &AT_ONCE)? as usize;
    }
    if let Some(count) = raw.max_partition_moves {
        settings.max_moves = within("max_partition_moves", count, &AT_ONCE)? as usize;
    }
    Ok(())
}

fn within<T: PartialOrd + std::fmt::Display + Copy>(
    key: &'static str,
    value: T,
    range: &RangeInclusive<T>,
) -> Result<T, Invalid> {
    if range.contains(&value) {
        return Ok(value);
    }
    let reason = format!("must be between {} and {}", range.start(), range.end());
    Err((key, value.to_string(), reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawBalancing {
        RawBalancing {
            leader_imbalance_percent: None,
            leader_balance_interval_ms: None,
            max_leader_step_downs: None,
            max_partition_moves: None,
        }
    }

    #[test]
    fn no_key_keeps_the_kafka_like_defaults() {
        let mut settings = OperationSettings::default();
        apply(&raw(), &mut settings).unwrap();
        assert_eq!(settings, OperationSettings::default());
        assert_eq!(settings.leader_imbalance_percent, 10);
        assert_eq!(settings.leader_balance_interval, Duration::from_secs(300));
    }

    #[test]
    fn each_key_sets_its_setting() {
        let mut settings = OperationSettings::default();
        let keys = RawBalancing {
            leader_imbalance_percent: Some(0),
            leader_balance_interval_ms: Some(30_000),
            max_leader_step_downs: Some(1),
            max_partition_moves: Some(2),
        };
        apply(&keys, &mut settings).unwrap();
        assert_eq!(settings.leader_imbalance_percent, 0);
        assert_eq!(settings.leader_balance_interval, Duration::from_secs(30));
        assert_eq!(settings.max_step_downs, 1);
        assert_eq!(settings.max_moves, 2);
    }

    #[test]
    fn a_value_out_of_bounds_names_its_key_and_changes_nothing() {
        let mut settings = OperationSettings::default();
        let keys = RawBalancing {
            max_partition_moves: Some(0),
            ..raw()
        };
        let (key, value, _) = apply(&keys, &mut settings).unwrap_err();
        assert_eq!((key, value.as_str()), ("max_partition_moves", "0"));
        assert_eq!(settings, OperationSettings::default());
        let keys = RawBalancing {
            leader_balance_interval_ms: Some(300),
            ..raw()
        };
        assert_eq!(
            apply(&keys, &mut settings).unwrap_err().0,
            "leader_balance_interval_ms"
        );
    }
}
