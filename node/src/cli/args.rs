//! Parsers for command-line values. Each returns a message that says what is accepted, so
//! clap can print it as a usage error (exit code 2).

use gregor_protocol::api::Acks;
use std::time::{Duration, UNIX_EPOCH};

/// `--retention`: a duration such as `7d`, `12h`, `90min`, or `-1`/`forever`/`unlimited`.
/// Returns milliseconds, `-1` for unlimited (Kafka's convention).
pub fn parse_retention(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if matches!(s, "-1" | "forever" | "unlimited" | "infinite") {
        return Ok(-1);
    }
    let duration = humantime::parse_duration(s).map_err(|e| {
        format!(
            "'{s}' is not a duration ({e}); use e.g. 7d, 12h, 30min, or -1 / forever for unlimited"
        )
    })?;
    i64::try_from(duration.as_millis()).map_err(|_| format!("'{s}' is too long a duration"))
}

/// A byte size: `1048576`, `512KiB`, `64MiB`, `1GiB`, `10MB`, or `-1`/`unlimited`.
pub fn parse_size(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if matches!(s, "-1" | "unlimited" | "infinite") {
        return Ok(-1);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let bad =
        || format!("'{s}' is not a size; use bytes (1048576) or a unit: KiB, MiB, GiB, KB, MB, GB");
    let number: i64 = digits.parse().map_err(|_| bad())?;
    let multiplier: i64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// `--max-message-bytes`: a positive size that fits 32 bits.
pub fn parse_message_size(s: &str) -> Result<u32, String> {
    match parse_size(s)? {
        n if n > 0 => u32::try_from(n).map_err(|_| format!("'{s}' is over the 4 GiB limit")),
        _ => Err(format!("'{s}' must be a positive size")),
    }
}

/// `--acks`: `0` (no reply), `1` (leader), `all`/`-1` (replicated and fsynced).
pub fn parse_acks(s: &str) -> Result<Acks, String> {
    match s.trim() {
        "0" | "none" => Ok(Acks::None),
        "1" | "leader" => Ok(Acks::Leader),
        "all" | "-1" => Ok(Acks::All),
        other => Err(format!("'{other}' is not an acks level; use 0, 1 or all")),
    }
}

/// Where `consume --from` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromSpec {
    Earliest,
    Latest,
    Offset(u64),
    /// This many records before the end of each partition (kcat's `-o -N`).
    FromEnd(u64),
    /// The first record at or after now minus this.
    Ago(Duration),
    /// The first record at or after this time, ms since the epoch.
    At(i64),
}

/// `earliest`, `latest`, an offset (`42`), `-N` records before the end, a duration ago
/// (`-5h`, `-30min`), an RFC 3339 time (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00+02:00`),
/// or `@MS` since the epoch.
pub fn parse_from(s: &str) -> Result<FromSpec, String> {
    let s = s.trim();
    match s {
        "earliest" | "beginning" | "oldest" | "first" => return Ok(FromSpec::Earliest),
        "latest" | "end" | "newest" | "last" => return Ok(FromSpec::Latest),
        _ => {}
    }
    if let Ok(offset) = s.parse::<u64>() {
        return Ok(FromSpec::Offset(offset));
    }
    if let Some(ms) = s.strip_prefix('@') {
        return ms
            .parse::<i64>()
            .map(FromSpec::At)
            .map_err(|_| format!("'{s}': after '@' comes a time in ms since the epoch"));
    }
    if let Some(back) = s.strip_prefix('-') {
        if let Ok(n) = back.parse::<u64>() {
            return Ok(FromSpec::FromEnd(n));
        }
        if let Ok(d) = humantime::parse_duration(back) {
            return Ok(FromSpec::Ago(d));
        }
    }
    parse_datetime(s).map(FromSpec::At).map_err(|_| {
        format!(
            "'{s}' is not a start position; use earliest, latest, an offset (42), -N records from \
             the end (-10), a duration ago (-5h), an RFC 3339 time (2024-05-01T12:00:00Z) or @MS"
        )
    })
}

/// An RFC 3339 time, `Z` or a `±HH:MM` offset (none means UTC); milliseconds since the epoch.
pub fn parse_datetime(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let bad = || {
        format!("'{s}' is not an RFC 3339 time such as 2024-05-01T12:00:00Z or 2024-05-01T14:00:00+02:00")
    };
    let (local, offset_minutes) = split_utc_offset(s).ok_or_else(bad)?;
    let time = humantime::parse_rfc3339_weak(local).map_err(|_| bad())?;
    let ms = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).map_err(|_| bad())?,
        Err(before) => -i64::try_from(before.duration().as_millis()).map_err(|_| bad())?,
    };
    Ok(ms - offset_minutes * 60_000)
}

/// Splits `2024-05-01T14:00:00+02:00` into the local part and +120 minutes; a time without an
/// offset (or with `Z`) is UTC.
fn split_utc_offset(s: &str) -> Option<(&str, i64)> {
    let bytes = s.as_bytes();
    if bytes.len() > 6 && bytes[bytes.len() - 3] == b':' {
        let sign_at = bytes.len() - 6;
        let sign = match bytes[sign_at] {
            b'+' => 1,
            b'-' => -1,
            _ => return Some((s, 0)),
        };
        // A date's own dashes sit further left; this one must follow the seconds.
        if !bytes[sign_at - 1].is_ascii_digit() || !s[..sign_at].contains(['T', 't', ' ']) {
            return Some((s, 0));
        }
        let hours: i64 = s[sign_at + 1..sign_at + 3].parse().ok()?;
        let minutes: i64 = s[sign_at + 4..].parse().ok()?;
        if hours > 23 || minutes > 59 {
            return None;
        }
        return Some((&s[..sign_at], sign * (hours * 60 + minutes)));
    }
    Some((s, 0))
}

/// `--by-duration`: a duration such as `5h` or `2d`, in milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("'{s}' is not a duration ({e}); use e.g. 5h, 30min, 2d"))?;
    u64::try_from(d.as_millis()).map_err(|_| format!("'{s}' is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_accepts_units_and_unlimited() {
        assert_eq!(parse_retention("7d"), Ok(7 * 24 * 3600 * 1000));
        assert_eq!(parse_retention("5h"), Ok(5 * 3600 * 1000));
        assert_eq!(parse_retention("90min"), Ok(90 * 60 * 1000));
        assert_eq!(parse_retention("-1"), Ok(-1));
        assert_eq!(parse_retention("forever"), Ok(-1));
        let err = parse_retention("7 dayz").unwrap_err();
        assert!(err.contains("use e.g. 7d"), "{err}");
    }

    #[test]
    fn sizes_accept_binary_and_decimal_units() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("-1"), Ok(-1));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_message_size("0").is_err());
        assert!(parse_message_size("8GiB").is_err());
    }

    #[test]
    fn acks_accept_kafka_spellings() {
        assert_eq!(parse_acks("0"), Ok(Acks::None));
        assert_eq!(parse_acks("1"), Ok(Acks::Leader));
        assert_eq!(parse_acks("all"), Ok(Acks::All));
        assert_eq!(parse_acks("-1"), Ok(Acks::All));
        assert!(parse_acks("2").is_err());
    }

    #[test]
    fn from_accepts_positions_durations_and_times() {
        assert_eq!(parse_from("earliest"), Ok(FromSpec::Earliest));
        assert_eq!(parse_from("latest"), Ok(FromSpec::Latest));
        assert_eq!(parse_from("42"), Ok(FromSpec::Offset(42)));
        assert_eq!(parse_from("-10"), Ok(FromSpec::FromEnd(10)));
        assert_eq!(
            parse_from("-5h"),
            Ok(FromSpec::Ago(Duration::from_secs(5 * 3600)))
        );
        assert_eq!(
            parse_from("-30min"),
            Ok(FromSpec::Ago(Duration::from_secs(1800)))
        );
        assert_eq!(
            parse_from("@1700000000000"),
            Ok(FromSpec::At(1_700_000_000_000))
        );
        assert_eq!(
            parse_from("2023-11-14T22:13:20Z"),
            Ok(FromSpec::At(1_700_000_000_000))
        );
        assert_eq!(
            parse_from("2023-11-14T22:13:20.5Z"),
            Ok(FromSpec::At(1_700_000_000_500))
        );
        let err = parse_from("yesterday").unwrap_err();
        assert!(err.contains("-5h"), "{err}");
    }

    #[test]
    fn datetimes_honour_utc_offsets() {
        let utc = parse_datetime("2024-05-01T12:00:00Z").expect("utc");
        assert_eq!(parse_datetime("2024-05-01T14:00:00+02:00"), Ok(utc));
        assert_eq!(parse_datetime("2024-05-01T07:30:00-04:30"), Ok(utc));
        assert_eq!(parse_datetime("2024-05-01 12:00:00"), Ok(utc));
        assert!(parse_datetime("2024-05-01T12:00:00+25:00").is_err());
        assert!(parse_datetime("not a time").is_err());
    }

    #[test]
    fn durations_for_offset_resets() {
        assert_eq!(parse_duration_ms("5h"), Ok(5 * 3600 * 1000));
        assert!(parse_duration_ms("-5h").is_err());
    }
}
