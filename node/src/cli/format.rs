//! `consume --format`: kcat's output format tokens.
//!
//! `%t` topic, `%p` partition, `%o` offset, `%k` key, `%s` value, `%T` timestamp (ms),
//! `%h` headers (`name=value` separated by commas), `%K` key length, `%S` value length,
//! `%%` a percent sign; escapes `\n`, `\t`, `\r`, `\\`. A null key or value prints as nothing.
//! The format is parsed once, so printing a record is a walk over a few tokens.

use gregor_client::ConsumerRecord;
use std::io::Write;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Timestamp,
    Headers,
    KeyLen,
    ValueLen,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFormat {
    parts: Vec<Part>,
}

impl RecordFormat {
    /// # Errors
    /// A message naming the unknown token or escape.
    pub fn parse(format: &str) -> Result<RecordFormat, String> {
        let mut parts = Vec::new();
        let mut literal = Vec::new();
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            let token = match c {
                '%' => match chars.next() {
                    Some('t') => Part::Topic,
                    Some('p') => Part::Partition,
                    Some('o') => Part::Offset,
                    Some('k') => Part::Key,
                    Some('s') => Part::Value,
                    Some('T') => Part::Timestamp,
                    Some('h') => Part::Headers,
                    Some('K') => Part::KeyLen,
                    Some('S') => Part::ValueLen,
                    Some('%') => {
                        literal.push(b'%');
                        continue;
                    }
                    Some(other) => {
                        return Err(format!(
                            "unknown format token %{other}; use %t %p %o %k %s %T %h %K %S or %%"
                        ))
                    }
                    None => {
                        return Err(
                            "the format ends with a lone %; write %% for a percent sign".into()
                        )
                    }
                },
                '\\' => {
                    let escaped = match chars.next() {
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some('\\') => '\\',
                        Some(other) => {
                            return Err(format!(
                                "unknown escape \\{other}; use \\n \\t \\r or \\\\"
                            ))
                        }
                        None => {
                            return Err(
                                "the format ends with a lone \\; write \\\\ for a backslash".into(),
                            )
                        }
                    };
                    let mut buf = [0u8; 4];
                    literal.extend_from_slice(escaped.encode_utf8(&mut buf).as_bytes());
                    continue;
                }
                other => {
                    let mut buf = [0u8; 4];
                    literal.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                    continue;
                }
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(token);
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(RecordFormat { parts })
    }

    /// Appends `record` as formatted to `out`.
    pub fn render(&self, record: &ConsumerRecord, out: &mut Vec<u8>) {
        for part in &self.parts {
            // Writing into a Vec cannot fail.
            let _ = match part {
                Part::Literal(bytes) => {
                    out.extend_from_slice(bytes);
                    Ok(())
                }
                Part::Topic => {
                    out.extend_from_slice(record.topic.as_bytes());
                    Ok(())
                }
                Part::Partition => write!(out, "{}", record.partition),
                Part::Offset => write!(out, "{}", record.offset),
                Part::Key => {
                    out.extend_from_slice(record.key.as_deref().unwrap_or_default());
                    Ok(())
                }
                Part::Value => {
                    out.extend_from_slice(record.value.as_deref().unwrap_or_default());
                    Ok(())
                }
                Part::Timestamp => write!(out, "{}", record.timestamp),
                Part::KeyLen => write!(
                    out,
                    "{}",
                    record.key.as_ref().map_or(-1, |k| k.len() as i64)
                ),
                Part::ValueLen => write!(
                    out,
                    "{}",
                    record.value.as_ref().map_or(-1, |v| v.len() as i64)
                ),
                Part::Headers => {
                    for (i, (name, value)) in record.headers.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(name);
                        if let Some(value) = value {
                            out.push(b'=');
                            out.extend_from_slice(value);
                        }
                    }
                    Ok(())
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use gregor_protocol::{Offset, PartitionId};

    fn record() -> ConsumerRecord {
        ConsumerRecord {
            topic: "orders".into(),
            partition: PartitionId(3),
            offset: Offset(42),
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"k1")),
            value: Some(Bytes::from_static(b"hello")),
            headers: vec![
                (Bytes::from_static(b"a"), Some(Bytes::from_static(b"1"))),
                (Bytes::from_static(b"b"), None),
            ],
        }
    }

    fn render(format: &str, record: &ConsumerRecord) -> String {
        let mut out = Vec::new();
        RecordFormat::parse(format)
            .expect("valid format")
            .render(record, &mut out);
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn default_format_prints_the_value_and_a_newline() {
        assert_eq!(render("%s\\n", &record()), "hello\n");
    }

    #[test]
    fn every_token_renders() {
        assert_eq!(
            render("%t %p %o %k %s %T %h %K %S 100%%\\t|", &record()),
            "orders 3 42 k1 hello 1700000000000 a=1,b 2 5 100%\t|"
        );
    }

    #[test]
    fn null_key_and_value_print_as_nothing_with_length_minus_one() {
        let mut r = record();
        r.key = None;
        r.value = None;
        assert_eq!(render("[%k][%s] %K %S", &r), "[][] -1 -1");
    }

    #[test]
    fn unknown_tokens_and_escapes_are_refused_with_the_valid_ones_listed() {
        let err = RecordFormat::parse("%x").unwrap_err();
        assert!(err.contains("%t %p %o"), "{err}");
        assert!(RecordFormat::parse("abc%").is_err());
        assert!(RecordFormat::parse("\\q").is_err());
    }

    #[test]
    fn non_ascii_literals_survive() {
        assert_eq!(render("→ %o ✓", &record()), "→ 42 ✓");
    }
}
