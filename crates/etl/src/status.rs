//! `etl status`: where each table stands, from the raw zone to the warehouse.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;
use utils::keys::table_prefix;
use utils::parquet_io::open_parquet;
use utils::store::S3Store;
use utils::tables::{TABLES, TableSpec, quote_ident};
use utils::warehouse::{LEDGER, WAREHOUSE_TABLES};
use utils::watermark::read_state;

use crate::text::{duration, or_dash, table};
use crate::{Context, Pipeline, Result};

/// Everything `etl status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub checked_at: DateTime<Utc>,
    /// `null` when the source was reached, else why not.
    pub source_error: Option<String>,
    pub warehouse_error: Option<String>,
    /// The lag above which a table counts as behind.
    pub max_lag_seconds: f64,
    pub tables: Vec<SourceTable>,
    pub warehouse_tables: Vec<WarehouseTable>,
    /// The declared datasets (datasets/*.json): their files from landing to the warehouse.
    pub datasets: Vec<DatasetFiles>,
    /// The source tables behind by more than `max_lag_seconds` (or never ingested).
    pub behind: Vec<String>,
}

/// A source table: its watermark and last raw file, and how far the source is ahead of it.
#[derive(Debug, Clone, Serialize)]
pub struct SourceTable {
    pub table: &'static str,
    /// Where the next window starts (`None`: never ingested).
    pub watermark: Option<DateTime<Utc>>,
    /// False while a backfill or a replay is part way.
    pub caught_up: Option<bool>,
    /// A replay in progress: the newest file it passes over.
    pub replayed_over: Option<String>,
    /// The newest raw data file, and its rows.
    pub last_file: Option<String>,
    pub last_file_rows: Option<u64>,
    /// The source's newest `last_updated` (when the source was reached).
    pub source_newest: Option<DateTime<Utc>>,
    /// The source's newest `last_updated` minus the watermark, at least 0: changes not read.
    pub lag_seconds: Option<f64>,
    /// Now minus the watermark: how old the newest window end is.
    pub watermark_age_seconds: Option<f64>,
    /// Raw data files after transform's cursor: written, not transformed yet.
    pub not_transformed: Vec<String>,
    /// Now minus the window end of the oldest of them.
    pub oldest_not_transformed_seconds: Option<f64>,
}

/// A warehouse table: its processed files and what the load made of them.
#[derive(Debug, Clone, Serialize)]
pub struct WarehouseTable {
    pub table: &'static str,
    pub processed_files: usize,
    /// Processed files the load ledger does not hold (when the warehouse was reached).
    pub not_loaded: Option<Vec<String>>,
    /// Files in the load's queue (transformed, not loaded yet).
    pub queued: Vec<String>,
    /// Now minus the window end of the oldest of them.
    pub oldest_queued_seconds: Option<f64>,
    /// The newest file in the ledger and when it was loaded.
    pub last_loaded_file: Option<String>,
    pub last_loaded_at: Option<DateTime<Utc>>,
    /// Fact rows transform set aside under `quarantine/<table>/`.
    pub quarantined_rows: u64,
    pub quarantine_files: usize,
}

/// A declared dataset: its files at each hand-off.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetFiles {
    pub dataset: String,
    /// Files under its landing prefix (when the landing bucket is configured).
    pub landed: Option<usize>,
    /// Landed files without a record: not ingested yet (their notification is on its way or
    /// lost: the sweep takes them).
    pub not_ingested: Option<Vec<String>>,
    /// Now minus when the oldest of them landed.
    pub oldest_not_ingested_seconds: Option<f64>,
    /// Files with a record (ingested, or recorded as unreadable).
    pub recorded: usize,
    /// Raw files queued for transform to publish.
    pub to_publish: usize,
    /// Files in the lake.
    pub published: usize,
    /// Published files the load ledger does not hold (a dataset with a warehouse table, when
    /// the warehouse was reached).
    pub not_loaded: Option<usize>,
    /// Files of rows ingest set aside, under `quarantine/<dataset>/` (`etl quarantine list`
    /// counts their rows).
    pub quarantine_files: usize,
    /// A dataset paged from an API: where its next window starts, and the one being read.
    pub api: Option<ApiProgress>,
}

/// An API dataset's committed state (ingest's `_state/datasets/<dataset>/api.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiProgress {
    /// Where the next window starts (less the lookback); `None`: never read to the end of a
    /// window (the first load is to come or under way).
    pub read_to: Option<String>,
    /// The window being read: its end, and its ranges not read yet of all.
    pub window_upper: Option<String>,
    pub ranges_left: Option<(usize, usize)>,
}

impl Status {
    pub fn is_behind(&self) -> bool {
        !self.behind.is_empty()
    }

    /// The report for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let reach = |what: &str, e: &Option<String>| match e {
            None => String::new(),
            Some(e) => format!("{what}: not reached ({e})\n"),
        };
        out += &reach("source", &self.source_error);
        out += &reach("warehouse", &self.warehouse_error);
        let rows: Vec<Vec<String>> = self
            .tables
            .iter()
            .map(|t| {
                let behind = self.behind.iter().any(|b| b == t.table);
                let state = match (t.watermark, behind) {
                    (None, _) => "never ingested",
                    (_, true) if t.replayed_over.is_some() => "BEHIND, replaying",
                    (_, true) if t.caught_up == Some(false) => "BEHIND, catching up",
                    (_, true) => "BEHIND",
                    _ if t.replayed_over.is_some() => "replaying",
                    _ if t.caught_up == Some(false) => "catching up",
                    _ => "ok",
                }
                .to_owned();
                vec![
                    t.table.to_owned(),
                    or_dash(t.watermark.map(utils::time::format_time)),
                    or_dash(t.watermark_age_seconds.map(duration)),
                    or_dash(t.last_file.as_deref().map(file_name)),
                    or_dash(t.last_file_rows),
                    waiting(t.not_transformed.len(), t.oldest_not_transformed_seconds),
                    or_dash(t.lag_seconds.map(duration)),
                    state,
                ]
            })
            .collect();
        out += &table(
            &[
                "source table",
                "watermark",
                "age",
                "last raw file",
                "rows",
                "to transform",
                "lag",
                "state",
            ],
            &rows,
        );
        out.push('\n');
        let rows: Vec<Vec<String>> = self
            .warehouse_tables
            .iter()
            .map(|t| {
                vec![
                    t.table.to_owned(),
                    t.processed_files.to_string(),
                    waiting(t.queued.len(), t.oldest_queued_seconds),
                    or_dash(t.not_loaded.as_ref().map(Vec::len)),
                    or_dash(t.last_loaded_file.as_deref().map(file_name)),
                    or_dash(
                        t.last_loaded_at
                            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
                    ),
                    if t.quarantine_files == 0 {
                        "-".to_owned()
                    } else {
                        format!("{} ({} files)", t.quarantined_rows, t.quarantine_files)
                    },
                ]
            })
            .collect();
        out += &table(
            &[
                "warehouse table",
                "files",
                "queued",
                "not loaded",
                "last loaded file",
                "loaded at (UTC)",
                "quarantined",
            ],
            &rows,
        );
        out.push('\n');
        if !self.datasets.is_empty() {
            let rows: Vec<Vec<String>> = self
                .datasets
                .iter()
                .map(|d| {
                    let (landed, not_ingested) = match (&d.api, &d.not_ingested) {
                        (Some(api), _) => (
                            format!("API, read to {}", api.read_to.as_deref().unwrap_or("-")),
                            match (&api.window_upper, api.ranges_left) {
                                (Some(upper), Some((left, all))) => {
                                    format!("to {upper}: {left} of {all} ranges")
                                }
                                _ => "-".to_owned(),
                            },
                        ),
                        (None, None) => (or_dash(d.landed), "-".to_owned()),
                        (None, Some(files)) => (
                            or_dash(d.landed),
                            waiting(files.len(), d.oldest_not_ingested_seconds),
                        ),
                    };
                    vec![
                        d.dataset.clone(),
                        landed,
                        not_ingested,
                        d.recorded.to_string(),
                        d.to_publish.to_string(),
                        d.published.to_string(),
                        or_dash(d.not_loaded),
                        match d.quarantine_files {
                            0 => "-".to_owned(),
                            n => format!("{n} files"),
                        },
                    ]
                })
                .collect();
            out += &table(
                &[
                    "dataset",
                    "landed",
                    "not ingested",
                    "recorded",
                    "to publish",
                    "in the lake",
                    "not loaded",
                    "quarantined",
                ],
                &rows,
            );
            out.push('\n');
        }
        out += &if self.behind.is_empty() {
            format!(
                "every table within {} of the source\n",
                duration(self.max_lag_seconds)
            )
        } else {
            format!(
                "behind by more than {}: {}\n",
                duration(self.max_lag_seconds),
                self.behind.join(", ")
            )
        };
        out
    }
}

/// Files waiting for a stage: how many, and how old the oldest is.
fn waiting(files: usize, oldest_seconds: Option<f64>) -> String {
    match (files, oldest_seconds) {
        (0, _) => "-".into(),
        (n, Some(age)) => format!("{n} (oldest {})", duration(age)),
        (n, None) => n.to_string(),
    }
}

/// `table/2024/11/14/093005123456.parquet` → `2024/11/14/093005123456.parquet`.
fn file_name(key: &str) -> String {
    key.split_once('/').map_or(key, |(_, rest)| rest).to_owned()
}

/// Reads the state of every table. A source table counts as behind when the source holds
/// changes more than `max_lag` newer than what has reached the warehouse (its watermark, or the
/// oldest raw file not transformed yet); where the source cannot be reached, when that point is
/// older than `max_lag`; and when it was never ingested. A warehouse table counts as behind
/// when a file has waited in the load's queue for more than `max_lag`.
pub async fn status(pipeline: &Pipeline, max_lag: std::time::Duration) -> Result<Status> {
    let now = Utc::now();
    let (source, source_error) = split(pipeline.source().await);
    let (warehouse, warehouse_error) = split(pipeline.warehouse().await);
    let max_lag_seconds = max_lag.as_secs_f64();
    let (cursor, _) = utils::cursor::read_transform_cursor(&pipeline.processed)
        .await
        .doing(|| "reading transform's cursor".into())?;

    let mut tables = Vec::new();
    let mut behind = Vec::new();
    for spec in TABLES {
        let t = source_table(pipeline, spec, &cursor, source.as_ref(), now).await?;
        let late = match (t.watermark, t.lag_seconds, t.watermark_age_seconds) {
            (None, _, _) => true,
            (_, Some(lag), _) => lag > max_lag_seconds,
            // Raw files waiting and nothing of the table transformed yet.
            _ if source.is_some() && !t.not_transformed.is_empty() => true,
            (_, None, Some(age)) => {
                age.max(t.oldest_not_transformed_seconds.unwrap_or(0.0)) > max_lag_seconds
            }
            _ => false,
        };
        if late {
            behind.push(spec.name.to_owned());
        }
        tables.push(t);
    }
    let mut queued: BTreeMap<&'static str, Vec<(DateTime<Utc>, String)>> = BTreeMap::new();
    for key in utils::cursor::pending(&pipeline.processed)
        .await
        .doing(|| "listing the load's queue".into())?
    {
        if let Some((table, at)) = utils::warehouse::processed_file(&key) {
            queued.entry(table.name).or_default().push((at, key));
        }
    }

    let ledger = match &warehouse {
        Some(client) => Some(
            ledger(client)
                .await
                .doing(|| "reading the load ledger".into())?,
        ),
        None => None,
    };
    let quarantine = quarantine_rows(&pipeline.processed).await?;
    let mut warehouse_tables = Vec::new();
    for spec in WAREHOUSE_TABLES {
        let files = data_keys(&pipeline.processed, spec.name).await?;
        let (not_loaded, last) = match &ledger {
            Some(ledger) => (
                Some(
                    files
                        .iter()
                        .filter(|k| !ledger.keys.contains(*k))
                        .cloned()
                        .collect(),
                ),
                ledger.last.get(spec.name).cloned(),
            ),
            None => (None, None),
        };
        let (rows, count) = quarantine.get(spec.name).copied().unwrap_or((0, 0));
        let waiting = queued.remove(spec.name).unwrap_or_default();
        let oldest_queued_seconds = waiting.iter().map(|(at, _)| age(now, *at)).reduce(f64::max);
        if oldest_queued_seconds.is_some_and(|age| age > max_lag_seconds) {
            behind.push(spec.name.to_owned());
        }
        warehouse_tables.push(WarehouseTable {
            table: spec.name,
            processed_files: files.len(),
            queued: waiting.into_iter().map(|(_, key)| key).collect(),
            oldest_queued_seconds,
            not_loaded,
            last_loaded_file: last.as_ref().map(|l| l.0.clone()),
            last_loaded_at: last.map(|l| l.1),
            quarantined_rows: rows,
            quarantine_files: count,
        });
    }
    let datasets = datasets_status(pipeline, ledger.as_ref(), now).await?;
    // A dataset is behind when a file landed longer ago than the lag and is not ingested yet.
    behind.extend(
        datasets
            .iter()
            .filter(|d| {
                d.oldest_not_ingested_seconds
                    .is_some_and(|age| age > max_lag_seconds)
            })
            .map(|d| d.dataset.clone()),
    );
    Ok(Status {
        checked_at: now,
        source_error,
        warehouse_error,
        max_lag_seconds,
        tables,
        warehouse_tables,
        datasets,
        behind,
    })
}

/// Each declared dataset's files at each hand-off, from listings (no file is read).
async fn datasets_status(
    pipeline: &Pipeline,
    ledger: Option<&Ledger>,
    now: DateTime<Utc>,
) -> Result<Vec<DatasetFiles>> {
    let declared = datasets::bundled(&utils::tables::reserved_names())
        .map_err(|e| crate::Error::Usage(e.to_string()))?;
    let queued = utils::cursor::dataset_pending(&pipeline.raw)
        .await
        .doing(|| "listing transform's queue of dataset files".into())?;
    let quarantine = crate::quarantine::dataset_keys(&pipeline.raw).await?;
    let mut out = Vec::new();
    for d in &declared {
        let prefix = format!("{}/", d.name);
        let records: BTreeSet<String> =
            crate::list(&pipeline.raw, &datasets::landed::records_prefix(&d.name))
                .await?
                .into_iter()
                .collect();
        let api = match d.source.api {
            None => None,
            Some(_) => Some(api_progress(pipeline, &d.name).await?),
        };
        let not_ingested = match (&pipeline.landing, d.landing_prefix()) {
            (Some(landing), Some(landing_prefix)) => {
                let files = landing
                    .list_objects(landing_prefix)
                    .await
                    .doing(|| format!("listing the landed files of {}", d.name))?;
                let files: Vec<_> = files
                    .into_iter()
                    .filter(|o| !o.key.ends_with('/'))
                    .collect();
                let missing: Vec<_> = files
                    .iter()
                    .filter(|o| {
                        let id = datasets::landed::file_id(&o.key, &o.etag);
                        !records.contains(&datasets::landed::record_key(&d.name, &id))
                    })
                    .collect();
                let oldest = missing
                    .iter()
                    .map(|o| age(now, o.last_modified))
                    .reduce(f64::max);
                let keys = missing.into_iter().map(|o| o.key.clone()).collect();
                Some((files.len(), keys, oldest))
            }
            _ => None,
        };
        let published = crate::list(&pipeline.processed, &prefix).await?;
        let not_loaded = match (ledger, d.warehouse_table()) {
            (Some(ledger), Some(_)) => Some(
                published
                    .iter()
                    .filter(|k| !ledger.keys.contains(*k))
                    .count(),
            ),
            _ => None,
        };
        let quarantine_files = quarantine
            .iter()
            .filter(|key| crate::quarantine::dataset_of(key) == Some(d.name.as_str()))
            .count();
        out.push(DatasetFiles {
            dataset: d.name.clone(),
            landed: not_ingested.as_ref().map(|(n, _, _)| *n),
            oldest_not_ingested_seconds: not_ingested.as_ref().and_then(|(_, _, age)| *age),
            not_ingested: not_ingested.map(|(_, missing, _)| missing),
            recorded: records.len(),
            to_publish: queued.iter().filter(|k| k.starts_with(&prefix)).count(),
            published: published.len(),
            not_loaded,
            quarantine_files,
            api,
        });
    }
    Ok(out)
}

/// An API dataset's state, as ingest committed it.
async fn api_progress(pipeline: &Pipeline, dataset: &str) -> Result<ApiProgress> {
    let key = datasets::api::state_key(dataset);
    let state: serde_json::Value = match pipeline
        .raw
        .get(&key)
        .await
        .doing(|| format!("reading the API state of {dataset}"))?
    {
        None => serde_json::Value::Null,
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| pipeline.raw.corrupt(&key, e))
            .doing(|| format!("reading the API state of {dataset}"))?,
    };
    let window = &state["window"];
    let ranges = window["ranges"].as_array();
    Ok(ApiProgress {
        read_to: state["cursor"].as_str().map(str::to_owned),
        window_upper: window["upper"].as_str().map(str::to_owned),
        ranges_left: ranges.map(|r| {
            let left = r.iter().filter(|r| r["done"] != true).count();
            (left, r.len())
        }),
    })
}

fn split(reach: crate::Reach) -> (Option<Client>, Option<String>) {
    match reach {
        Ok(client) => (Some(client), None),
        Err(e) => (None, Some(e)),
    }
}

/// Seconds from `at` to `now`.
fn age(now: DateTime<Utc>, at: DateTime<Utc>) -> f64 {
    (now - at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

async fn source_table(
    pipeline: &Pipeline,
    spec: &'static TableSpec,
    cursor: &utils::cursor::TransformCursor,
    source: Option<&Client>,
    now: DateTime<Utc>,
) -> Result<SourceTable> {
    let raw = &pipeline.raw;
    let not_transformed = raw
        .data_files(spec.name, cursor.through(spec.name))
        .await
        .doing(|| format!("listing the raw files of {} to transform", spec.name))?;
    let oldest_not_transformed = not_transformed.first().map(|(at, _)| *at);
    let state = read_state(raw, spec.name)
        .await
        .doing(|| format!("reading the watermark of {}", spec.name))?;
    let watermark = state.as_ref().map(|s| s.window_end);
    // The newest data file: the state names it when its window had rows; else a listing.
    let last_file = match state.as_ref().and_then(|s| s.key.clone()) {
        Some(key) if state.as_ref().is_some_and(|s| s.replayed_over.is_none()) => Some(key),
        _ => data_keys(raw, spec.name).await?.pop(),
    };
    let last_file_rows = match &last_file {
        Some(key) => Some(
            open_parquet(raw, key)
                .await
                .doing(|| format!("reading the footer of s3://{}/{key}", raw.bucket()))?
                .rows,
        ),
        None => None,
    };
    let source_newest = match source {
        Some(client) => {
            let row = client
                .query_one(
                    &format!("SELECT max(last_updated) FROM {}", quote_ident(spec.name)),
                    &[],
                )
                .await
                .map_err(utils::Error::from)
                .doing(|| format!("reading the newest change of source table {}", spec.name))?;
            row.get::<_, Option<NaiveDateTime>>(0).map(|t| t.and_utc())
        }
        None => None,
    };
    // What the warehouse can hold of the table: up to the watermark, or, with raw files still
    // to transform, up to where the oldest of them starts: the end of the last file
    // transformed (none: nothing of the table has gone further than the raw zone).
    let reached = match oldest_not_transformed {
        None => watermark,
        Some(_) => cursor
            .through(spec.name)
            .and_then(|key| utils::keys::parse_file_key(spec.name, key, "parquet")),
    };
    let seconds = |d: chrono::TimeDelta| d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
    Ok(SourceTable {
        table: spec.name,
        watermark,
        caught_up: state.as_ref().map(|s| s.caught_up),
        replayed_over: state.and_then(|s| s.replayed_over),
        last_file,
        last_file_rows,
        source_newest,
        lag_seconds: reached
            .zip(source_newest)
            .map(|(w, newest)| seconds(newest - w).max(0.0)),
        watermark_age_seconds: watermark.map(|w| seconds(now - w)),
        oldest_not_transformed_seconds: oldest_not_transformed.map(|at| age(now, at)),
        not_transformed: not_transformed.into_iter().map(|(_, key)| key).collect(),
    })
}

/// The data files of `table` in `store`, oldest first.
pub async fn data_keys(store: &S3Store, table: &str) -> Result<Vec<String>> {
    Ok(store
        .data_files(table, None)
        .await
        .doing(|| format!("listing s3://{}/{}", store.bucket(), table_prefix(table)))?
        .into_iter()
        .map(|(_, key)| key)
        .collect())
}

struct Ledger {
    keys: BTreeSet<String>,
    /// Per table, the newest file key loaded and when.
    last: BTreeMap<String, (String, DateTime<Utc>)>,
}

async fn ledger(client: &Client) -> utils::Result<Ledger> {
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&LEDGER])
        .await?
        .get(0);
    if !exists {
        return Ok(Ledger {
            keys: BTreeSet::new(),
            last: BTreeMap::new(),
        });
    }
    let keys = client
        .query(&format!("SELECT DISTINCT file_key FROM {LEDGER}"), &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let last = client
        .query(
            &format!(
                "SELECT DISTINCT ON (table_name) table_name, file_key, loaded_at FROM {LEDGER}
                 ORDER BY table_name, file_key DESC, loaded_at DESC"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    Ok(Ledger { keys, last })
}

/// Per table, the quarantined rows and files under `quarantine/<table>/`.
async fn quarantine_rows(store: &S3Store) -> Result<BTreeMap<String, (u64, usize)>> {
    let mut found: BTreeMap<String, (u64, usize)> = BTreeMap::new();
    for key in crate::quarantine::keys(store).await? {
        let Some(table) = crate::quarantine::table_of(&key) else {
            continue;
        };
        let rows = open_parquet(store, &key)
            .await
            .doing(|| format!("reading the footer of s3://{}/{key}", store.bucket()))?
            .rows;
        let entry = found.entry(table.to_owned()).or_default();
        entry.0 += rows;
        entry.1 += 1;
    }
    Ok(found)
}
