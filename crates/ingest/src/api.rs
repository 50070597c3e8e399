//! Datasets paged from an HTTP API (`source.api`, see [`datasets::api`]): each run reads a
//! window of the cursor's time into typed Parquet files in the raw zone, exactly once, however
//! often it is killed, repeated or run twice at once.
//!
//! The dataset's state, `_state/datasets/<dataset>/api.json`, is the one thing a run commits:
//! where the next window starts (`cursor`), and the window being read, if any: its end,
//! fixed when it started, and its ranges (one for a daily run, `first_load_ranges` for the
//! first), each with the last record read. A worker reading a range:
//!
//! 1. pages on from the range's place (see [`Place`]: keyset after the last record's
//!    `(cursor, id)`, offset from one record before the last page's end, or the last page's
//!    link, as declared) into the range's next raw file,
//!    `<dataset>/<window end>-<range>-<part>.parquet` (so the load applies the windows, and
//!    the parts of a range, in order), written create-only. Its
//!    footer says where it ends (the last record's cursor and id, the offset, the link,
//!    whether the range is read to its end) and holds its quarantined records;
//! 2. once the file is whole (its size reached, the range read to its end, the deadline near),
//!    replaces the state, `If-Match` the version it read: the commit. The range's last record
//!    and part count move as the footer says, the file joins `unmarked`; a worker that finds
//!    the range moved by another since it started (two invocations at once) stops;
//! 3. queues the file for transform (a marker), then takes it off `unmarked`. A run that
//!    finds files left on `unmarked` (a crash between) queues them first.
//!
//! A file there already at the key a worker is to write (an attempt killed between its upload
//! and its commit, or one running at the same time) is taken as it is, from its footer: each
//! key is written once, so no file in the raw zone disagrees with the state, and none is left
//! over. When the last range is read to its end, the same commit moves `cursor` to the
//! window's end and closes the window.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
pub use datasets::api::state_key;
use datasets::api::{Api, Paginator, Position, format_time, parse_time, ranges};
use datasets::{BatchLimits, Dataset, LandedFile};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::Mutex;
use tracing::{info, warn};
use utils::deadline::Deadline;
use utils::keys::suffixed_parquet_key;
use utils::metrics;
use utils::parquet_io::ParquetUpload;
use utils::store::S3Store;

use crate::dataset::{DatasetRun, quarantine_key, quarantine_lines};
use crate::error::{Error, Result};

/// What is committed of an API dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Where the next window starts (less the lookback); `None`: the declared initial value,
    /// and the next window is the first load.
    pub cursor: Option<String>,
    /// The window being read.
    pub window: Option<Window>,
    /// Raw files committed whose markers may not be written.
    #[serde(default)]
    pub unmarked: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Its end (exclusive), fixed when it started.
    pub upper: String,
    pub ranges: Vec<Range>,
}

/// A part of a window, read in order by one worker at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub lower: String,
    pub upper: String,
    /// Where it is read to.
    #[serde(flatten)]
    pub place: Place,
    pub done: bool,
    /// Raw files committed.
    pub parts: u32,
    pub rows: u64,
    pub quarantined: u64,
}

/// Where a range is read to, as each paginator pages on from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    /// The last record read (`None`: nothing yet): keyset pages after it, offset pages check
    /// they start at or before it.
    pub after: Option<Position>,
    /// Records of the range before the next page, as the last page found them (offset).
    #[serde(default)]
    pub offset: u64,
    /// The link to the next page (link), resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The HTTP side, built once per cold start: one client (HTTP/2 where the server offers it,
/// connections kept), the tokens read.
#[derive(Clone, Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    secrets: aws_sdk_secretsmanager::Client,
    /// Replaces every declaration's `base_url` (a local server).
    base_url: Option<String>,
    tokens: Arc<Mutex<BTreeMap<String, String>>>,
}

/// How an API run is tuned (tests make them small).
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    /// Records (typed or quarantined) in one raw file at most.
    pub part_records: u64,
    /// The first wait before a retry; each doubles it, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            part_records: 500_000,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl ApiClient {
    pub fn new(secrets: aws_sdk_secretsmanager::Client, base_url: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("totesys-ingest/", env!("CARGO_PKG_VERSION")))
            .gzip(true)
            .pool_idle_timeout(Duration::from_secs(60))
            // The token goes with every request: a redirect is followed on its origin only.
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let same = attempt
                    .previous()
                    .first()
                    .is_some_and(|first| first.origin() == attempt.url().origin());
                if !same {
                    attempt.stop()
                } else if attempt.previous().len() > 5 {
                    attempt.error("more than 5 redirects")
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .expect("the HTTP client builds");
        ApiClient {
            http,
            secrets,
            base_url,
            tokens: Arc::default(),
        }
    }

    fn url(&self, api: &Api) -> String {
        let base = self.base_url.as_deref().unwrap_or(&api.base_url);
        format!("{}{}", base.trim_end_matches('/'), api.resource)
    }

    async fn token(&self, api: &Api) -> Result<Option<(String, String)>> {
        let Some(t) = &api.token else {
            return Ok(None);
        };
        let mut tokens = self.tokens.lock().await;
        if let Some(v) = tokens.get(&t.secret) {
            return Ok(Some((t.header.clone(), v.clone())));
        }
        let text = utils::db::fetch_secret(&self.secrets, &t.secret).await?;
        // The secret's string, or its JSON's `token`.
        let value = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(o)) => match o.get("token").and_then(|v| v.as_str()) {
                Some(v) => v.to_owned(),
                None => {
                    return Err(Error::Shared(utils::Error::Secret {
                        secret_id: t.secret.clone(),
                        reason: "a JSON secret must hold the token as \"token\"".into(),
                        transient: false,
                    }));
                }
            },
            _ => text.trim().to_owned(),
        };
        tokens.insert(t.secret.clone(), value.clone());
        Ok(Some((t.header.clone(), value)))
    }

    /// One page, tried again after a throttle or a failure; `None` when the deadline came
    /// while waiting to try again.
    async fn page(
        &self,
        dataset: &Dataset,
        api: &Api,
        target: Target<'_>,
        limits: &ApiLimits,
        deadline: &Deadline,
    ) -> Result<Option<Page>> {
        match self.get(dataset, api, target, limits, deadline).await? {
            Some(fetched) => Page::parse(dataset, api, fetched).map(Some),
            None => Ok(None),
        }
    }

    /// The one member of the one record a `count(*)` or a cut query answers, `None` for no
    /// record (or the deadline).
    async fn value(
        &self,
        dataset: &Dataset,
        api: &Api,
        query: &[(&'static str, String)],
        member: &str,
        limits: &ApiLimits,
        deadline: &Deadline,
    ) -> Result<Option<String>> {
        let target = Target::Query(query);
        let Some(fetched) = self.get(dataset, api, target, limits, deadline).await? else {
            return Ok(None);
        };
        let page = Page::parse(dataset, api, fetched)?;
        if page.len() == 0 {
            return Ok(None);
        }
        match page.members(0, [member]) {
            Ok([Some(v)]) => Ok(Some(v)),
            Ok([None]) => Err(page.refused(format!("the answer has no {member:?}"))),
            Err(reason) => Err(page.refused(reason)),
        }
    }

    /// Where the first load's ranges start, so each holds about as many records: the cursor
    /// values of `n - 1` evenly spaced records of `[lower, upper)`; fewer if the deadline
    /// comes while they are asked for. `None` if it came before the count.
    #[allow(clippy::too_many_arguments)]
    async fn cuts(
        &self,
        dataset: &Dataset,
        api: &Api,
        lower: &str,
        upper: &str,
        n: u32,
        limits: &ApiLimits,
        deadline: &Deadline,
    ) -> Result<Option<Vec<chrono::DateTime<chrono::Utc>>>> {
        let query = api.count_query(lower, upper);
        let Some(count) = self
            .value(dataset, api, &query, "count", limits, deadline)
            .await?
        else {
            return Ok(None);
        };
        let count: u64 = count.parse().map_err(|_| {
            Error::Dataset(datasets::Error::Unreadable {
                file: describe(&self.url(api), &query),
                reason: format!("the count {count:?} is not a number"),
            })
        })?;
        let n = ranges_for(count, api.page_size, n);
        let mut cuts = Vec::new();
        for k in 1..n {
            let query = api.cut_query(lower, upper, count * k / n);
            let at = self
                .value(dataset, api, &query, &api.cursor.field, limits, deadline)
                .await?;
            match at.map(|at| parse_time(&at)) {
                Some(Ok(at)) => cuts.push(at),
                Some(Err(reason)) => {
                    return Err(Error::Dataset(datasets::Error::Unreadable {
                        file: describe(&self.url(api), &query),
                        reason,
                    }));
                }
                // Fewer records than counted (deleted meanwhile), or the deadline came: fewer,
                // longer ranges, cut where the answers so far say.
                None => break,
            }
        }
        Ok(Some(cuts))
    }

    /// A request's body (2xx), tried again after a throttle or a failure; `None` when the
    /// deadline came while waiting to try again. With the request as errors name it.
    async fn get(
        &self,
        dataset: &Dataset,
        api: &Api,
        target: Target<'_>,
        limits: &ApiLimits,
        deadline: &Deadline,
    ) -> Result<Option<Fetched>> {
        let url = self.url(api);
        let token = self.token(api).await?;
        let value = token.as_ref().map(|(_, v)| v.as_str());
        let request = match target {
            Target::Query(query) => describe(&url, query),
            Target::Link(link) => format!("GET {link}"),
        };
        // A link may carry the token as a parameter: errors and logs never do.
        let request = seal(&request, value);
        // A link is kept sealed (the range's place): the token goes back in to follow it.
        let unsealed;
        let target = match (target, value) {
            (Target::Link(link), Some(value)) if link.contains(TOKEN_MARK) => {
                unsealed = link.replace(TOKEN_MARK, value);
                Target::Link(&unsealed)
            }
            (target, _) => target,
        };
        let mut attempt = 0;
        loop {
            let builder = match target {
                Target::Query(query) => self.http.get(&url).query(query),
                Target::Link(link) => self.http.get(link),
            };
            let mut builder = builder.timeout(Duration::from_secs(api.timeout_seconds));
            if let Some((header, value)) = &token {
                builder = builder.header(header, value);
            }
            let (transient, retry_after, message) = match builder.send().await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    if status.is_success() {
                        let url = response.url().clone();
                        let link = response
                            .headers()
                            .get(reqwest::header::LINK)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        match response.bytes().await {
                            Ok(body) => {
                                return Ok(Some(Fetched {
                                    request,
                                    url,
                                    body,
                                    link,
                                }));
                            }
                            Err(e) => (true, None, format!("reading the body: {e}")),
                        }
                    } else {
                        let body = response.text().await.unwrap_or_default();
                        let message = format!("HTTP {status}: {}", excerpt(&body));
                        if status.as_u16() == 429 || status.is_server_error() {
                            (true, retry_after, message)
                        } else {
                            return Err(Error::Api {
                                request,
                                status: Some(status.as_u16()),
                                message,
                                transient: false,
                            });
                        }
                    }
                }
                // Timed out, refused, reset: worth another try.
                Err(e) => (true, None, describe_reqwest(&e)),
            };
            debug_assert!(transient);
            if attempt >= api.retries {
                return Err(Error::Api {
                    request,
                    status: None,
                    message: format!("{message} (after {} tries)", attempt + 1),
                    transient: true,
                });
            }
            // Full jitter, at least what the server asked for.
            let ceiling = limits
                .backoff
                .saturating_mul(1 << attempt.min(16))
                .min(limits.max_backoff);
            let wait = retry_after
                .unwrap_or_default()
                .max(ceiling.mul_f64(fastrand::f64()));
            if deadline
                .remaining()
                .is_some_and(|left| left.saturating_sub(wait) <= Duration::from_secs(1))
                || deadline.reached()
            {
                warn!(request, message, "the deadline comes before the next try");
                return Ok(None);
            }
            warn!(
                request,
                message,
                wait_ms = wait.as_millis() as u64,
                "trying again"
            );
            metrics::emit(STAGE, Some(&dataset.name), &[(metrics::HTTP_RETRIES, 1.0)]);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

const STAGE: &str = "ingest";

/// Pages a range holds at least: a range costs a request to cut and one to end, worth it only
/// over several pages.
const MIN_RANGE_PAGES: u64 = 4;

/// How many ranges `count` records are read in: as declared, fewer when each would hold fewer
/// than [`MIN_RANGE_PAGES`] pages.
fn ranges_for(count: u64, page_size: u32, declared: u32) -> u64 {
    let worth = count / (u64::from(page_size) * MIN_RANGE_PAGES);
    worth.clamp(1, u64::from(declared))
}

/// A request as errors and quarantine name it: never its token (a header).
fn describe(url: &str, query: &[(&'static str, String)]) -> String {
    let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("GET {url}?{}", q.join("&"))
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

fn excerpt(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &body[..i]),
        None => body.to_owned(),
    }
}

/// What a request asks for: a query of the resource, or a link a page gave.
#[derive(Clone, Copy)]
enum Target<'a> {
    Query(&'a [(&'static str, String)]),
    Link(&'a str),
}

/// What a token carried by a link is kept and shown as.
const TOKEN_MARK: &str = "<token>";

/// `text` (a request, a link) with the token's value, wherever it appears, as `<token>`: how
/// a link the portal hands out is kept (the range's place, in the dataset's state and each
/// file's footer) and named in errors and logs, since some portals put the token in their
/// links as a parameter. [`ApiClient::get`] puts the token back to follow a link, today's
/// token if it was rotated meanwhile. A token the link carries percent-encoded differently
/// (characters outside URL-safe ones) is not recognised.
fn seal(text: &str, token: Option<&str>) -> String {
    match token {
        Some(value) if !value.is_empty() => text.replace(value, TOKEN_MARK),
        _ => text.to_owned(),
    }
}

/// A successful answer.
struct Fetched {
    /// The request as errors name it (no token).
    request: String,
    /// The URL answered, the base of a relative link.
    url: reqwest::Url,
    body: Bytes,
    /// The `Link` header.
    link: Option<String>,
}

/// A page: its records, as the declared format has them, and its link to the next.
struct Page {
    request: String,
    url: reqwest::Url,
    records: Records,
    /// The link to the next page, as the page gave it (not resolved).
    next: Option<String>,
    /// The paging members' names.
    paging: [String; 2],
}

enum Records {
    Json(Vec<Box<RawValue>>),
    /// The page as it came, its header, and each record's cursor and id (empty: none).
    Csv {
        body: Bytes,
        header: Vec<String>,
        fields: Vec<[String; 2]>,
    },
}

impl Page {
    /// A page that is not what the declared format says (a JSON array of objects, or one at
    /// the records selector; a CSV with a header) is refused with its request: what comes
    /// after it cannot be asked for.
    fn parse(dataset: &Dataset, api: &Api, fetched: Fetched) -> Result<Page> {
        let Fetched {
            request,
            url,
            body,
            link,
        } = fetched;
        let refused = |reason: String| {
            Error::Dataset(datasets::Error::Unreadable {
                file: request.clone(),
                reason,
            })
        };
        let next_member = match &api.paginator {
            Paginator::Link { next } => next.as_deref(),
            _ => None,
        };
        let mut next = match api.paginator {
            Paginator::Link { next: None } => link.as_deref().and_then(next_in_link_header),
            _ => None,
        };
        let records = if dataset.source.format == datasets::decl::Format::Csv {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(&body[..]);
            let mut rows = reader.records();
            let header: Vec<String> = match rows.next() {
                None => Vec::new(),
                Some(row) => row
                    .map_err(|e| refused(format!("not CSV: {e}")))?
                    .iter()
                    .map(str::to_owned)
                    .collect(),
            };
            let at = header.iter().position(|h| *h == api.cursor.field);
            let id = header.iter().position(|h| *h == api.cursor.id);
            let fields = rows
                .map(|row| {
                    let row = row.map_err(|e| refused(format!("not CSV: {e}")))?;
                    let get = |i: Option<usize>| i.and_then(|i| row.get(i)).unwrap_or_default();
                    Ok([get(at).to_owned(), get(id).to_owned()])
                })
                .collect::<Result<Vec<_>>>()?;
            Records::Csv {
                body,
                header,
                fields,
            }
        } else if api.records.is_empty() && next_member.is_none() {
            Records::Json(
                serde_json::from_slice(&body)
                    .map_err(|e| refused(format!("not a JSON array of records: {e}")))?,
            )
        } else {
            let mut whole: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| refused(format!("not JSON: {e}")))?;
            if let Some(pointer) = next_member {
                next = match whole.pointer(pointer) {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(link)) => Some(link.clone()),
                    Some(other) => {
                        return Err(refused(format!(
                            "the link to the next page at {pointer:?} is not a string: {}",
                            excerpt(&other.to_string())
                        )));
                    }
                };
            }
            let list = if api.records.is_empty() {
                Some(whole.take())
            } else {
                whole.pointer_mut(&api.records).map(|v| v.take())
            };
            let Some(serde_json::Value::Array(list)) = list else {
                return Err(refused(format!("no array of records at {:?}", api.records)));
            };
            Records::Json(
                list.iter()
                    .map(|r| serde_json::value::to_raw_value(r).expect("a JSON value serializes"))
                    .collect(),
            )
        };
        Ok(Page {
            request,
            url,
            records,
            next,
            paging: [api.cursor.field.clone(), api.cursor.id.clone()],
        })
    }

    /// The page refused, with its request.
    fn refused(&self, reason: String) -> Error {
        Error::Dataset(datasets::Error::Unreadable {
            file: self.request.clone(),
            reason,
        })
    }

    /// The page's link to the next, resolved against its URL: followed only on its origin
    /// (the token goes with it), and never to itself. Sealed (see [`seal`]): the token it
    /// carries, if any, is `<token>` in it and in the errors naming it.
    fn follow(&self, link: &str, token: Option<&str>) -> Result<String> {
        let shown = seal(link, token);
        let next = self
            .url
            .join(link)
            .map_err(|e| self.refused(format!("the link to the next page {shown:?}: {e}")))?;
        if next.origin() != self.url.origin() {
            return Err(self.refused(format!(
                "the link to the next page {shown:?} leaves {}: not followed, the token would \
                 go with it",
                self.url.origin().ascii_serialization()
            )));
        }
        if next == self.url {
            return Err(self.refused("the link to the next page is the page itself".into()));
        }
        Ok(seal(next.as_str(), token))
    }

    fn len(&self) -> usize {
        match &self.records {
            Records::Json(records) => records.len(),
            Records::Csv { fields, .. } => fields.len(),
        }
    }

    /// The `i`th record's `names` members (`None`: it has none), the record read once; or
    /// why it cannot be read.
    fn members<const N: usize>(
        &self,
        i: usize,
        names: [&str; N],
    ) -> std::result::Result<[Option<String>; N], String> {
        match &self.records {
            Records::Json(records) => {
                let fields: BTreeMap<String, &RawValue> = serde_json::from_str(records[i].get())
                    .map_err(|e| format!("record {} is not an object: {e}", i + 1))?;
                Ok(names.map(|name| {
                    fields
                        .get(name)
                        .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
                }))
            }
            Records::Csv { header, body, .. } => {
                let row = csv::ReaderBuilder::new()
                    .has_headers(true)
                    .flexible(true)
                    .from_reader(&body[..])
                    .into_records()
                    .nth(i)
                    .and_then(|r| r.ok());
                Ok(names.map(|name| {
                    let k = header.iter().position(|h| h == name)?;
                    row.as_ref()
                        .and_then(|row| row.get(k))
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned)
                }))
            }
        }
    }

    /// The `i`th record's place in paging order; a record without it is refused with the
    /// page: what comes after it cannot be asked for.
    fn position(&self, i: usize) -> Result<Position> {
        let [at, id] = &self.paging;
        let [at_value, id_value] = match &self.records {
            Records::Csv { fields, .. } => {
                fields[i].clone().map(|v| Some(v).filter(|v| !v.is_empty()))
            }
            Records::Json(_) => self.members(i, [at, id]).map_err(|e| self.refused(e))?,
        };
        let get = |name: &str, value: Option<String>| {
            value
                .ok_or_else(|| self.refused(format!("record {} has no {name:?} to page on", i + 1)))
        };
        Ok(Position {
            at: get(at, at_value)?,
            id: get(id, id_value)?,
        })
    }

    /// A reader of the page's records from the `skip`th on (those before are read already).
    fn reader<'d>(self, dataset: &'d Dataset, skip: usize) -> Result<LandedFile<'d>> {
        let mut reader = match self.records {
            Records::Json(records) => LandedFile::page(records, dataset, &self.request),
            // No header: no records.
            Records::Csv { header, .. } if header.is_empty() => {
                LandedFile::page(Vec::new(), dataset, &self.request)
            }
            Records::Csv { body, .. } => {
                LandedFile::open(std::io::Cursor::new(body), dataset, &self.request)?
            }
        };
        reader.skip(skip)?;
        Ok(reader)
    }
}

/// The `rel="next"` link of a `Link` header (RFC 8288): `<url>; rel="next", <url>; rel="last"`.
fn next_in_link_header(header: &str) -> Option<String> {
    let mut rest = header;
    while let Some(start) = rest.find('<') {
        let end = start + rest[start..].find('>')?;
        let link = &rest[start + 1..end];
        rest = &rest[end + 1..];
        let params = rest[..rest.find('<').unwrap_or(rest.len())]
            .trim()
            .trim_end_matches(',');
        let next = params.split(';').any(|p| {
            let Some((name, value)) = p.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && value
                    .trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if next {
            return Some(link.to_owned());
        }
    }
    None
}

/// What an invocation asks of an API dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Every range of the window (a window is started if there is none).
    All,
    /// One range of the window (a Map item), if it is not read yet.
    Range(usize),
    /// Start the window if there is none, and say which ranges are left: the Map's items.
    /// Complete once the window is planned (or there is nothing to read yet).
    Plan,
}

/// What an invocation did of an API dataset.
#[derive(Debug, Default)]
pub struct ApiRun {
    pub run: DatasetRun,
    /// Every range asked for is read to its end.
    pub complete: bool,
    /// The window's ranges not read yet.
    pub ranges_left: Vec<usize>,
}

/// Reads `work` of `dataset` from its API into `raw`, until `deadline`.
pub async fn run(
    client: &ApiClient,
    raw: &S3Store,
    dataset: &Dataset,
    work: Work,
    limits: ApiLimits,
    deadline: Deadline,
) -> Result<ApiRun> {
    let api = dataset.source.api.as_ref().expect("an API dataset");
    let key = state_key(&dataset.name);
    let shared = Shared {
        raw,
        state: Mutex::new(read_state(raw, &key).await?),
        key,
    };
    shared.queue_unmarked().await?;
    let planned = shared
        .start_window(client, dataset, api, &limits, &deadline)
        .await?;
    let window = shared.state.lock().await.0.window.clone();
    let Some(window) = window else {
        // Nothing to read yet, or the deadline came while the first load was being planned.
        return Ok(ApiRun {
            complete: planned,
            ..ApiRun::default()
        });
    };
    let left: Vec<usize> = (0..window.ranges.len())
        .filter(|k| !window.ranges[*k].done)
        .collect();
    let todo: Vec<usize> = match work {
        // The plan is made: the Map reads what is left.
        Work::Plan => {
            return Ok(ApiRun {
                complete: true,
                ranges_left: left,
                ..ApiRun::default()
            });
        }
        Work::All => left,
        // A Map item late for its window (closed, another open) has nothing to read.
        Work::Range(k) if k >= window.ranges.len() => {
            warn!(
                dataset = dataset.name,
                range = k,
                ranges = window.ranges.len(),
                "no such range in the window open: nothing to read"
            );
            return Ok(ApiRun {
                complete: true,
                ranges_left: left,
                ..ApiRun::default()
            });
        }
        Work::Range(k) => left.into_iter().filter(|r| *r == k).collect(),
    };
    let runs: Vec<Result<Vec<Committed>>> = futures_util::stream::iter(todo.iter().copied())
        .map(|k| {
            let worker = Worker {
                client,
                shared: &shared,
                dataset,
                api,
                upper: &window.upper,
                range: k,
                limits,
                deadline,
            };
            worker.read()
        })
        .buffer_unordered(api.concurrency as usize)
        .collect()
        .await;
    let mut out = ApiRun::default();
    let mut committed = Vec::new();
    for r in runs {
        committed.extend(r?);
    }
    committed.sort_by(|a, b| a.key.cmp(&b.key));
    for c in committed {
        out.run.rows += c.rows;
        out.run.quarantined += c.quarantined;
        if c.has_rows {
            out.run.files.push(c.key.clone());
        }
        out.run.quarantine.extend(c.quarantine);
    }
    let state = shared.state.lock().await.0.clone();
    out.ranges_left = state
        .window
        .as_ref()
        .map(|w| (0..w.ranges.len()).filter(|k| !w.ranges[*k].done).collect())
        .unwrap_or_default();
    // Asked-for ranges read to their end (or the window closed: every range is).
    let open = state.window.as_ref().filter(|w| w.upper == window.upper);
    out.complete = match (open, work) {
        (None, _) => true,
        (Some(w), Work::Range(k)) => w.ranges[k].done,
        (Some(_), _) => false,
    };
    shared.clear_unmarked(&out.run.files).await?;
    info!(
        dataset = dataset.name,
        rows = out.run.rows,
        quarantined = out.run.quarantined,
        files = out.run.files.len(),
        complete = out.complete,
        "read from the API"
    );
    if out.run.rows + out.run.quarantined > 0 {
        metrics::emit(
            STAGE,
            Some(&dataset.name),
            &[
                (metrics::ROWS, out.run.rows as f64),
                (metrics::QUARANTINED_ROWS, out.run.quarantined as f64),
            ],
        );
    }
    Ok(out)
}

async fn read_state(raw: &S3Store, key: &str) -> Result<(State, Option<String>)> {
    match raw.get_version(key).await? {
        None => Ok((State::default(), None)),
        Some((bytes, etag)) => {
            let state = serde_json::from_slice(&bytes).map_err(|e| raw.corrupt(key, e))?;
            Ok((state, Some(etag)))
        }
    }
}

/// The state as last read or written, shared by an invocation's workers.
struct Shared<'a> {
    raw: &'a S3Store,
    key: String,
    state: Mutex<(State, Option<String>)>,
}

/// How often a commit that lost the race reads the state again.
const ATTEMPTS: usize = 32;

impl Shared<'_> {
    /// Applies `change` to the state and writes it, `If-Match` the version read, reading it
    /// again when another writer got there first. `change` returns `false` when the state no
    /// longer allows it (nothing is written).
    async fn commit(&self, mut change: impl FnMut(&mut State) -> bool) -> Result<bool> {
        let mut held = self.state.lock().await;
        for _ in 0..ATTEMPTS {
            let mut next = held.0.clone();
            if !change(&mut next) {
                return Ok(false);
            }
            let body = Bytes::from(serde_json::to_vec(&next).expect("the state serializes"));
            if let Some(etag) = self
                .raw
                .put_if_version(&self.key, body, "application/json", held.1.as_deref())
                .await?
            {
                *held = (next, Some(etag));
                return Ok(true);
            }
            *held = read_state(self.raw, &self.key).await?;
        }
        Err(Error::Shared(utils::Error::Storage {
            operation: "PutObject",
            bucket: self.raw.bucket().to_owned(),
            key: self.key.clone(),
            message: format!("the state changed {ATTEMPTS} times while this run committed"),
            transient: true,
        }))
    }

    /// Queues the files a run committed and may not have queued (it stopped in between).
    async fn queue_unmarked(&self) -> Result<()> {
        let unmarked = self.state.lock().await.0.unmarked.clone();
        if unmarked.is_empty() {
            return Ok(());
        }
        for key in &unmarked {
            utils::cursor::mark_dataset_pending(self.raw, key).await?;
        }
        self.clear_unmarked(&unmarked).await
    }

    async fn clear_unmarked(&self, queued: &[String]) -> Result<()> {
        if queued.is_empty() {
            return Ok(());
        }
        self.commit(|s| {
            let before = s.unmarked.len();
            s.unmarked.retain(|k| !queued.contains(k));
            s.unmarked.len() != before
        })
        .await?;
        Ok(())
    }

    /// Starts a window if none is open: from the cursor less the lookback (or the declared
    /// start) to now less the lag; for the first load, in `first_load_ranges` ranges of about
    /// as many records each. `false` if the deadline came while the first load was planned.
    async fn start_window(
        &self,
        client: &ApiClient,
        dataset: &Dataset,
        api: &Api,
        limits: &ApiLimits,
        deadline: &Deadline,
    ) -> Result<bool> {
        let upper = chrono::Utc::now() - chrono::Duration::seconds(api.cursor.lag_seconds as i64);
        let (lower, first) = {
            let held = self.state.lock().await;
            if held.0.window.is_some() {
                return Ok(true);
            }
            match &held.0.cursor {
                None => (parse_time(&api.cursor.initial).expect("checked"), true),
                Some(c) => (
                    parse_time(c).map_err(|e| Error::Shared(self.raw.corrupt(&self.key, e)))?
                        - chrono::Duration::seconds(api.cursor.lookback_seconds as i64),
                    false,
                ),
            }
        };
        if lower >= upper {
            return Ok(true);
        }
        let cuts = if first && api.first_load_ranges > 1 {
            let (l, u) = (format_time(lower), format_time(upper));
            let n = api.first_load_ranges;
            match client
                .cuts(dataset, api, &l, &u, n, limits, deadline)
                .await?
            {
                Some(cuts) => cuts,
                // The deadline came: the next invocation plans again.
                None => return Ok(false),
            }
        } else {
            Vec::new()
        };
        let window = Window {
            upper: format_time(upper),
            ranges: ranges(lower, upper, cuts)
                .into_iter()
                .map(|(lower, upper)| Range {
                    lower,
                    upper,
                    place: Place::default(),
                    done: false,
                    parts: 0,
                    rows: 0,
                    quarantined: 0,
                })
                .collect(),
        };
        info!(
            dataset = dataset.name,
            lower = window.ranges[0].lower,
            upper = window.upper,
            ranges = window.ranges.len(),
            "a window starts"
        );
        self.commit(|s| {
            if s.window.is_some() {
                // Another run started one: read that one.
                return false;
            }
            s.window = Some(window.clone());
            true
        })
        .await?;
        Ok(true)
    }
}

/// A raw file committed by this invocation.
struct Committed {
    key: String,
    has_rows: bool,
    rows: u64,
    quarantined: u64,
    quarantine: Vec<String>,
}

/// One range's reader.
struct Worker<'a> {
    client: &'a ApiClient,
    shared: &'a Shared<'a>,
    dataset: &'a Dataset,
    api: &'a Api,
    upper: &'a str,
    range: usize,
    limits: ApiLimits,
    deadline: Deadline,
}

/// What a raw file holds of its range, as its footer says: so a file written by an attempt
/// that stopped before its commit (or by one running at the same time) is taken as it is,
/// never written again differently.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartFooter {
    rows: u64,
    /// Where the range is read to after the file.
    place: Place,
    /// The range is read to its end.
    done: bool,
    /// The quarantined records, as the quarantine object's JSON Lines.
    quarantine: String,
}

const AFTER_AT: &str = "api_after_at";
const AFTER_ID: &str = "api_after_id";
const OFFSET: &str = "api_offset";
const NEXT: &str = "api_next";
const DONE: &str = "api_range_done";
const QUARANTINE: &str = "api_quarantine";

impl PartFooter {
    fn metadata(&self) -> Vec<(String, String)> {
        let mut out = vec![
            (DONE.to_owned(), self.done.to_string()),
            (OFFSET.to_owned(), self.place.offset.to_string()),
        ];
        if let Some(p) = &self.place.after {
            out.push((AFTER_AT.to_owned(), p.at.clone()));
            out.push((AFTER_ID.to_owned(), p.id.clone()));
        }
        if let Some(next) = &self.place.next {
            out.push((NEXT.to_owned(), next.clone()));
        }
        if !self.quarantine.is_empty() {
            out.push((QUARANTINE.to_owned(), self.quarantine.clone()));
        }
        out
    }

    /// The footer of the file at `key`, if there is one.
    async fn read(raw: &S3Store, key: &str) -> Result<Option<PartFooter>> {
        if raw.head(key).await?.is_none() {
            return Ok(None);
        }
        let file = utils::parquet_io::open_parquet(raw, key).await?;
        let get = |k: &str| {
            file.metadata
                .iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
        };
        let done = get(DONE).ok_or_else(|| raw.corrupt(key, "the footer has no api_range_done"))?;
        let offset = match get(OFFSET) {
            None => 0,
            Some(n) => n
                .parse()
                .map_err(|_| raw.corrupt(key, format!("api_offset {n:?} is not a number")))?,
        };
        Ok(Some(PartFooter {
            rows: file.rows,
            place: Place {
                after: get(AFTER_AT)
                    .zip(get(AFTER_ID))
                    .map(|(at, id)| Position { at, id }),
                offset,
                next: get(NEXT),
            },
            done: done == "true",
            quarantine: get(QUARANTINE).unwrap_or_default(),
        }))
    }
}

/// A page read on from a range's place: which of its records are new, and the place after it.
struct Step {
    page: Page,
    /// Its first records, read already (offset paging asks from one before).
    skip: usize,
    place: Place,
    /// The range ends with it.
    done: bool,
}

impl Worker<'_> {
    /// Reads the range on from where it was committed, committing a file at a time, until
    /// its end or the deadline; the files committed.
    async fn read(self) -> Result<Vec<Committed>> {
        let mut done = Vec::new();
        loop {
            let Some(started) = self.current().await else {
                return Ok(done);
            };
            if started.done {
                return Ok(done);
            }
            let part = self.part_key(started.parts);
            let footer = match PartFooter::read(self.shared.raw, &part).await? {
                Some(footer) => {
                    info!(part, "a file written before its commit: taken as it is");
                    footer
                }
                None => match self.write(&started, &part).await? {
                    Some(footer) => footer,
                    // The deadline came before a record: nothing to commit.
                    None => return Ok(done),
                },
            };
            let quarantined = footer.quarantine.lines().count() as u64;
            let quarantine = if quarantined == 0 {
                Vec::new()
            } else {
                let key = quarantine_key(&part);
                let body = Bytes::from(footer.quarantine.clone());
                self.shared
                    .raw
                    .put(&key, body, "application/x-ndjson")
                    .await?;
                vec![key]
            };
            let mut range = started.clone();
            range.parts += 1;
            range.rows += footer.rows;
            range.quarantined += quarantined;
            range.done = footer.done;
            range.place = footer.place.clone();
            let k = self.range;
            let has_rows = footer.rows > 0;
            let queued = has_rows.then(|| part.clone());
            let committed = self
                .shared
                .commit(|s| {
                    let Some(w) = s.window.as_mut() else {
                        return false;
                    };
                    if w.upper != self.upper || w.ranges.get(k) != Some(&started) {
                        return false;
                    }
                    w.ranges[k] = range.clone();
                    if w.ranges.iter().all(|r| r.done) {
                        s.cursor = Some(w.upper.clone());
                        s.window = None;
                    }
                    s.unmarked.extend(queued.clone());
                    true
                })
                .await?;
            if !committed {
                // Another invocation committed this file (the same, whoever wrote it) first.
                info!(
                    dataset = self.dataset.name,
                    range = k,
                    "another run read this range meanwhile"
                );
                return Ok(done);
            }
            if let Some(key) = &queued {
                utils::cursor::mark_dataset_pending(self.shared.raw, key).await?;
            }
            done.push(Committed {
                key: part,
                has_rows,
                rows: footer.rows,
                quarantined,
                quarantine,
            });
            if range.done || self.deadline.reached() {
                return Ok(done);
            }
        }
    }

    /// The range as committed, `None` once the window is closed or another.
    async fn current(&self) -> Option<Range> {
        let held = self.shared.state.lock().await;
        let w = held.0.window.as_ref()?;
        (w.upper == self.upper).then(|| w.ranges[self.range].clone())
    }

    /// The range's `part`th file of the window: the same key whichever attempt writes it.
    fn part_key(&self, part: u32) -> String {
        let upper = parse_time(self.upper).expect("written by format_time");
        let suffix = format!("{:03}-{part:05}", self.range);
        suffixed_parquet_key(&self.dataset.name, upper, &suffix)
    }

    /// Pages on from `range` into a new file at `part`, create-only: its footer, the file
    /// another attempt created first's if it did, `None` if the deadline came before a
    /// record.
    async fn write(&self, range: &Range, part: &str) -> Result<Option<PartFooter>> {
        let mut upload = ParquetUpload::create_new(
            self.shared.raw,
            part,
            Arc::new(self.dataset.schema()),
            self.dataset.plain_columns().iter().map(String::as_str),
        )?;
        let filled = self.fill(range, &mut upload).await;
        let (records, footer) = match filled {
            Ok(filled) => filled,
            Err(e) => {
                upload.abort().await;
                return Err(e);
            }
        };
        if records == 0 {
            // Nothing read: no file. A range read to its end is committed as such; otherwise
            // the deadline came first and there is nothing to commit.
            upload.abort().await;
            return Ok(footer.done.then_some(footer));
        }
        let mut metadata: Vec<(String, String)> = self
            .dataset
            .schema()
            .metadata()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        metadata.sort();
        metadata.push(("source_url".into(), self.client.url(self.api)));
        metadata.push(("window_upper".into(), self.upper.to_owned()));
        metadata.extend(footer.metadata());
        let written = upload.finish(metadata).await?;
        if written.existed {
            return PartFooter::read(self.shared.raw, part).await;
        }
        Ok(Some(footer))
    }

    /// Pages from `range` into `upload` until it holds `part_records` records, the range
    /// ends or the deadline nears: the records read and what the file's footer says.
    async fn fill(&self, range: &Range, upload: &mut ParquetUpload) -> Result<(u64, PartFooter)> {
        let mut records = 0u64;
        let mut quarantined = Vec::new();
        let mut footer = PartFooter {
            rows: 0,
            place: range.place.clone(),
            done: false,
            quarantine: String::new(),
        };
        let limits = BatchLimits {
            rows: usize::MAX,
            bytes: usize::MAX,
        };
        // At least a page, so every invocation moves on; then until the deadline (however
        // many empty pages a portal links on).
        let mut pages = 0u64;
        while records < self.limits.part_records && !(pages > 0 && self.deadline.reached()) {
            let Some(step) = self.step(range, &footer.place).await? else {
                break;
            };
            pages += 1;
            records += (step.page.len() - step.skip) as u64;
            let mut reader = step.page.reader(self.dataset, step.skip)?;
            // A page whose records break the declared policies is refused, as a file is.
            while let Some(batch) = reader.next_batch(limits)? {
                if batch.rows.num_rows() > 0 {
                    upload.write(&batch.rows).await?;
                }
                quarantined.extend(batch.quarantined);
            }
            footer.place = step.place;
            if step.done {
                footer.done = true;
                break;
            }
        }
        footer.rows = upload.rows();
        footer.quarantine =
            String::from_utf8(quarantine_lines(&quarantined, None)).expect("JSON is UTF-8");
        Ok((records, footer))
    }

    /// The page after `place`, as the declared paginator asks for it; `None` if the deadline
    /// came while waiting to try again.
    async fn step(&self, range: &Range, place: &Place) -> Result<Option<Step>> {
        let (api, page_size) = (self.api, u64::from(self.api.page_size));
        if let Paginator::Offset = api.paginator {
            return self.offset_step(range, place).await;
        }
        let query;
        let target = match &place.next {
            Some(link) => Target::Link(link),
            // The range's first page, or the first after a keyset page.
            None => {
                query = api.page_query(&range.lower, &range.upper, place.after.as_ref());
                Target::Query(&query)
            }
        };
        let Some(page) = self.fetch(target).await? else {
            return Ok(None);
        };
        let n = page.len();
        let after = match n {
            0 => place.after.clone(),
            n => Some(page.position(n - 1)?),
        };
        let (next, done) = match api.paginator {
            Paginator::Link { .. } => {
                let token = self.client.token(api).await?;
                let token = token.as_ref().map(|(_, v)| v.as_str());
                let next = page
                    .next
                    .as_deref()
                    .map(|l| page.follow(l, token))
                    .transpose()?;
                let done = next.is_none();
                (next, done)
            }
            _ => (None, (n as u64) < page_size),
        };
        Ok(Some(Step {
            page,
            skip: 0,
            place: Place {
                after,
                offset: place.offset + n as u64,
                next,
            },
            done,
        }))
    }

    /// A page of this range's, tried again as the limits say until the deadline.
    async fn fetch(&self, target: Target<'_>) -> Result<Option<Page>> {
        self.client
            .page(self.dataset, self.api, target, &self.limits, &self.deadline)
            .await
    }

    /// Offset paging (see [`Paginator::Offset`]): from one record before `place.offset`, so
    /// the page's first record is one read already; if it is not, records before it left the
    /// window meanwhile, and the page is asked for again a page earlier, until one is.
    async fn offset_step(&self, range: &Range, place: &Place) -> Result<Option<Step>> {
        let page_size = u64::from(self.api.page_size);
        let mark = match &place.after {
            None => None,
            Some(p) => Some(p.order().map_err(|e| {
                Error::Dataset(datasets::Error::Unreadable {
                    file: format!(
                        "the committed place of range {} of {}",
                        self.range, range.lower
                    ),
                    reason: e,
                })
            })?),
        };
        let mut from = if mark.is_some() {
            place.offset.saturating_sub(1)
        } else {
            0
        };
        loop {
            let limit = page_size + u64::from(mark.is_some() && from > 0);
            let query = self
                .api
                .offset_query(&range.lower, &range.upper, from, limit);
            let Some(page) = self.fetch(Target::Query(&query)).await? else {
                return Ok(None);
            };
            let n = page.len();
            let positions = (0..n)
                .map(|i| page.position(i))
                .collect::<Result<Vec<_>>>()?;
            let mut orders = Vec::with_capacity(n);
            for (i, p) in positions.iter().enumerate() {
                let order = p.order().map_err(|e| page.refused(e))?;
                if orders.last().is_some_and(|before| *before >= order) {
                    return Err(page.refused(format!(
                        "record {} does not come after record {i} in the order asked for \
                         ({}, {}), so its offsets cannot be trusted",
                        i + 1,
                        self.api.cursor.field,
                        self.api.cursor.id
                    )));
                }
                orders.push(order);
            }
            // The records read already: a prefix, the page being in order.
            let skip = match &mark {
                None => 0,
                Some(mark) => orders.iter().take_while(|o| *o <= mark).count(),
            };
            if from > 0 && mark.is_some() && skip == 0 {
                warn!(
                    dataset = self.dataset.name,
                    range = self.range,
                    offset = from,
                    "records before this page left the window: asking a page earlier"
                );
                metrics::emit(
                    STAGE,
                    Some(&self.dataset.name),
                    &[(metrics::HTTP_RETRIES, 1.0)],
                );
                from = from.saturating_sub(page_size);
                continue;
            }
            let after = match positions.last() {
                Some(last) if n > skip => Some(last.clone()),
                _ => place.after.clone(),
            };
            return Ok(Some(Step {
                page,
                skip,
                place: Place {
                    after,
                    offset: from + n as u64,
                    next: None,
                },
                done: (n as u64) < limit,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crashes(records: &str) -> Dataset {
        let mut d = datasets::bundled(&[])
            .unwrap()
            .into_iter()
            .find(|d| d.name == "nyc_crashes")
            .unwrap();
        d.source.api.as_mut().unwrap().records = records.into();
        d
    }

    fn fetched(body: &str, link: Option<&str>) -> Fetched {
        Fetched {
            request: "GET /x".into(),
            url: reqwest::Url::parse("https://data.example.org/resource/x.json?$limit=2").unwrap(),
            body: Bytes::from(body.to_owned()),
            link: link.map(str::to_owned),
        }
    }

    fn parse(d: &Dataset, body: &str) -> Result<Page> {
        let api = d.source.api.as_ref().unwrap();
        Page::parse(d, api, fetched(body, None))
    }

    fn last(page: &Page) -> Result<Position> {
        page.position(page.len() - 1)
    }

    #[test]
    fn a_page_s_records_are_where_the_declaration_says_and_it_pages_on_the_last() {
        let record =
            r#"{":id": "r2", ":updated_at": "2024-11-01T10:00:00.000Z", "collision_id": "7"}"#;
        let body = format!(r#"[{{":id": "r1", ":updated_at": "t"}}, {record}]"#);
        let page = parse(&crashes(""), &body).unwrap();
        assert_eq!(page.len(), 2);
        let p = Position {
            at: "2024-11-01T10:00:00.000Z".into(),
            id: "r2".into(),
        };
        assert_eq!(last(&page).unwrap(), p);
        let wrapped = format!(r#"{{"meta": {{}}, "data": {{"rows": [{record}]}}}}"#);
        let page = parse(&crashes("/data/rows"), &wrapped).unwrap();
        assert_eq!((page.len(), last(&page).unwrap()), (1, p.clone()));
        assert_eq!(parse(&crashes(""), "[]").unwrap().len(), 0);
        for (pointer, body, says) in [
            ("", wrapped.as_str(), "not a JSON array of records"),
            (
                "/data/nope",
                wrapped.as_str(),
                "no array of records at \"/data/nope\"",
            ),
        ] {
            let e = parse(&crashes(pointer), body).err().unwrap();
            let text = e.to_string();
            assert!(text.contains("GET /x") && text.contains(says), "{text}");
            assert_eq!(e.error_type(), "InvalidInput");
        }
        let page = parse(&crashes(""), r#"[{"collision_id": "1"}]"#).unwrap();
        let e = last(&page).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("record 1 has no \":updated_at\" to page on"),
            "{text}"
        );
        assert_eq!(e.error_type(), "InvalidInput");
    }

    #[test]
    fn a_csv_page_pages_on_its_columns_and_is_read_by_header_name() {
        let mut d = crashes("");
        d.source.format = datasets::decl::Format::Csv;
        let body = "collision_id,:id,:updated_at,crash_date,crash_time\n\
                    7,r1,2024-11-01T10:00:00.000Z,2024-03-05T00:00:00.000,9:05\n\
                    8,,2024-11-01T10:00:01.000Z,2024-03-05T00:00:00.000,9:06\n\
                    9,r3,2024-11-01T10:00:02.000Z,nope,9:07\n";
        let page = parse(&d, body).unwrap();
        assert_eq!(page.len(), 3);
        assert_eq!(last(&page).unwrap().id, "r3");
        assert!(
            page.position(1)
                .unwrap_err()
                .to_string()
                .contains("record 2 has no \":id\"")
        );
        assert_eq!(
            page.members(0, ["crash_time", ":id"]).unwrap(),
            [Some("9:05".to_owned()), Some("r1".to_owned())]
        );
        // The record read already is passed over, still counted in the places.
        let mut reader = page.reader(&d, 1).unwrap();
        let batch = reader.next_batch(BatchLimits::default()).unwrap().unwrap();
        assert_eq!(batch.rows.num_rows(), 1);
        assert_eq!(batch.quarantined[0].line, 4);
        assert_eq!(parse(&d, "").unwrap().len(), 0);
        assert_eq!(parse(&d, "collision_id,:id\n").unwrap().len(), 0);
    }

    #[test]
    fn links_to_the_next_page_from_the_body_or_the_header_stay_on_their_origin() {
        assert_eq!(
            next_in_link_header(
                r#"<https://a.org/x?page=1>; rel="prev", <https://a.org/x?page=3&b=1,2>; rel="next", <https://a.org/x?page=9>; rel=last"#
            )
            .as_deref(),
            Some("https://a.org/x?page=3&b=1,2")
        );
        assert_eq!(
            next_in_link_header(r#"</x?c=2>;rel="next last""#).as_deref(),
            Some("/x?c=2")
        );
        assert_eq!(
            next_in_link_header(r#"<https://a.org/x>; rel="last""#),
            None
        );
        let mut d = crashes("/results");
        let api = d.source.api.as_mut().unwrap();
        api.paginator = Paginator::Link {
            next: Some("/next".into()),
        };
        let api = d.source.api.clone().unwrap();
        let page = |body: &str| Page::parse(&d, &api, fetched(body, None));
        let p = page(r#"{"results": [], "next": "/resource/x.json?cursor=abc"}"#).unwrap();
        assert_eq!(
            p.follow(p.next.as_deref().unwrap(), None).unwrap(),
            "https://data.example.org/resource/x.json?cursor=abc"
        );
        assert!(page(r#"{"results": []}"#).unwrap().next.is_none());
        assert!(
            page(r#"{"results": [], "next": null}"#)
                .unwrap()
                .next
                .is_none()
        );
        let e = page(r#"{"results": [], "next": 3}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("is not a string"), "{e}");
        let p = page(r#"{"results": []}"#).unwrap();
        let e = p
            .follow("https://elsewhere.org/x", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not followed, the token would go with it"),
            "{e}"
        );
        let e = p.follow("x.json?$limit=2", None).unwrap_err().to_string();
        assert!(e.contains("the page itself"), "{e}");
        // A token the portal puts in its links is kept, and named, as <token>.
        let token = Some("s3cr3t-T0ken");
        assert_eq!(
            p.follow("x.json?cursor=abc&$$app_token=s3cr3t-T0ken", token)
                .unwrap(),
            "https://data.example.org/resource/x.json?cursor=abc&$$app_token=<token>"
        );
        let e = p
            .follow("https://elsewhere.org/x?$$app_token=s3cr3t-T0ken", token)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("$$app_token=<token>") && !e.contains("s3cr3t"),
            "{e}"
        );
        // Without a member, the header's.
        d.source.api.as_mut().unwrap().paginator = Paginator::Link { next: None };
        let api = d.source.api.clone().unwrap();
        let p = Page::parse(
            &d,
            &api,
            fetched(r#"{"results": []}"#, Some("<?p=2>; rel=next")),
        );
        assert_eq!(p.unwrap().next.as_deref(), Some("?p=2"));
    }

    #[test]
    fn a_first_load_is_cut_only_where_ranges_hold_several_pages() {
        assert_eq!(ranges_for(0, 1000, 8), 1);
        assert_eq!(ranges_for(3999, 1000, 8), 1);
        assert_eq!(ranges_for(12_000, 1000, 8), 3);
        assert_eq!(ranges_for(2_000_000, 5000, 8), 8);
        assert_eq!(ranges_for(60_000, 5000, 8), 3);
    }
}
