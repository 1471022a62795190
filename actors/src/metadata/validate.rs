//! Rules every topic keeps, checked by the metadata leader before it proposes and again by
//! every node when it applies: Kafka's name rules, partition counts, replication factors and
//! config ranges.

use crate::api::{
    ApiError, ErrorCode, TopicConfig, TopicConfigOverrides, MAX_PARTITIONS, MAX_TOPIC_NAME_LEN,
};

/// Name of the internal topic holding committed group offsets (Kafka's name and layout).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Largest batch a topic may accept; the frame limit must leave room for the envelope.
pub const MAX_MESSAGE_BYTES_LIMIT: u32 = 8 * 1024 * 1024;
/// Most replicas a partition may have.
pub const MAX_REPLICATION_FACTOR: u16 = 5;

/// Kafka's rules: `[A-Za-z0-9._-]`, 1..=249 characters, not `.` or `..`; `__` is reserved.
///
/// # Errors
/// `INVALID_TOPIC_NAME` saying which rule failed, or `INTERNAL_TOPIC` for a valid name that
/// starts with `__` when internal names are not allowed.
pub fn validate_topic_name(name: &str, allow_internal: bool) -> Result<(), ApiError> {
    let invalid = |why: String| {
        Err(ApiError::new(
            ErrorCode::INVALID_TOPIC_NAME,
            format!("invalid topic name '{name}': {why}"),
        ))
    };
    if name.is_empty() || name.len() > MAX_TOPIC_NAME_LEN {
        return invalid(format!(
            "a name has 1 to {MAX_TOPIC_NAME_LEN} characters, not {}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are not allowed".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return invalid(format!(
            "character {bad:?} is not allowed; use letters, digits, '.', '_' and '-'"
        ));
    }
    if name.starts_with("__") && !allow_internal {
        return Err(ApiError::new(
            ErrorCode::INTERNAL_TOPIC,
            format!("topic name '{name}' starts with '__', which is reserved for internal topics"),
        ));
    }
    Ok(())
}

/// Fills in defaults and checks ranges.
///
/// # Errors
/// `INVALID_CONFIG` naming the setting.
pub fn resolve_config(overrides: &TopicConfigOverrides) -> Result<TopicConfig, ApiError> {
    let defaults = TopicConfig::default();
    let config = TopicConfig {
        retention_ms: overrides.retention_ms.unwrap_or(defaults.retention_ms),
        retention_bytes: overrides
            .retention_bytes
            .unwrap_or(defaults.retention_bytes),
        max_message_bytes: overrides
            .max_message_bytes
            .unwrap_or(defaults.max_message_bytes),
    };
    validate_config(&config)?;
    Ok(config)
}

/// Checks a resolved config's ranges.
///
/// # Errors
/// `INVALID_CONFIG` naming the setting.
pub fn validate_config(config: &TopicConfig) -> Result<(), ApiError> {
    let invalid = |message: String| Err(ApiError::new(ErrorCode::INVALID_CONFIG, message));
    if config.retention_ms < -1 {
        return invalid(format!(
            "retention.ms must be -1 (forever) or >= 0, not {}",
            config.retention_ms
        ));
    }
    if config.retention_bytes < -1 {
        return invalid(format!(
            "retention.bytes must be -1 (unlimited) or >= 0, not {}",
            config.retention_bytes
        ));
    }
    if config.max_message_bytes == 0 || config.max_message_bytes > MAX_MESSAGE_BYTES_LIMIT {
        return invalid(format!(
            "max.message.bytes must be between 1 and {MAX_MESSAGE_BYTES_LIMIT}, not {}",
            config.max_message_bytes
        ));
    }
    Ok(())
}

/// # Errors
/// `INVALID_PARTITIONS` outside 1..=[`MAX_PARTITIONS`].
pub fn validate_partitions(partitions: u32) -> Result<(), ApiError> {
    if partitions == 0 || partitions > MAX_PARTITIONS {
        return Err(ApiError::new(
            ErrorCode::INVALID_PARTITIONS,
            format!("a topic has 1 to {MAX_PARTITIONS} partitions, not {partitions}"),
        ));
    }
    Ok(())
}

/// A replication factor must be 1..=[`MAX_REPLICATION_FACTOR`] and at most the number of
/// nodes that can take a replica.
///
/// # Errors
/// `INVALID_REPLICATION_FACTOR` saying how many nodes are live.
pub fn validate_replication_factor(factor: u16, live_nodes: usize) -> Result<(), ApiError> {
    if factor == 0 || factor > MAX_REPLICATION_FACTOR {
        return Err(ApiError::new(
            ErrorCode::INVALID_REPLICATION_FACTOR,
            format!("replication factor must be 1 to {MAX_REPLICATION_FACTOR}, not {factor}"),
        ));
    }
    if usize::from(factor) > live_nodes {
        return Err(ApiError::new(
            ErrorCode::INVALID_REPLICATION_FACTOR,
            format!(
                "replication factor {factor} needs as many live nodes, and this cluster has \
                 {live_nodes} live; use --replication-factor between 1 and {}",
                live_nodes.clamp(1, usize::from(MAX_REPLICATION_FACTOR))
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafka_rules() {
        for ok in ["orders", "a", "a.b_c-D9", &"x".repeat(249)] {
            assert!(
                validate_topic_name(ok, false).is_ok(),
                "{ok} should be valid"
            );
        }
        for bad in [
            "",
            ".",
            "..",
            "has space",
            "slash/",
            "é",
            &"x".repeat(250),
            "__bad name",
        ] {
            let err = validate_topic_name(bad, false).unwrap_err();
            assert_eq!(err.code, ErrorCode::INVALID_TOPIC_NAME, "{bad}");
        }
        let err = validate_topic_name("__private", false).unwrap_err();
        assert_eq!(err.code, ErrorCode::INTERNAL_TOPIC);
        assert!(validate_topic_name(OFFSETS_TOPIC, true).is_ok());
    }

    #[test]
    fn configs_counts_and_factors_are_checked() {
        let mut bad = TopicConfigOverrides {
            retention_ms: Some(-2),
            ..Default::default()
        };
        assert_eq!(
            resolve_config(&bad).unwrap_err().code,
            ErrorCode::INVALID_CONFIG
        );
        bad = TopicConfigOverrides {
            max_message_bytes: Some(0),
            ..Default::default()
        };
        assert_eq!(
            resolve_config(&bad).unwrap_err().code,
            ErrorCode::INVALID_CONFIG
        );
        assert!(resolve_config(&TopicConfigOverrides::default()).is_ok());
        assert_eq!(
            validate_partitions(0).unwrap_err().code,
            ErrorCode::INVALID_PARTITIONS
        );
        assert_eq!(
            validate_partitions(MAX_PARTITIONS + 1).unwrap_err().code,
            ErrorCode::INVALID_PARTITIONS
        );
        assert!(validate_partitions(MAX_PARTITIONS).is_ok());
        for (factor, live, ok) in [
            (0, 3, false),
            (1, 1, true),
            (3, 3, true),
            (3, 2, false),
            (6, 9, false),
            (5, 9, true),
        ] {
            assert_eq!(
                validate_replication_factor(factor, live).is_ok(),
                ok,
                "{factor} of {live}"
            );
        }
        let error = validate_replication_factor(3, 2).unwrap_err();
        assert!(error.message.contains("2 live"), "{}", error.message);
    }
}
