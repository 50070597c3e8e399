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

    /// The window cut at `points` (ascending): `[start, p1), [p1, p2), ... [pn, end)`. Points
    /// not strictly inside the window are ignored, so no sub-window is empty by construction
    /// of its bounds (one may still hold no rows).
    pub fn split(&self, points: &[DateTime<Utc>]) -> Vec<Window> {
        let mut windows = Vec::with_capacity(points.len() + 1);
        let mut start = self.start;
        for &point in points {
            if start.is_none_or(|s| s < point) && point < self.end {
                windows.push(Window { start, end: point });
                start = Some(point);
            }
        }
        windows.push(Window {
            start,
            end: self.end,
        });
        windows
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
    format!(
        "SELECT {} FROM {} WHERE {}",
        select_list(table),
        quote_ident(table.name),
        window_filter(window)
    )
}

/// The `WHERE` condition of `window` on `last_updated`.
fn window_filter(window: &Window) -> String {
    let col = quote_ident(LAST_UPDATED);
    let end = format!("{col} < {}", sql_timestamp_literal(window.end));
    match window.start {
        Some(start) => format!("{col} >= {} AND {end}", sql_timestamp_literal(start)),
        None => end,
    }
}

/// Where a window of more than `$1` rows (an `int8`) is cut into sub-windows of at most that
/// many: the `last_updated` of row `$1 + 1`, `2 * $1 + 1`, ... in `last_updated` order, each
/// value once, ascending. Each sub-window ends (exclusive) at a point and the next starts
/// there, so rows sharing one `last_updated` stay together: a sub-window then holds more than
/// `$1` rows by the rows sharing its first value. One scan of the window and a sort of one
/// column (an index on `last_updated` makes both cheap).
pub fn split_points_query(table: &TableSpec, window: &Window) -> String {
    let col = quote_ident(LAST_UPDATED);
    format!(
        "SELECT DISTINCT at FROM (SELECT {col} AS at, row_number() OVER (ORDER BY {col}) AS n \
         FROM {} WHERE {}) AS numbered WHERE n > 1 AND (n - 1) % $1 = 0 ORDER BY at",
        quote_ident(table.name),
        window_filter(window)
    )
}

/// The planner's estimate of the rows of `table` (`EXPLAIN` of a scan of all of it: the
/// statistics scaled to the table's current size, so a table that grew since it was last
/// analysed is still seen at about its size). No rows are read.
pub fn estimate_query(table: &TableSpec) -> String {
    format!("EXPLAIN SELECT FROM {}", quote_ident(table.name))
}

/// The row count in the first line of `EXPLAIN`'s text output (`... rows=N width=W)`).
pub fn estimated_rows(plan_line: &str) -> Option<u64> {
    let rows = &plan_line[plan_line.find(" rows=")? + " rows=".len()..];
    rows.split(' ').next()?.parse().ok()
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
    fn split_points_number_rows_in_last_updated_order_and_keep_ties_together() {
        let w = window(Some(1_731_576_605_123_000), 1_731_576_905_000_001);
        assert_eq!(
            split_points_query(table("currency").unwrap(), &w),
            "SELECT DISTINCT at FROM (SELECT \"last_updated\" AS at, row_number() OVER \
             (ORDER BY \"last_updated\") AS n FROM \"currency\" WHERE \"last_updated\" >= \
             '2024-11-14 09:30:05.123000'::timestamp AND \"last_updated\" < \
             '2024-11-14 09:35:05.000001'::timestamp) AS numbered \
             WHERE n > 1 AND (n - 1) % $1 = 0 ORDER BY at"
        );
    }

    #[test]
    fn a_window_splits_at_the_points_inside_it() {
        let w = window(Some(10), 100);
        let at = |us: i64| Utc.timestamp_micros(us).unwrap();
        assert_eq!(w.split(&[]), vec![w]);
        assert_eq!(
            w.split(&[at(10), at(40), at(70), at(100), at(120)]),
            vec![
                window(Some(10), 40),
                window(Some(40), 70),
                window(Some(70), 100)
            ]
        );
        assert_eq!(
            window(None, 100).split(&[at(5)]),
            vec![window(None, 5), window(Some(5), 100)]
        );
    }

    #[test]
    fn the_estimate_is_read_from_the_plan() {
        assert_eq!(
            estimated_rows("Seq Scan on sales_order  (cost=0.00..4.00 rows=25000000 width=0)"),
            Some(25_000_000)
        );
        assert_eq!(
            estimated_rows("Result  (cost=0.00..0.01 rows=1 width=0)"),
            Some(1)
        );
        assert_eq!(estimated_rows("no estimate"), None);
    }

    #[test]
    fn window_emptiness() {
        assert!(!window(None, 5).is_empty());
        assert!(!window(Some(4), 5).is_empty());
        assert!(window(Some(5), 5).is_empty());
        assert!(window(Some(6), 5).is_empty());
    }
}
