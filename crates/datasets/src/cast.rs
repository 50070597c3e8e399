//! Text to typed values, a column at a time: what a CSV field becomes under its declared type,
//! or the reason it cannot. A row is appended only when all of its fields parse, so one bad
//! value quarantines its row and never a batch.

use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int16Builder,
    Int32Builder, Int64Builder, StringBuilder, StructArray, Time64MicrosecondBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::buffer::NullBuffer;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};

use crate::decl::{Column, Kind, point_fields};

/// One parsed field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Null,
    I16(i16),
    I32(i32),
    I64(i64),
    /// The unscaled value at the column's scale.
    Decimal(i128),
    Text(&'a str),
    Bool(bool),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01 00:00 (UTC for timestamptz).
    Micros(i64),
    /// Microseconds since midnight.
    Time(i64),
    Point(f64, f64),
}

const DATE_FORMATS: &[&str] = &["%Y-%m-%d"];
const TIMESTAMP_FORMATS: &[&str] = &["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"];
const TIMESTAMPTZ_FORMATS: &[&str] = &["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"];
const TIME_FORMATS: &[&str] = &["%H:%M:%S%.f", "%H:%M"];
const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();

/// Parses one field under its column's declaration. An empty field is NULL (CSV has no other
/// way to write one), refused where the column is not nullable.
pub fn parse<'a>(column: &Column, text: &'a str) -> Result<Value<'a>, String> {
    parse_in(column, text, &column.formats)
}

/// Parses a value the file had typed (an Excel date, a Parquet timestamp), written as ISO 8601
/// text: the column's declared formats are for text, so only the ISO defaults apply.
pub fn parse_typed<'a>(column: &Column, text: &'a str) -> Result<Value<'a>, String> {
    parse_in(column, text, &[])
}

fn parse_in<'a>(column: &Column, text: &'a str, formats: &[String]) -> Result<Value<'a>, String> {
    if text.is_empty() {
        return if column.nullable {
            Ok(Value::Null)
        } else {
            Err("empty, and the column is not nullable".into())
        };
    }
    let trimmed = trim(text);
    let not = |what: &str| format!("not {what}");
    Ok(match column.kind {
        Kind::SmallInt => Value::I16(trimmed.parse().map_err(|_| not("a smallint"))?),
        Kind::Integer => Value::I32(trimmed.parse().map_err(|_| not("an integer"))?),
        Kind::BigInt => Value::I64(trimmed.parse().map_err(|_| not("a bigint"))?),
        Kind::Decimal { precision, scale } => Value::Decimal(decimal(trimmed, precision, scale)?),
        Kind::Text => Value::Text(text),
        Kind::Boolean => Value::Bool(
            boolean(trimmed).ok_or_else(|| not("a boolean (true/false, t/f, yes/no, y/n, 1/0)"))?,
        ),
        Kind::Date => {
            let date = first(formats, DATE_FORMATS, |f| match f {
                "%Y-%m-%d" => iso_date(trimmed.as_bytes()).or_else(|| chrono_date(trimmed, f)),
                _ => chrono_date(trimmed, f),
            })
            .ok_or_else(|| not_in("a date", formats, DATE_FORMATS))?;
            Value::Date((date - EPOCH).num_days() as i32)
        }
        Kind::Timestamp => {
            let at = first(formats, TIMESTAMP_FORMATS, |f| {
                iso_datetime(trimmed, f).or_else(|| NaiveDateTime::parse_from_str(trimmed, f).ok())
            })
            .ok_or_else(|| not_in("a timestamp", formats, TIMESTAMP_FORMATS))?;
            Value::Micros(at.and_utc().timestamp_micros())
        }
        Kind::TimestampTz => {
            let at = first(formats, TIMESTAMPTZ_FORMATS, |f| {
                DateTime::parse_from_str(trimmed, f).ok()
            })
            .or_else(|| {
                (formats.is_empty())
                    .then(|| DateTime::parse_from_rfc3339(trimmed).ok())
                    .flatten()
            })
            .ok_or_else(|| not_in("a timestamp with a zone", formats, TIMESTAMPTZ_FORMATS))?;
            Value::Micros(at.timestamp_micros())
        }
        Kind::Time => {
            let t = first(formats, TIME_FORMATS, |f| {
                NaiveTime::parse_from_str(trimmed, f).ok()
            })
            .ok_or_else(|| not_in("a time", formats, TIME_FORMATS))?;
            Value::Time((t - NaiveTime::MIN).num_microseconds().unwrap_or(0))
        }
        Kind::Point => {
            let (lon, lat) = point(trimmed).ok_or_else(|| not("a WKT point, POINT (lon lat)"))?;
            Value::Point(lon, lat)
        }
    })
}

/// `text.trim()`, without decoding a character where the text starts and ends with ASCII
/// that is not whitespace (nearly every value, and each value of a row is trimmed).
fn trim(text: &str) -> &str {
    let solid = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii() && !ascii_space(*c));
    let b = text.as_bytes();
    if solid(b.first()) && solid(b.last()) {
        text
    } else {
        text.trim()
    }
}

fn chrono_date(text: &str, format: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, format).ok()
}

/// `YYYY-MM-DD` exactly, or `None` (then chrono decides: it also takes other widths).
fn iso_date(b: &[u8]) -> Option<NaiveDate> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    NaiveDate::from_ymd_opt(digits(&b[..4])? as i32, digits(&b[5..7])?, digits(&b[8..])?)
}

/// The ISO timestamp formats, read without chrono's general parser (a tenth of its time,
/// which is most of a timestamp column's): the strict form only, `None` for anything else,
/// which chrono then reads as before, so what is accepted and how is unchanged.
fn iso_datetime(text: &str, format: &str) -> Option<NaiveDateTime> {
    let (separator, fraction) = match format {
        "%Y-%m-%d %H:%M:%S" => (b' ', false),
        "%Y-%m-%d %H:%M:%S%.f" => (b' ', true),
        "%Y-%m-%dT%H:%M:%S" => (b'T', false),
        "%Y-%m-%dT%H:%M:%S%.f" => (b'T', true),
        _ => return None,
    };
    let b = text.as_bytes();
    if b.len() < 19 || b[10] != separator || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let date = iso_date(&b[..10])?;
    let (h, m, s) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    let nanos = match &b[19..] {
        [] => 0,
        [b'.', rest @ ..] if fraction && (1..=9).contains(&rest.len()) => {
            digits(rest)? * 10u32.pow(9 - rest.len() as u32)
        }
        _ => return None,
    };
    // A leap second (60) is chrono's to judge.
    if s > 59 {
        return None;
    }
    date.and_hms_nano_opt(h, m, s, nanos)
}

/// ASCII digits as a number, `None` if any is not one.
fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
    })
}

fn first<T>(formats: &[String], defaults: &[&str], parse: impl Fn(&str) -> Option<T>) -> Option<T> {
    if formats.is_empty() {
        defaults.iter().find_map(|f| parse(f))
    } else {
        formats.iter().find_map(|f| parse(f))
    }
}

fn not_in(what: &str, formats: &[String], defaults: &[&str]) -> String {
    let formats: Vec<&str> = if formats.is_empty() {
        defaults.to_vec()
    } else {
        formats.iter().map(String::as_str).collect()
    };
    format!("not {what} in any of the formats {formats:?}")
}

/// A decimal's text (`-12.50`, `1e2`, `.5`) as its unscaled value at `scale`, exactly, to the
/// 38 digits a declaration allows (wider than a 96-bit decimal type holds).
fn decimal(text: &str, precision: u8, scale: i8) -> Result<i128, String> {
    let kind = Kind::Decimal { precision, scale };
    let not = || format!("not a {kind}");
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (
            &unsigned[..i],
            unsigned[i + 1..].parse::<i32>().map_err(|_| not())?,
        ),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.len() + fraction.len() == 0 || !all_digits(whole) || !all_digits(fraction) {
        return Err(not());
    }
    // The digits, and the power of ten of the last one once scaled.
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let power = i64::from(exponent) - fraction.len() as i64 + i64::from(scale);
    let (kept, dropped) = if power >= 0 {
        (digits, "")
    } else {
        digits.split_at(digits.len().saturating_sub(power.unsigned_abs() as usize))
    };
    if dropped.bytes().any(|b| b != b'0') {
        return Err(format!("more than {scale} decimal places for {kind}"));
    }
    let width = kept.len() as i64 + power.max(0);
    if kept.is_empty() {
        return Ok(0);
    }
    if width > i64::from(precision) {
        return Err(format!("out of range for {kind}"));
    }
    let mut unscaled: i128 = kept.parse().map_err(|_| not())?;
    unscaled *= 10i128.pow(power.max(0) as u32);
    Ok(if negative { -unscaled } else { unscaled })
}

fn boolean(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" => Some(true),
        "false" | "f" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// `POINT (lon lat)`, any case, any spacing; finite coordinates.
fn point(text: &str) -> Option<(f64, f64)> {
    if text.is_ascii() {
        ascii_point(text)
    } else {
        unicode_point(text)
    }
}

/// [`point`] of ASCII text, without Unicode's whitespace rules (most of a point's time).
fn ascii_point(text: &str) -> Option<(f64, f64)> {
    let b = text.as_bytes();
    if b.len() < 5 || !b[..5].eq_ignore_ascii_case(b"point") {
        return None;
    }
    let space = ascii_space;
    let start = b[5..]
        .iter()
        .position(|c| !space(*c))
        .map_or(b.len(), |i| 5 + i);
    if b.get(start) != Some(&b'(') || b.last() != Some(&b')') || b.len() < start + 2 {
        return None;
    }
    // Split by bytes: a split by characters decodes each one.
    let mut coords = ascii_words(&text[start + 1..b.len() - 1], space).map(f64::from_str);
    let (lon, lat) = (coords.next()?.ok()?, coords.next()?.ok()?);
    (coords.next().is_none() && lon.is_finite() && lat.is_finite()).then_some((lon, lat))
}

/// Unicode's whitespace in ASCII (`char::is_whitespace`), which has the vertical tab that
/// `is_ascii_whitespace` has not.
fn ascii_space(c: u8) -> bool {
    matches!(c, b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r' | b' ')
}

/// The words of ASCII `text`: its runs of bytes that are not `space`.
fn ascii_words(text: &str, space: impl Fn(u8) -> bool) -> impl Iterator<Item = &str> {
    let b = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() && space(b[i]) {
            i += 1;
        }
        let start = i;
        while i < b.len() && !space(b[i]) {
            i += 1;
        }
        (i > start).then(|| &text[start..i])
    })
}

fn unicode_point(text: &str) -> Option<(f64, f64)> {
    let rest = text
        .get(..5)?
        .eq_ignore_ascii_case("point")
        .then(|| &text[5..])?;
    let inner = rest.trim_start().strip_prefix('(')?.strip_suffix(')')?;
    let mut coords = inner.split_whitespace().map(f64::from_str);
    let (lon, lat) = (coords.next()?.ok()?, coords.next()?.ok()?);
    (coords.next().is_none() && lon.is_finite() && lat.is_finite()).then_some((lon, lat))
}

/// The column builders of one batch.
pub struct Columns {
    builders: Vec<Builder>,
}

enum Builder {
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    Decimal(Decimal128Builder),
    Text(StringBuilder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    Micros(TimestampMicrosecondBuilder),
    Time(Time64MicrosecondBuilder),
    Point {
        lon: Float64Builder,
        lat: Float64Builder,
        valid: Vec<bool>,
    },
}

impl Columns {
    pub fn new(columns: &[Column]) -> Self {
        let builders = columns
            .iter()
            .map(|c| match c.kind {
                Kind::SmallInt => Builder::I16(Int16Builder::new()),
                Kind::Integer => Builder::I32(Int32Builder::new()),
                Kind::BigInt => Builder::I64(Int64Builder::new()),
                Kind::Decimal { precision, scale } => Builder::Decimal(
                    Decimal128Builder::new()
                        .with_precision_and_scale(precision, scale)
                        .expect("checked by the declaration"),
                ),
                Kind::Text => Builder::Text(StringBuilder::new()),
                Kind::Boolean => Builder::Bool(BooleanBuilder::new()),
                Kind::Date => Builder::Date(Date32Builder::new()),
                Kind::Timestamp => Builder::Micros(TimestampMicrosecondBuilder::new()),
                Kind::TimestampTz => {
                    Builder::Micros(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
                }
                Kind::Time => Builder::Time(Time64MicrosecondBuilder::new()),
                Kind::Point => Builder::Point {
                    lon: Float64Builder::new(),
                    lat: Float64Builder::new(),
                    valid: Vec::new(),
                },
            })
            .collect();
        Columns { builders }
    }

    /// Appends one row whose values parsed, in declared order, each of its column's kind.
    pub fn push(&mut self, row: &[Value<'_>]) {
        for (builder, value) in self.builders.iter_mut().zip(row) {
            let null = *value == Value::Null;
            match (builder, *value) {
                (Builder::I16(b), Value::I16(v)) => b.append_value(v),
                (Builder::I32(b), Value::I32(v)) => b.append_value(v),
                (Builder::I64(b), Value::I64(v)) => b.append_value(v),
                (Builder::Decimal(b), Value::Decimal(v)) => b.append_value(v),
                (Builder::Text(b), Value::Text(v)) => b.append_value(v),
                (Builder::Bool(b), Value::Bool(v)) => b.append_value(v),
                (Builder::Date(b), Value::Date(v)) => b.append_value(v),
                (Builder::Micros(b), Value::Micros(v)) => b.append_value(v),
                (Builder::Time(b), Value::Time(v)) => b.append_value(v),
                (Builder::Point { lon, lat, valid }, v) => {
                    let (x, y) = match v {
                        Value::Point(x, y) => (x, y),
                        _ => (0.0, 0.0),
                    };
                    lon.append_value(x);
                    lat.append_value(y);
                    valid.push(!null);
                }
                (Builder::I16(b), _) if null => b.append_null(),
                (Builder::I32(b), _) if null => b.append_null(),
                (Builder::I64(b), _) if null => b.append_null(),
                (Builder::Decimal(b), _) if null => b.append_null(),
                (Builder::Text(b), _) if null => b.append_null(),
                (Builder::Bool(b), _) if null => b.append_null(),
                (Builder::Date(b), _) if null => b.append_null(),
                (Builder::Micros(b), _) if null => b.append_null(),
                (Builder::Time(b), _) if null => b.append_null(),
                (_, v) => unreachable!("a value of another column's kind: {v:?}"),
            }
        }
    }

    /// The batch's arrays, in declared order; the builders start over empty.
    pub fn finish(&mut self) -> Vec<ArrayRef> {
        self.builders
            .iter_mut()
            .map(|b| -> ArrayRef {
                match b {
                    Builder::I16(b) => Arc::new(b.finish()),
                    Builder::I32(b) => Arc::new(b.finish()),
                    Builder::I64(b) => Arc::new(b.finish()),
                    Builder::Decimal(b) => Arc::new(b.finish()),
                    Builder::Text(b) => Arc::new(b.finish()),
                    Builder::Bool(b) => Arc::new(b.finish()),
                    Builder::Date(b) => Arc::new(b.finish()),
                    Builder::Micros(b) => Arc::new(b.finish()),
                    Builder::Time(b) => Arc::new(b.finish()),
                    Builder::Point { lon, lat, valid } => {
                        let nulls = NullBuffer::from(std::mem::take(valid));
                        let nulls = (nulls.null_count() > 0).then_some(nulls);
                        Arc::new(StructArray::new(
                            point_fields(),
                            vec![Arc::new(lon.finish()), Arc::new(lat.finish())],
                            nulls,
                        ))
                    }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(kind: &str, formats: &[&str]) -> Column {
        Column {
            name: "c".into(),
            kind: kind.parse().unwrap(),
            nullable: true,
            formats: formats.iter().map(|f| f.to_string()).collect(),
            description: None,
            unit: None,
        }
    }

    fn ok(kind: &str, text: &str) -> Value<'static> {
        let text: &'static str = Box::leak(text.to_string().into_boxed_str());
        parse(&column(kind, &[]), text).unwrap()
    }

    fn err(kind: &str, formats: &[&str], text: &str) -> String {
        parse(&column(kind, formats), text).unwrap_err()
    }

    #[test]
    fn each_kind_parses_its_text() {
        assert_eq!(ok("smallint", " -7 "), Value::I16(-7));
        assert_eq!(ok("integer", "2147483647"), Value::I32(i32::MAX));
        assert_eq!(ok("bigint", "-9"), Value::I64(-9));
        assert_eq!(ok("decimal(6,2)", "12.5"), Value::Decimal(1250));
        assert_eq!(ok("decimal(6,2)", "-0.10"), Value::Decimal(-10));
        assert_eq!(ok("decimal(6,2)", "1e2"), Value::Decimal(10000));
        assert_eq!(ok("decimal(6,2)", "+.5"), Value::Decimal(50));
        assert_eq!(ok("decimal(6,2)", "1250E-2"), Value::Decimal(1250));
        assert_eq!(ok("decimal(6,2)", "-0.000"), Value::Decimal(0));
        assert_eq!(ok("decimal(6,2)", "0009999.990"), Value::Decimal(999_999));
        let widest = "12345678901234567890123456789012.123456";
        assert_eq!(
            ok("decimal(38,6)", widest),
            Value::Decimal(12_345_678_901_234_567_890_123_456_789_012_123_456)
        );
        for (text, reason) in [
            ("12.345", "more than 2 decimal places for decimal(6,2)"),
            ("10000", "out of range for decimal(6,2)"),
            ("1e4", "out of range for decimal(6,2)"),
            ("1.2.3", "not a decimal(6,2)"),
            ("e5", "not a decimal(6,2)"),
            ("1e", "not a decimal(6,2)"),
            ("--1", "not a decimal(6,2)"),
            ("NaN", "not a decimal(6,2)"),
        ] {
            assert_eq!(err("decimal(6,2)", &[], text), reason, "{text}");
        }
        assert_eq!(ok("text", " as is "), Value::Text(" as is "));
        assert_eq!(ok("boolean", "Yes"), Value::Bool(true));
        assert_eq!(ok("boolean", "0"), Value::Bool(false));
        assert_eq!(ok("date", "1970-01-02"), Value::Date(1));
        assert_eq!(
            ok("timestamp", "1970-01-01 00:00:01.5"),
            Value::Micros(1_500_000)
        );
        assert_eq!(
            ok("timestamp", "1970-01-01T00:00:01"),
            Value::Micros(1_000_000)
        );
        assert_eq!(
            ok("timestamptz", "1970-01-01T01:00:00+01:00"),
            Value::Micros(0)
        );
        assert_eq!(ok("timestamptz", "1970-01-01 00:00:00Z"), Value::Micros(0));
        assert_eq!(ok("time", "00:01:00"), Value::Time(60_000_000));
        assert_eq!(ok("time", "13:30"), Value::Time(48_600_000_000));
        assert_eq!(
            ok("point", "POINT (14.49 53.40)"),
            Value::Point(14.49, 53.40)
        );
        assert_eq!(ok("point", "point(-1 2.5)"), Value::Point(-1.0, 2.5));
        assert_eq!(ok("integer", ""), Value::Null);
    }

    #[test]
    fn declared_formats_replace_the_defaults() {
        let c = column("date", &["%d/%m/%Y"]);
        assert_eq!(parse(&c, "02/01/1970").unwrap(), Value::Date(1));
        assert_eq!(
            err("date", &["%d/%m/%Y"], "1970-01-02"),
            "not a date in any of the formats [\"%d/%m/%Y\"]"
        );
    }

    #[test]
    fn bad_text_says_what_was_expected() {
        for (kind, text, reason) in [
            ("smallint", "40000", "not a smallint"),
            ("integer", "1.5", "not an integer"),
            ("decimal(4,2)", "123.45", "out of range for decimal(4,2)"),
            (
                "decimal(6,2)",
                "1.234",
                "more than 2 decimal places for decimal(6,2)",
            ),
            ("decimal(6,2)", "abc", "not a decimal(6,2)"),
            (
                "boolean",
                "maybe",
                "not a boolean (true/false, t/f, yes/no, y/n, 1/0)",
            ),
            (
                "timestamp",
                "2024-13-01 00:00:00",
                "not a timestamp in any of the formats",
            ),
            (
                "timestamptz",
                "2024-01-01 00:00:00",
                "not a timestamp with a zone",
            ),
            ("point", "POINT (1)", "not a WKT point, POINT (lon lat)"),
            ("point", "POINT (1 2 3)", "not a WKT point"),
            ("point", "POINT (nan 2)", "not a WKT point"),
            ("point", "LINESTRING (1 2, 3 4)", "not a WKT point"),
        ] {
            let e = err(kind, &[], text);
            assert!(e.starts_with(reason), "{kind} {text:?}: {e}");
        }
        let mut required = column("text", &[]);
        required.nullable = false;
        assert_eq!(
            parse(&required, "").unwrap_err(),
            "empty, and the column is not nullable"
        );
    }

    #[test]
    fn rows_become_arrays_with_nulls_in_place() {
        let columns = [column("integer", &[]), column("point", &[])];
        let mut b = Columns::new(&columns);
        b.push(&[Value::I32(1), Value::Point(1.0, 2.0)]);
        b.push(&[Value::Null, Value::Null]);
        let arrays = b.finish();
        assert_eq!(arrays[0].len(), 2);
        assert!(arrays[0].is_null(1) && arrays[1].is_null(1) && !arrays[1].is_null(0));
        assert_eq!(b.finish()[0].len(), 0, "the builders start over");
    }
}

#[cfg(test)]
mod fast_path_tests {
    use super::*;

    /// Wherever the ISO fast path reads a value, chrono reads the same one; what it leaves,
    /// chrono reads as before.
    #[test]
    fn the_iso_fast_path_agrees_with_chrono() {
        let formats = [
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%dT%H:%M:%S%.f",
        ];
        let mut inputs = Vec::new();
        for date in [
            "2018-05-28",
            "2024-02-29",
            "2023-02-29",
            "1969-12-31",
            "2018-13-01",
            "2018-5-28",
            "0000-01-01",
        ] {
            for sep in [" ", "T"] {
                for time in [
                    "09:03:40", "23:59:59", "24:00:00", "09:60:00", "09:03:60", "9:03:40", "09:03",
                ] {
                    for fraction in [
                        "",
                        ".",
                        ".5",
                        ".123456",
                        ".123456789",
                        ".1234567891",
                        ".12a",
                    ] {
                        inputs.push(format!("{date}{sep}{time}{fraction}"));
                    }
                }
            }
        }
        let mut fast = 0;
        for input in &inputs {
            for f in formats {
                let chrono = NaiveDateTime::parse_from_str(input, f).ok();
                if let Some(at) = iso_datetime(input, f) {
                    fast += 1;
                    assert_eq!(Some(at), chrono, "{input:?} as {f}");
                }
            }
            let date = &input[..input.len().min(10)];
            if let Some(d) = iso_date(date.as_bytes()) {
                assert_eq!(Some(d), chrono_date(date, "%Y-%m-%d"), "{date:?}");
            }
        }
        assert!(fast >= 80, "the fast path read only {fast}");
    }

    #[test]
    fn ascii_points_read_as_unicode_ones_do() {
        for text in [
            "POINT (14.49 53.40)",
            "point(1 2)",
            "Point  (  -1.5e2\t2 )",
            "POINT (1 2 3)",
            "POINT (1)",
            "POINT 1 2",
            "POINT (inf 2)",
            "POINT (NaN 2)",
            "POINT (1 2",
            "POIN (1 2)",
            "POINT (1  2)x",
            "POINT ( 1 2)",
            "POINT\u{b}(1 2)",
            "POINT)",
            "POINT (",
            "POINT ()",
            "POINT (1\u{b}2)",
            "POINT (1\x0c2\r)",
            "POINT (\n1 2)",
            "POINT (1,2)",
        ] {
            assert_eq!(ascii_point(text), unicode_point(text), "{text:?}");
        }
    }

    #[test]
    fn ascii_whitespace_and_trim_are_unicodes() {
        for c in 0..=127u8 {
            assert_eq!(ascii_space(c), char::from(c).is_whitespace(), "{c:#x}");
        }
        for text in [
            "a",
            " a",
            "a ",
            "\u{b}a\u{b}",
            "\u{a0}a",
            "a\u{a0}",
            "\u{2003}a b\u{2003}",
            "é",
            " ",
            "\t\n",
            "ab",
            "a b",
        ] {
            assert_eq!(trim(text), text.trim(), "{text:?}");
        }
    }
}
