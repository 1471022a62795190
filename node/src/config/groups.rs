//! The consumer-group keys of `gregor serve`: the broker's default session timeout and the
//! bounds a group's configuration (`gregor group config G --session-timeout`) or a member's
//! request must keep within (Kafka's `group.consumer.session.timeout.ms`,
//! `group.consumer.min.session.timeout.ms` and `group.consumer.max.session.timeout.ms`).

use gregor_actors::groups::membership::GroupConfig;

/// Bounds that catch typos (seconds taken for ms, an extra zero) rather than tune anything.
const SESSION_TIMEOUT_LIMITS_MS: std::ops::RangeInclusive<u32> = 100..=24 * 60 * 60 * 1000;

/// What the group keys of one config layer hold, before validation.
pub(super) struct RawGroups {
    pub session_timeout_ms: Option<u32>,
    pub min_session_timeout_ms: Option<u32>,
    pub max_session_timeout_ms: Option<u32>,
}

/// A failed check: the key, its value and why.
pub(super) type Invalid = (&'static str, String, String);

pub(super) fn validate(raw: RawGroups) -> Result<GroupConfig, Invalid> {
    let defaults = GroupConfig::default();
    let min = raw
        .min_session_timeout_ms
        .unwrap_or(defaults.min_session_timeout_ms);
    let max = raw
        .max_session_timeout_ms
        .unwrap_or(defaults.max_session_timeout_ms);
    let session = raw
        .session_timeout_ms
        .unwrap_or(defaults.session_timeout_ms);
    for (key, value) in [
        ("group_min_session_timeout_ms", min),
        ("group_max_session_timeout_ms", max),
        ("group_session_timeout_ms", session),
    ] {
        if !SESSION_TIMEOUT_LIMITS_MS.contains(&value) {
            let reason = format!(
                "must be between {} and {} ms (one day)",
                SESSION_TIMEOUT_LIMITS_MS.start(),
                SESSION_TIMEOUT_LIMITS_MS.end()
            );
            return Err((key, value.to_string(), reason));
        }
    }
    if min > max {
        let reason = format!("is above group_max_session_timeout_ms ({max} ms)");
        return Err(("group_min_session_timeout_ms", min.to_string(), reason));
    }
    if !(min..=max).contains(&session) {
        let reason = format!(
            "must be within group_min_session_timeout_ms and group_max_session_timeout_ms \
             ({min} to {max} ms)"
        );
        return Err(("group_session_timeout_ms", session.to_string(), reason));
    }
    Ok(GroupConfig {
        session_timeout_ms: session,
        min_session_timeout_ms: min,
        max_session_timeout_ms: max,
        ..defaults
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(session: Option<u32>, min: Option<u32>, max: Option<u32>) -> RawGroups {
        RawGroups {
            session_timeout_ms: session,
            min_session_timeout_ms: min,
            max_session_timeout_ms: max,
        }
    }

    #[test]
    fn defaults_are_kafka_s_session_timeout_within_wide_bounds() {
        let config = validate(raw(None, None, None)).unwrap();
        assert_eq!(config, GroupConfig::default());
        assert_eq!(config.session_timeout_ms, 45_000);
        let config = validate(raw(Some(6_000), Some(2_000), Some(60_000))).unwrap();
        assert_eq!(
            (
                config.session_timeout_ms,
                config.min_session_timeout_ms,
                config.max_session_timeout_ms
            ),
            (6_000, 2_000, 60_000)
        );
    }

    #[test]
    fn a_default_outside_the_bounds_or_crossed_bounds_are_refused_by_name() {
        let (key, _, reason) = validate(raw(Some(500), Some(1_000), None)).unwrap_err();
        assert_eq!(key, "group_session_timeout_ms");
        assert!(reason.contains("1000 to 1800000 ms"), "{reason}");
        let (key, _, _) = validate(raw(None, Some(50_000), Some(40_000))).unwrap_err();
        assert_eq!(key, "group_min_session_timeout_ms");
        let (key, _, _) = validate(raw(None, None, Some(10))).unwrap_err();
        assert_eq!(key, "group_max_session_timeout_ms");
    }
}
