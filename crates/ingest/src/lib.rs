//! The ingest Lambda: copies the ToteSys rows changed since each table's last successful run
//! into S3 as typed Parquet, one file per table and (sub-)window.
//!
//! A run computes one window end from the source's clock ([`window_end`]), then for each
//! table reads the half-open window `[last ingest time, end)` in binary COPYs, streams it into
//! Parquet in S3, and only then moves the table's watermark. A window of more rows than a file
//! may hold is read as consecutive sub-windows cut at `last_updated` values, a file each, the
//! watermark moving after each; the deadline margin stops the run between files.

pub mod api;
mod budget;
pub mod config;
pub mod dataset;
pub mod error;
pub mod event;
pub mod extract;
mod hold;
mod keys;
mod source;
mod table;
pub mod wire;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::try_join_all;
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_postgres::{Client, IsolationLevel};
use utils::deadline::Deadline;
use utils::metrics;
use utils::query::Window;
use utils::store::S3Store;
use utils::tables::TableSpec;
use utils::watermark::last_ingest_time;

pub use crate::budget::{Budget, Limits, MAX_FILES_PER_INVOCATION};
pub use crate::config::Config;
pub use crate::error::{Error, Result};
use crate::event::tables_from_event;
pub use crate::hold::Hold;
pub use crate::source::{check_source_schema, sees_other_transactions, window_end};
#[cfg(any(test, feature = "test-util"))]
pub use crate::table::ingest_table;
use crate::table::write_watermarks;
pub use crate::table::{TableRead, extract_table, read_table, record_watermark, sub_windows};

/// What the handler needs, built once per cold start.
#[derive(Clone, Debug)]
pub struct Deps {
    pub config: Config,
    pub store: S3Store,
    /// The landing bucket datasets' files arrive in, if any.
    pub landing: Option<S3Store>,
    /// The key service for datasets' encrypted fields.
    pub kms: aws_sdk_kms::Client,
    /// The HTTP client for datasets paged from an API.
    pub api: api::ApiClient,
    /// The database, its secret and TLS setup kept between warm invocations.
    pub db: utils::db::Connector,
}

impl Deps {
    pub fn new(config: Config, sdk: &aws_config::SdkConfig) -> Self {
        let client = utils::store::s3_client(sdk);
        let store = S3Store::new(client.clone(), config.bucket.clone());
        let landing = config
            .landing_bucket
            .as_ref()
            .map(|b| S3Store::new(client, b.clone()));
        let secrets = aws_sdk_secretsmanager::Client::new(sdk);
        let db = utils::db::Connector::new(config.source.clone(), secrets.clone());
        Deps {
            api: api::ApiClient::new(secrets, config.api_base_url.clone()),
            config,
            store,
            landing,
            kms: aws_sdk_kms::Client::new(sdk),
            db,
        }
    }
}

/// The invocation's result, as Step Functions passes it on to transform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    pub bucket: String,
    /// The data files written for each table that had new rows, oldest first: one per
    /// sub-window of at most `INGEST_MAX_ROWS_PER_FILE` rows.
    pub files: BTreeMap<String, Vec<String>>,
    /// Rows read for every table queried (0 for a table with nothing new).
    pub row_counts: BTreeMap<String, u64>,
    pub has_new_data: bool,
    /// False when the deadline stopped the invocation before every table was read to the
    /// window end; `remaining` then says what to ask the next invocation for.
    pub complete: bool,
    pub remaining: Option<Remaining>,
    /// Declared datasets' landed files ingested, per dataset (`files` names database tables
    /// only).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub datasets: BTreeMap<String, dataset::DatasetRun>,
    /// Datasets: landed files named that were ingested already.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_files: Vec<String>,
    /// For `{"api": {"dataset": name}}`: the window's ranges left, a Map's items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_plan: Option<ApiPlan>,
}

/// An API dataset's window as a Map fans it out: read each range with
/// `{"api": {"dataset": dataset, "range": k}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiPlan {
    pub dataset: String,
    pub ranges: Vec<usize>,
}

/// What an incomplete invocation left: an ingest event for the tables not read to the end
/// (each goes on from its watermark), or for the datasets whose sweep it did not finish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Remaining {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables_to_query: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<String>,
}

/// What happened to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRun {
    pub table: &'static str,
    pub rows: u64,
    /// The files written, oldest first.
    pub keys: Vec<String>,
    /// False when the deadline came before the last sub-window, or a dimension table the
    /// table waits for is mid-backfill (see [`Hold`]).
    pub complete: bool,
    /// Where the table's next window starts after this run (`None`: never read).
    pub watermark: Option<DateTime<Utc>>,
}

/// One sub-window read into (at most) one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRun {
    pub table: &'static str,
    pub window: Window,
    pub rows: u64,
    pub key: Option<String>,
    /// The last sub-window of a table not held back: the table is read to the run's end.
    pub caught_up: bool,
}

/// The source tables that become fact tables, from the registry.
pub use utils::tables::FACT_TABLES;

/// The Lambda handler.
pub async fn handler(event: LambdaEvent<Value>, deps: &Deps) -> Result<Output> {
    metrics::timed(STAGE, Box::pin(invoke(event, deps))).await
}

async fn invoke(event: LambdaEvent<Value>, deps: &Deps) -> Result<Output> {
    let landing = deps.landing.as_ref().map(S3Store::bucket);
    if let Some(request) =
        dataset::request_from_event(&event.payload, landing, &deps.config.datasets)?
    {
        let deadline =
            Deadline::from_context_ms(event.context.deadline, deps.config.deadline_margin);
        let keys = dataset::KmsKeys::new(deps.kms.clone());
        let sources = dataset::Sources {
            landing: deps.landing.as_ref(),
            api: Some(&deps.api),
            keys: Some(&keys),
        };
        return dataset::run(
            sources,
            &deps.store,
            &deps.config.datasets,
            request,
            dataset::PartLimits::default(),
            deadline,
        )
        .await;
    }
    let tables = tables_from_event(&event.payload, &deps.config.tables)?;
    let mut client = deps.db.connect("totesys-ingest").await?;
    let limits = Limits {
        max_rows_per_file: deps.config.max_rows_per_file,
        deadline: Deadline::from_context_ms(event.context.deadline, deps.config.deadline_margin),
    };
    let tables = Tables {
        read: &tables,
        deployed: &deps.config.tables,
    };
    run(
        &mut client,
        &deps.store,
        tables,
        deps.config.safety_lag,
        limits,
    )
    .await
}

/// The tables an invocation reads, and those deployed (whose watermarks hold the fact tables
/// back).
#[derive(Debug, Clone, Copy)]
pub struct Tables<'a> {
    pub read: &'a [&'static TableSpec],
    pub deployed: &'a [&'static TableSpec],
}

/// Ingests `tables` from `client` into `store`: one window end for all tables, then each table
/// in turn, a file per sub-window. The first failing table fails the run; files before it
/// keep their progress.
pub async fn run(
    client: &mut Client,
    store: &S3Store,
    Tables {
        read: tables,
        deployed,
    }: Tables<'_>,
    safety_lag: Duration,
    limits: Limits,
) -> Result<Output> {
    check_source_schema(client, tables).await?;
    // Where each table's window starts depends only on earlier runs: look them all up at once.
    let starts = try_join_all(tables.iter().map(|table| async move {
        last_ingest_time(store, table.name)
            .await
            .map_err(|e| Error::from(e).in_table(table.name))
    }))
    .await?;
    let hold = Hold::for_invocation(store, tables, deployed).await?;
    let end = window_end(client, safety_lag).await?;
    // Every read after this point sees every transaction that can hold a row stamped before
    // `end` (see `window_end`); one snapshot keeps the tables of a run consistent.
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    // The reads below run on the transaction's connection, inside it.
    let client = tx.client();
    let mut runs = Vec::with_capacity(tables.len());
    // A watermark is written as soon as its file is complete, while the next file is read, by
    // one writer per table that always writes the newest file completed (the files of a table
    // complete faster than their watermarks could be written one by one); the run reports
    // success only once every watermark is written.
    let mut watermarks = JoinSet::new();
    let mut failure = None;
    let mut budget = Budget::new(limits);
    for (&table, start) in tables.iter().zip(starts) {
        let (end, held) = hold.apply(table, end);
        let window = Window { start, end };
        let mut newest: Option<watch::Sender<FileRun>> = None;
        let read = TableRead {
            table,
            window,
            held,
        };
        let read = read_table(client, store, read, &mut budget, |file| {
            if let Some(sender) = &newest {
                sender.send_replace(file);
            } else {
                let (sender, receiver) = watch::channel(file);
                watermarks.spawn(write_watermarks(store.clone(), receiver));
                newest = Some(sender);
            }
        })
        .await;
        match read {
            Ok(run) => runs.push(run),
            Err(e) => {
                failure = Some(e.in_table(table.name));
                break;
            }
        }
    }
    // Files that are complete keep their progress even when a later one failed.
    while let Some(written) = watermarks.join_next().await {
        if let Err(e) = written.expect("watermark task does not panic") {
            failure.get_or_insert(e);
        }
    }
    if let Some(e) = failure {
        // Best effort: the connection may be the thing that failed (dropping the transaction
        // would roll it back too).
        let _ = tx.rollback().await;
        return Err(e);
    }
    tx.commit().await?;
    let now = Utc::now();
    for run in &runs {
        if let Some(watermark) = run.watermark {
            let lag = (now - watermark).to_std().unwrap_or_default();
            metrics::emit(
                STAGE,
                Some(run.table),
                &[(metrics::FRESHNESS_LAG, lag.as_secs_f64())],
            );
        }
    }
    Ok(output(store.bucket(), &runs))
}

/// The `Stage` of this Lambda's metrics.
const STAGE: &str = "ingest";

fn output(bucket: &str, runs: &[TableRun]) -> Output {
    let files: BTreeMap<String, Vec<String>> = runs
        .iter()
        .filter(|r| !r.keys.is_empty())
        .map(|r| (r.table.to_owned(), r.keys.clone()))
        .collect();
    let left: Vec<String> = runs
        .iter()
        .filter(|r| !r.complete)
        .map(|r| r.table.to_owned())
        .collect();
    Output {
        bucket: bucket.to_owned(),
        has_new_data: !files.is_empty(),
        files,
        row_counts: runs.iter().map(|r| (r.table.to_owned(), r.rows)).collect(),
        complete: left.is_empty(),
        remaining: (!left.is_empty()).then_some(Remaining {
            tables_to_query: left,
            datasets: Vec::new(),
        }),
        datasets: BTreeMap::new(),
        api_plan: None,
        skipped_files: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lists_files_only_for_tables_with_rows_and_what_is_left() {
        let runs = [
            TableRun {
                table: "staff",
                rows: 2,
                keys: vec!["staff/2024/11/14/093005123456.parquet".into()],
                complete: true,
                watermark: None,
            },
            TableRun {
                table: "design",
                rows: 0,
                keys: Vec::new(),
                complete: true,
                watermark: None,
            },
            TableRun {
                table: "sales_order",
                rows: 5,
                keys: vec![
                    "sales_order/2024/11/14/080000000000.parquet".into(),
                    "sales_order/2024/11/14/090000000000.parquet".into(),
                ],
                complete: false,
                watermark: None,
            },
        ];
        let out = output("raw", &runs);
        assert_eq!(
            serde_json::to_value(&out).unwrap(),
            serde_json::json!({
                "bucket": "raw",
                "files": {
                    "sales_order": [
                        "sales_order/2024/11/14/080000000000.parquet",
                        "sales_order/2024/11/14/090000000000.parquet"
                    ],
                    "staff": ["staff/2024/11/14/093005123456.parquet"]
                },
                "row_counts": {"design": 0, "sales_order": 5, "staff": 2},
                "has_new_data": true,
                "complete": false,
                "remaining": {"tables_to_query": ["sales_order"]}
            })
        );
        let done = output("raw", &runs[1..2]);
        assert!(!done.has_new_data);
        assert!(done.complete);
        assert_eq!(done.remaining, None);
    }
}
