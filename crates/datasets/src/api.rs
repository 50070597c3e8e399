//! A dataset read from a paged HTTP API (Socrata's SODA, as New York City's open data) rather
//! than from landed files: the declaration's `source.api`, and the queries that page through a
//! window of it.
//!
//! A run reads the window `[lower, upper)` of the cursor field (`:updated_at`), `upper` fixed
//! when the window starts, ordered on `(cursor, id)`. By keyset (the default), each page asks
//! for what comes after the last record of the one before; by offset, each page asks from one
//! record before where the last ended and is checked against it (see [`Paginator::Offset`]);
//! by link, each page follows the link the one before gave. A record amended while the window
//! is read moves past `upper` and is read by the next window, never skipped; one inserted with
//! an old stamp is read by the next window's lookback.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

/// `source.api`: where the records are and how to page through them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// The portal, e.g. `https://data.cityofnewyork.us` (ingest's `API_BASE_URL` replaces it,
    /// for a local server).
    pub base_url: String,
    /// The resource's path, e.g. `/resource/h9gi-nx95.json`: `.json` for `source.format`
    /// `json`, `.csv` for `csv` (a header of member names, an empty field null).
    pub resource: String,
    /// The application token, if the portal wants one.
    #[serde(default)]
    pub token: Option<Token>,
    #[serde(default)]
    pub paginator: Paginator,
    pub cursor: Cursor,
    /// Where a page's records are: a JSON Pointer (RFC 6901) to the array in the body;
    /// empty (SODA's) for a body that is the array.
    #[serde(default)]
    pub records: String,
    /// Records per page (SODA's `$limit`).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// How many ranges of the cursor's time the first load is split into, each read by its own
    /// worker (an item of the Step Functions Map).
    #[serde(default = "one")]
    pub first_load_ranges: u32,
    /// At most this many requests to the portal at once (ranges read at once).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Seconds one request may take, its body included.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Times a throttled (429) or failed (5xx, timed out, refused) request is tried again,
    /// with jittered backoff that honours `Retry-After`.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// When the incremental runs start (an EventBridge schedule expression).
    #[serde(default = "default_schedule")]
    pub schedule: String,
}

/// An application token read from a Secrets Manager secret (its string, or its JSON's
/// `token`) and sent in a header. Never logged.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    pub secret: String,
    #[serde(default = "default_token_header")]
    pub header: String,
}

/// How pages follow each other within a window (or a range of it), ordered on `(cursor, id)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", deny_unknown_fields)]
pub enum Paginator {
    /// `$where` after the last record's `(cursor, id)`, `$order` on both: stable whatever
    /// changes underneath, one request a page. For portals that filter on both (SODA does).
    #[default]
    Keyset,
    /// `$offset` and `$limit` within the window, `$order` on `(cursor, id)`, for portals that
    /// cannot filter on the id. A record that leaves the window (amended, deleted) while it is
    /// read shifts every offset after it, so each page is asked for from one record before
    /// where the last one ended: if that record is not one read already, the window shifted,
    /// and the worker steps back a page at a time until it is. Records are kept only after the
    /// last one read, so none is skipped or read twice; a page out of the declared order is
    /// refused.
    Offset,
    /// The first page of a range is asked for as SODA's (`$where` on the cursor, `$order`,
    /// `$limit`); each page after it is the link the one before gave, followed as it is: in
    /// the body at the JSON Pointer `next` (`"/next"`, `"/links/next"`; absent or null on the
    /// last page), or without `next`, in the `Link` header's `rel="next"` (RFC 8288). A link
    /// is resolved against its page's URL and followed only on the same origin (the token goes
    /// with it). Paging is as stable as the portal's links: cursor links are, offset links
    /// are not (prefer `offset` then).
    Link {
        #[serde(default)]
        next: Option<String>,
    },
}

/// The incremental cursor: a time field the portal stamps every change with, and a unique id
/// that orders records with the same stamp.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    #[serde(default = "default_cursor_field")]
    pub field: String,
    #[serde(default = "default_id_field")]
    pub id: String,
    /// Where the first window starts (`YYYY-MM-DDTHH:MM:SS`, UTC).
    pub initial: String,
    /// How far before the last window's end the next starts, for records stamped late.
    #[serde(default = "default_lookback")]
    pub lookback_seconds: u64,
    /// How far before its start a run's window ends: changes stamped in the last moments may
    /// not be visible yet.
    #[serde(default = "default_lag")]
    pub lag_seconds: u64,
}

fn default_page_size() -> u32 {
    1000
}
fn one() -> u32 {
    1
}
fn default_concurrency() -> u32 {
    4
}
fn default_timeout() -> u64 {
    30
}
fn default_retries() -> u32 {
    8
}
fn default_schedule() -> String {
    "rate(1 day)".into()
}
fn default_token_header() -> String {
    "X-App-Token".into()
}
fn default_cursor_field() -> String {
    ":updated_at".into()
}
fn default_id_field() -> String {
    ":id".into()
}
fn default_lookback() -> u64 {
    3600
}
fn default_lag() -> u64 {
    60
}

/// Where an API dataset's state is in the raw zone (ingest's commit, read by `etl status`).
pub fn state_key(dataset: &str) -> String {
    format!("_state/datasets/{dataset}/api.json")
}

/// Where a range has been read to: the last record's cursor and id, as the portal wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub at: String,
    pub id: String,
}

impl Position {
    /// Where the record is in paging order: its cursor as a time (however precisely the
    /// portal wrote it), then its id as text.
    pub fn order(&self) -> Result<(DateTime<Utc>, &str), String> {
        Ok((parse_time(&self.at)?, &self.id))
    }
}

impl Api {
    /// What serde cannot say.
    pub(crate) fn check(&self) -> Result<(), String> {
        if !(self.base_url.starts_with("https://") || self.base_url.starts_with("http://")) {
            return Err(format!(
                "source.api.base_url {:?}: expected an http(s) URL",
                self.base_url
            ));
        }
        if !self.resource.starts_with('/') || self.resource.contains('?') {
            return Err(format!(
                "source.api.resource {:?}: expected a path like \"/resource/h9gi-nx95.json\" \
                 (no query: the pages' are built from the declaration)",
                self.resource
            ));
        }
        if !(self.resource.ends_with(".json") || self.resource.ends_with(".csv")) {
            return Err(format!(
                "source.api.resource {:?}: expected a path ending in .json or .csv",
                self.resource
            ));
        }
        if let Paginator::Link { next: Some(next) } = &self.paginator
            && !next.starts_with('/')
        {
            return Err(format!(
                "source.api.paginator.next {next:?}: a JSON Pointer like \"/next\", or none for \
                 the Link header"
            ));
        }
        if !(self.records.is_empty() || self.records.starts_with('/')) {
            return Err(format!(
                "source.api.records {:?}: a JSON Pointer like \"/data\", or empty for a body \
                 that is the array",
                self.records
            ));
        }
        if !(1..=50_000).contains(&self.page_size) {
            return Err("source.api.page_size: 1 to 50000 (SODA's most)".into());
        }
        if !(1..=1000).contains(&self.first_load_ranges) {
            return Err("source.api.first_load_ranges: 1 to 1000".into());
        }
        if !(1..=64).contains(&self.concurrency) {
            return Err("source.api.concurrency: 1 to 64".into());
        }
        if self.timeout_seconds == 0 {
            return Err("source.api.timeout_seconds: at least 1".into());
        }
        let field = |f: &str| {
            f.strip_prefix(':')
                .unwrap_or(f)
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !f.is_empty()
        };
        for f in [&self.cursor.field, &self.cursor.id] {
            if !field(f) {
                return Err(format!("source.api.cursor: field {f:?} is not a SoQL name"));
            }
        }
        parse_time(&self.cursor.initial).map_err(|e| format!("source.api.cursor.initial: {e}"))?;
        if let Some(t) = &self.token
            && (t.secret.is_empty() || t.header.is_empty())
        {
            return Err("source.api.token: name the secret and the header".into());
        }
        Ok(())
    }

    /// The members a record carries for paging only (not columns).
    pub fn paging_members(&self) -> [&str; 2] {
        [&self.cursor.field, &self.cursor.id]
    }

    /// The query of one page of `[lower, upper)` after `after` (`None`: from `lower` on):
    /// SODA parameters, to be URL-encoded.
    pub fn page_query(
        &self,
        lower: &str,
        upper: &str,
        after: Option<&Position>,
    ) -> Vec<(&'static str, String)> {
        let (c, i) = (&self.cursor.field, &self.cursor.id);
        let from = match after {
            None => format!("{c} >= {}", literal(lower)),
            Some(p) => format!(
                "({c} > {at} OR ({c} = {at} AND {i} > {id}))",
                at = literal(&p.at),
                id = literal(&p.id)
            ),
        };
        vec![
            ("$select", format!("{i},{c},*")),
            ("$where", format!("{from} AND {c} < {}", literal(upper))),
            ("$order", format!("{c},{i}")),
            ("$limit", self.page_size.to_string()),
        ]
    }
}

impl Api {
    /// How many records `[lower, upper)` holds (`[{"count": "N"}]`).
    pub fn count_query(&self, lower: &str, upper: &str) -> Vec<(&'static str, String)> {
        vec![
            ("$select", "count(*)".into()),
            ("$where", self.within(lower, upper)),
        ]
    }

    /// The cursor value of the record at `offset` in `[lower, upper)`, in paging order: where
    /// a range of the first load starts.
    pub fn cut_query(&self, lower: &str, upper: &str, offset: u64) -> Vec<(&'static str, String)> {
        let (c, i) = (&self.cursor.field, &self.cursor.id);
        vec![
            ("$select", c.clone()),
            ("$where", self.within(lower, upper)),
            ("$order", format!("{c},{i}")),
            ("$offset", offset.to_string()),
            ("$limit", "1".into()),
        ]
    }

    /// `limit` records of `[lower, upper)` from `offset` on, in paging order (the offset
    /// paginator's page).
    pub fn offset_query(
        &self,
        lower: &str,
        upper: &str,
        offset: u64,
        limit: u64,
    ) -> Vec<(&'static str, String)> {
        let (c, i) = (&self.cursor.field, &self.cursor.id);
        vec![
            ("$select", format!("{i},{c},*")),
            ("$where", self.within(lower, upper)),
            ("$order", format!("{c},{i}")),
            ("$offset", offset.to_string()),
            ("$limit", limit.to_string()),
        ]
    }

    fn within(&self, lower: &str, upper: &str) -> String {
        let c = &self.cursor.field;
        format!("{c} >= {} AND {c} < {}", literal(lower), literal(upper))
    }
}

/// A SoQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A portal's time (`2024-11-01T12:00:00`, with or without fractions and a `Z`), as UTC.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    let t = s.strip_suffix('Z').unwrap_or(s);
    NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
        .map(|t| t.and_utc())
        .map_err(|_| format!("{s:?}: expected a time like 2024-11-01T12:00:00 (UTC)"))
}

/// A time as the window's bounds are written: SoQL's floating timestamp, to the millisecond
/// (SODA stamps to the millisecond).
pub fn format_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
}

/// `[lower, upper)` cut at `cuts` (times inside it, in any order): ranges end to end, in
/// order, none empty. The first load cuts at the cursor values of evenly spaced records (see
/// [`Api::cut_query`]), so each range holds about as many records, however they spread in
/// time.
pub fn ranges(
    lower: DateTime<Utc>,
    upper: DateTime<Utc>,
    cuts: impl IntoIterator<Item = DateTime<Utc>>,
) -> Vec<(String, String)> {
    let mut bounds: Vec<String> = std::iter::once(lower)
        .chain(cuts.into_iter().filter(|t| lower < *t && *t < upper))
        .chain(std::iter::once(upper))
        .map(format_time)
        .collect();
    bounds.sort();
    bounds.dedup();
    if bounds.len() == 1 {
        return vec![(bounds[0].clone(), bounds[0].clone())];
    }
    bounds
        .windows(2)
        .map(|w| (w[0].clone(), w[1].clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn api(v: serde_json::Value) -> Result<Api, String> {
        let a: Api = serde_json::from_value(v).map_err(|e| e.to_string())?;
        a.check()?;
        Ok(a)
    }

    fn crashes() -> serde_json::Value {
        json!({
            "base_url": "https://data.cityofnewyork.us",
            "resource": "/resource/h9gi-nx95.json",
            "cursor": {"initial": "2012-07-01T00:00:00"}
        })
    }

    #[test]
    fn defaults_and_the_queries_of_a_keyset_window() {
        let a = api(crashes()).unwrap();
        assert_eq!(a.paginator, Paginator::Keyset);
        assert_eq!(a.paging_members(), [":updated_at", ":id"]);
        assert_eq!((a.page_size, a.first_load_ranges, a.retries), (1000, 1, 8));
        let first = a.page_query("2024-11-01T00:00:00.000", "2024-11-02T00:00:00.000", None);
        assert_eq!(
            first,
            vec![
                ("$select", ":id,:updated_at,*".to_owned()),
                (
                    "$where",
                    ":updated_at >= '2024-11-01T00:00:00.000' AND \
                     :updated_at < '2024-11-02T00:00:00.000'"
                        .to_owned()
                ),
                ("$order", ":updated_at,:id".to_owned()),
                ("$limit", "1000".to_owned()),
            ]
        );
        let after = Position {
            at: "2024-11-01T10:00:00.123Z".into(),
            id: "row-o'k".into(),
        };
        let next = a.page_query("x", "2024-11-02T00:00:00.000", Some(&after));
        assert_eq!(
            next[1].1,
            "(:updated_at > '2024-11-01T10:00:00.123Z' OR (:updated_at = \
             '2024-11-01T10:00:00.123Z' AND :id > 'row-o''k')) AND \
             :updated_at < '2024-11-02T00:00:00.000'"
        );
    }

    #[test]
    fn offset_and_link_paginators() {
        let mut v = crashes();
        v["paginator"] = json!({"type": "offset"});
        let a = api(v.clone()).unwrap();
        assert_eq!(a.paginator, Paginator::Offset);
        assert_eq!(
            a.offset_query("l", "u", 999, 1001),
            vec![
                ("$select", ":id,:updated_at,*".to_owned()),
                (
                    "$where",
                    ":updated_at >= 'l' AND :updated_at < 'u'".to_owned()
                ),
                ("$order", ":updated_at,:id".to_owned()),
                ("$offset", "999".to_owned()),
                ("$limit", "1001".to_owned()),
            ]
        );
        v["paginator"] = json!({"type": "link", "next": "/links/next"});
        v["resource"] = json!("/paged/h9gi-nx95.csv");
        let a = api(v.clone()).unwrap();
        assert_eq!(
            a.paginator,
            Paginator::Link {
                next: Some("/links/next".into())
            }
        );
        v["paginator"] = json!({"type": "link"});
        assert_eq!(api(v).unwrap().paginator, Paginator::Link { next: None });
        let p = |at: &str, id: &str| Position {
            at: at.into(),
            id: id.into(),
        };
        let (a, b) = (
            p("2024-11-01T10:00:00Z", "b"),
            p("2024-11-01T10:00:00.000", "a"),
        );
        assert!(b.order().unwrap() < a.order().unwrap());
        assert!(p("2024-11-01T10:00:00.001", "a").order().unwrap() > a.order().unwrap());
        assert!(p("soon", "a").order().is_err());
    }

    #[test]
    fn mistakes_are_named() {
        for (path, value, says) in [
            ("base_url", json!("data.cityofnewyork.us"), "base_url"),
            ("resource", json!("/resource/x.json?$limit=5"), "no query"),
            (
                "resource",
                json!("/resource/x.xml"),
                "ending in .json or .csv",
            ),
            ("page_size", json!(0), "page_size"),
            ("cursor", json!({"initial": "yesterday"}), "cursor.initial"),
            (
                "cursor",
                json!({"initial": "2012-07-01T00:00:00", "field": "a b"}),
                "not a SoQL name",
            ),
            ("paginator", json!({"type": "page"}), "unknown variant"),
            (
                "paginator",
                json!({"type": "link", "next": "next"}),
                "paginator.next",
            ),
            ("records", json!("data"), "JSON Pointer"),
        ] {
            let mut v = crashes();
            v[path] = value;
            let e = api(v).unwrap_err();
            assert!(e.contains(says), "{path}: {e}");
        }
    }

    #[test]
    fn times_and_ranges() {
        let t = |s| parse_time(s).unwrap();
        assert_eq!(
            t("2024-11-01T12:00:00.123Z"),
            Utc.with_ymd_and_hms(2024, 11, 1, 12, 0, 0).unwrap()
                + chrono::Duration::milliseconds(123)
        );
        assert_eq!(t("2024-11-01T12:00:00"), t("2024-11-01T12:00:00.000"));
        assert_eq!(
            format_time(t("2024-11-01T12:00:00Z")),
            "2024-11-01T12:00:00.000"
        );
        let (lower, upper) = (t("2024-01-01T00:00:00"), t("2024-01-01T00:00:03"));
        let r = ranges(
            lower,
            upper,
            [
                t("2024-01-01T00:00:02Z"),
                t("2024-01-01T00:00:01"),
                t("2024-01-01T00:00:01.000"),
                t("2023-01-01T00:00:00"),
                upper,
            ],
        );
        assert_eq!(
            r,
            vec![
                (
                    "2024-01-01T00:00:00.000".into(),
                    "2024-01-01T00:00:01.000".into()
                ),
                (
                    "2024-01-01T00:00:01.000".into(),
                    "2024-01-01T00:00:02.000".into()
                ),
                (
                    "2024-01-01T00:00:02.000".into(),
                    "2024-01-01T00:00:03.000".into()
                ),
            ]
        );
        assert_eq!(ranges(lower, upper, []).len(), 1);
        let a = api(crashes()).unwrap();
        assert_eq!(
            a.cut_query("l", "u", 250)[3..],
            [("$offset", "250".to_owned()), ("$limit", "1".to_owned())]
        );
        assert_eq!(a.count_query("l", "u")[0].1, "count(*)");
    }
}
