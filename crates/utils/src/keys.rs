//! S3 object keys: pure functions of a table and a time.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};

/// `table/YYYY/MM/DD/HHMMSSffffff.extension`, named after the window end (UTC, microseconds).
/// Keys of one table sort in time order.
pub fn generate_file_key(table: &str, end_time: DateTime<Utc>, extension: &str) -> String {
    format!(
        "{table}/{}.{extension}",
        end_time.format("%Y/%m/%d/%H%M%S%6f")
    )
}

/// [`generate_file_key`] with the usual `parquet` extension.
pub fn parquet_key(table: &str, end_time: DateTime<Utc>) -> String {
    generate_file_key(table, end_time, "parquet")
}

/// [`parquet_key`] with `-suffix` after the time: `table/YYYY/MM/DD/HHMMSSffffff-suffix.parquet`.
/// An output built from several source tables is named after them as well as the window end,
/// so that two batches of the same window end with different files never share a key. The
/// suffix is lower-case letters, digits, `_` and `-` (it may not be empty).
pub fn suffixed_parquet_key(table: &str, end_time: DateTime<Utc>, suffix: &str) -> String {
    debug_assert!(valid_suffix(suffix), "{suffix:?}");
    format!(
        "{table}/{}-{suffix}.parquet",
        end_time.format("%Y/%m/%d/%H%M%S%6f")
    )
}

fn valid_suffix(suffix: &str) -> bool {
    !suffix.is_empty()
        && suffix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The prefix under which all of a table's data files live.
pub fn table_prefix(table: &str) -> String {
    format!("{table}/")
}

/// Recovers the time from a key [`generate_file_key`] or [`suffixed_parquet_key`] wrote for
/// `table`, or `None` for any other key (another table's, a stray object, a different layout).
pub fn parse_file_key(table: &str, key: &str, extension: &str) -> Option<DateTime<Utc>> {
    let rest = key.strip_prefix(table)?.strip_prefix('/')?;
    let rest = rest.strip_suffix(extension)?.strip_suffix('.')?;
    let (date, time) = rest.rsplit_once('/')?;
    let date = NaiveDate::parse_from_str(date, "%Y/%m/%d").ok()?;
    let (time, suffix) = match time.split_once('-') {
        Some((time, suffix)) if valid_suffix(suffix) => (time, Some(suffix)),
        Some(_) => return None,
        None => (time, None),
    };
    if time.len() != 12 || !time.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let time = NaiveTime::parse_from_str(time, "%H%M%S%6f").ok()?;
    let t = date.and_time(time).and_utc();
    // Only the canonical spelling counts, so one instant and suffix have exactly one key.
    let canonical = match suffix {
        Some(suffix) if extension == "parquet" => suffixed_parquet_key(table, t, suffix),
        Some(_) => return None,
        None => generate_file_key(table, t, extension),
    };
    (canonical == key).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t() -> DateTime<Utc> {
        Utc.timestamp_micros(1_731_576_605_123_456).unwrap()
    }

    #[test]
    fn key_is_table_date_and_time_to_the_microsecond() {
        assert_eq!(
            generate_file_key("sales_order", t(), "parquet"),
            "sales_order/2024/11/14/093005123456.parquet"
        );
        assert_eq!(
            parquet_key("staff", Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap()),
            "staff/2025/01/02/030405000000.parquet"
        );
        assert_eq!(
            generate_file_key("payment", t(), "json"),
            "payment/2024/11/14/093005123456.json"
        );
        assert_eq!(table_prefix("payment"), "payment/");
    }

    #[test]
    fn keys_parse_back_exactly() {
        let key = parquet_key("sales_order", t());
        assert_eq!(parse_file_key("sales_order", &key, "parquet"), Some(t()));
        let key = suffixed_parquet_key("dim_date", t(), "payment-sales_order");
        assert_eq!(
            key,
            "dim_date/2024/11/14/093005123456-payment-sales_order.parquet"
        );
        assert_eq!(parse_file_key("dim_date", &key, "parquet"), Some(t()));
    }

    #[test]
    fn foreign_or_malformed_keys_do_not_parse() {
        for key in [
            "sales_order/2024/11/14/093005123456.json",
            "sales_order_x/2024/11/14/093005123456.parquet",
            "staff/2024/11/14/093005123456.parquet",
            "sales_order/2024/11/14/0930051234.parquet",
            "sales_order/2024/13/14/093005123456.parquet",
            "sales_order/2024/11/14/256005123456.parquet",
            "sales_order/2024/11/14/+93005123456.parquet",
            "sales_order/2024/1/14/093005123456.parquet",
            "sales_order/notes.txt",
            "sales_order/2024/11/14/093005123456-.parquet",
            "sales_order/2024/11/14/093005123456-Staff.parquet",
            "sales_order/2024/11/14/093005123456-a b.parquet",
            "sales_order/2024/11/14/0930051234-staff.parquet",
        ] {
            assert_eq!(parse_file_key("sales_order", key, "parquet"), None, "{key}");
        }
    }
}
