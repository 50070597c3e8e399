//! SQL for reading the source. Identifiers come from the table registry and are quoted; the
//! only values are window bounds, rendered from typed timestamps.

use chrono::{DateTime, Utc};

use crate::tables::{LAST_UPDATED, PgType, TableSpec, quote_ident};
use crate::time::{format_time, sql_timestamp_literal};

/// A half-open window `[start, end)` on `last_updated`. `start: None` is the first run: every
/// row stamped before `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Option<DateTime<Utc>>,
    pub end: DateTime<Utc>,
}

impl Window {
    /// True when no instant can fall inside the window.
    pub fn is_empty(&self) -> bool {
        self.start.is_some_and(|s| s >= self.end)
    }

    /// The start in [`format_time`] text, or `-infinity` (PostgreSQL's spelling) for a first
    /// window.
    pub fn start_text(&self) -> String {
        self.start.map_or_else(|| "-infinity".into(), format_time)
    }
}

/// The select list: enum columns are cast to `text` so that a binary COPY sends their labels.
fn select_list(table: &TableSpec) -> String {
    table
        .columns
        .iter()
        .map(|c| match c.pg_type {
            PgType::Enum(_) => format!("{}::text", quote_ident(c.name)),
            _ => quote_ident(c.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The new-entry query: every row of `table` whose `last_updated` lies in `window`, with the
/// registry's columns in the registry's order.
pub fn new_entries_query(table: &TableSpec, window: &Window) -> String {
    let col = quote_ident(LAST_UPDATED);
    let end = format!("{col} < {}", sql_timestamp_literal(window.end));
    let filter = match window.start {
        Some(start) => format!("{col} >= {} AND {end}", sql_timestamp_literal(start)),
        None => end,
    };
    format!(
        "SELECT {} FROM {} WHERE {filter}",
        select_list(table),
        quote_ident(table.name)
    )
}

/// [`new_entries_query`] as a binary COPY, the fastest way to stream rows out of PostgreSQL.
pub fn new_entries_copy(table: &TableSpec, window: &Window) -> String {
    format!(
        "COPY ({}) TO STDOUT (FORMAT binary)",
        new_entries_query(table, window)
    )
}

/// Where the next window may end, by the database's clock, as a `timestamptz` (`$1`: the safety
/// lag in seconds, a float8). It never passes the start of the oldest transaction in this database that holds a
/// transaction id (has written, or is writing), less the lag: the application stamps
/// `last_updated` itself, so such a transaction may commit rows stamped before "now" after we
/// read. Other users' sessions show a NULL `backend_xid` unless the caller may read all
/// statistics (`pg_read_all_stats`, or superuser); see `ACTIVITY_VISIBILITY`.
pub const WINDOW_END_QUERY: &str = "\
SELECT (LEAST(clock_timestamp(), (
    SELECT min(xact_start) FROM pg_stat_activity
    WHERE backend_xid IS NOT NULL AND datname = current_database() AND pid <> pg_backend_pid()
  )) - make_interval(secs => $1))";

/// Whether this session can see other sessions' transactions in `pg_stat_activity`.
pub const ACTIVITY_VISIBILITY: &str = "\
SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')
FROM pg_roles WHERE rolname = current_user";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::table;
    use chrono::TimeZone;

    fn window(start: Option<i64>, end: i64) -> Window {
        Window {
            start: start.map(|s| Utc.timestamp_micros(s).unwrap()),
            end: Utc.timestamp_micros(end).unwrap(),
        }
    }

    #[test]
    fn query_is_half_open_on_last_updated_with_quoted_identifiers() {
        let w = window(Some(1_731_576_605_123_000), 1_731_576_905_000_001);
        assert_eq!(
            new_entries_query(table("currency").unwrap(), &w),
            "SELECT \"currency_id\", \"currency_code\", \"created_at\", \"last_updated\" \
             FROM \"currency\" WHERE \"last_updated\" >= '2024-11-14 09:30:05.123000'::timestamp \
             AND \"last_updated\" < '2024-11-14 09:35:05.000001'::timestamp"
        );
    }

    #[test]
    fn first_window_has_no_lower_bound_and_enums_are_read_as_text() {
        let w = window(None, 1_731_576_905_000_000);
        assert_eq!(
            new_entries_copy(table("transaction").unwrap(), &w),
            "COPY (SELECT \"transaction_id\", \"transaction_type\"::text, \"sales_order_id\", \
             \"purchase_order_id\", \"created_at\", \"last_updated\" FROM \"transaction\" \
             WHERE \"last_updated\" < '2024-11-14 09:35:05.000000'::timestamp) \
             TO STDOUT (FORMAT binary)"
        );
    }

    #[test]
    fn window_start_text_is_the_time_or_minus_infinity() {
        assert_eq!(window(None, 5).start_text(), "-infinity");
        assert_eq!(
            window(Some(1_731_576_605_123_456), 1_731_576_605_123_457).start_text(),
            "2024-11-14T09:30:05.123456Z"
        );
    }

    #[test]
    fn window_emptiness() {
        assert!(!window(None, 5).is_empty());
        assert!(!window(Some(4), 5).is_empty());
        assert!(window(Some(5), 5).is_empty());
        assert!(window(Some(6), 5).is_empty());
    }
}
