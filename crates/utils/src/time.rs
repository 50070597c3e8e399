//! The canonical timestamp text used in keys, state objects, Parquet metadata and logs.
//!
//! Precision is the microsecond. The source stamps rows at millisecond precision
//! (`timestamp(3)`), but window ends come from the database clock at microsecond precision, and
//! a key must name its window end exactly so that the next window starts where this one stopped.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::error::{Error, Result};

/// `2024-11-14T09:30:05.123456Z`: RFC 3339, UTC, always six fractional digits.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses what [`format_time`] writes (any RFC 3339 text is accepted).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::InvalidTime(format!("{s:?}: {e}")))
}

/// `#[serde(with = "utils::time::text")]`: a `DateTime<Utc>` as [`format_time`] text.
pub mod text {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_time(&text).map_err(de::Error::custom)
    }
}

/// Renders a UTC instant as a PostgreSQL `timestamp` literal (the source stores UTC wall time
/// without a zone). The text comes from a typed value, never from input.
pub fn sql_timestamp_literal(t: DateTime<Utc>) -> String {
    format!(
        "'{}'::timestamp",
        t.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(us: i64) -> DateTime<Utc> {
        Utc.timestamp_micros(us).unwrap()
    }

    #[test]
    fn format_time_is_rfc3339_utc_with_microseconds() {
        let t = Utc.with_ymd_and_hms(2024, 11, 14, 9, 30, 5).unwrap();
        assert_eq!(format_time(t), "2024-11-14T09:30:05.000000Z");
        assert_eq!(
            format_time(at(1_731_576_605_123_456)),
            "2024-11-14T09:30:05.123456Z"
        );
    }

    #[test]
    fn parse_time_round_trips_and_rejects_junk() {
        let t = at(1_731_576_605_123_456);
        assert_eq!(parse_time(&format_time(t)).unwrap(), t);
        assert_eq!(
            parse_time("2024-11-14T10:30:05.5+01:00").unwrap(),
            at(1_731_576_605_500_000)
        );
        let err = parse_time("yesterday").unwrap_err().to_string();
        assert!(err.contains("\"yesterday\""), "{err}");
    }

    #[test]
    fn sql_literal_is_naive_utc_with_microseconds() {
        assert_eq!(
            sql_timestamp_literal(at(1_731_576_605_123_456)),
            "'2024-11-14 09:30:05.123456'::timestamp"
        );
        assert_eq!(
            sql_timestamp_literal(at(0)),
            "'1970-01-01 00:00:00.000000'::timestamp"
        );
    }
}
