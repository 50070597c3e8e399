//! The ingest Lambda: copies the ToteSys rows changed since each table's last successful run
//! into S3 as typed Parquet, one file per table and window.
//!
//! A run computes one window end from the source's clock ([`window_end`]), then for each
//! table reads the half-open window `[last ingest time, end)` in a binary COPY, streams it into
//! Parquet in S3, and only then moves the table's watermark.

pub mod config;
pub mod error;
pub mod event;
pub mod extract;
pub mod wire;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::try_join_all;
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinSet;
use tokio_postgres::Client;
use tracing::{info, instrument, warn};
use utils::keys::parquet_key;
use utils::query::{ACTIVITY_VISIBILITY, WINDOW_END_QUERY, Window};
use utils::store::S3Store;
use utils::tables::TableSpec;
use utils::time::format_time;
use utils::watermark::{last_ingest_time, record_ingest};

pub use crate::config::Config;
pub use crate::error::{Error, Result};
use crate::event::tables_from_event;
use crate::extract::extract_window;

/// What the handler needs, built once per cold start.
#[derive(Clone, Debug)]
pub struct Deps {
    pub config: Config,
    pub store: S3Store,
    /// The database, its secret and TLS setup kept between warm invocations.
    pub db: utils::db::Connector,
}

impl Deps {
    pub fn new(config: Config, sdk: &aws_config::SdkConfig) -> Self {
        let store = S3Store::new(utils::store::s3_client(sdk), config.bucket.clone());
        let db = utils::db::Connector::new(
            config.source.clone(),
            aws_sdk_secretsmanager::Client::new(sdk),
        );
        Deps { config, store, db }
    }
}

/// The invocation's result, as Step Functions passes it on to transform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    pub bucket: String,
    /// The data file written for each table that had new rows.
    pub files: BTreeMap<String, String>,
    /// Rows read for every table queried (0 for a table with nothing new).
    pub row_counts: BTreeMap<String, u64>,
    pub has_new_data: bool,
}

/// What happened to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRun {
    pub table: &'static str,
    pub window: Window,
    pub rows: u64,
    pub key: Option<String>,
}

/// The Lambda handler.
pub async fn handler(event: LambdaEvent<Value>, deps: &Deps) -> Result<Output> {
    let tables = tables_from_event(&event.payload)?;
    let client = deps.db.connect("totesys-ingest").await?;
    run(&client, &deps.store, &tables, deps.config.safety_lag).await
}

/// Ingests `tables` from `client` into `store`: one window end for all tables, then each table
/// in turn. The first failing table fails the run; tables before it keep their progress.
pub async fn run(
    client: &Client,
    store: &S3Store,
    tables: &[&'static TableSpec],
    safety_lag: Duration,
) -> Result<Output> {
    check_source_schema(client, tables).await?;
    // Where each table's window starts depends only on earlier runs: look them all up at once.
    let starts = try_join_all(tables.iter().map(|table| async move {
        last_ingest_time(store, table.name)
            .await
            .map_err(|e| Error::from(e).in_table(table.name))
    }))
    .await?;
    let end = window_end(client, safety_lag).await?;
    // Every read after this point sees every transaction that can hold a row stamped before
    // `end` (see `window_end`); one snapshot keeps the tables of a run consistent.
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let mut runs = Vec::with_capacity(tables.len());
    // A table's watermark is written as soon as its file is complete, while the next table is
    // read; the run reports success only once every watermark is written.
    let mut watermarks = JoinSet::new();
    let mut failure = None;
    for (&table, start) in tables.iter().zip(starts) {
        match extract_table(client, store, table, Window { start, end }).await {
            Ok(run) => {
                let (store, written) = (store.clone(), run.clone());
                watermarks.spawn(async move {
                    record_watermark(&store, &written)
                        .await
                        .map_err(|e| e.in_table(written.table))
                });
                runs.push(run);
            }
            Err(e) => {
                failure = Some(e.in_table(table.name));
                break;
            }
        }
    }
    // Tables whose files are complete keep their progress even when a later table failed.
    while let Some(written) = watermarks.join_next().await {
        if let Err(e) = written.expect("watermark task does not panic") {
            failure.get_or_insert(e);
        }
    }
    if let Some(e) = failure {
        // Best effort: the connection may be the thing that failed.
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(e);
    }
    client.batch_execute("COMMIT").await?;
    Ok(output(store.bucket(), &runs))
}

fn output(bucket: &str, runs: &[TableRun]) -> Output {
    let files: BTreeMap<String, String> = runs
        .iter()
        .filter_map(|r| Some((r.table.to_owned(), r.key.clone()?)))
        .collect();
    Output {
        bucket: bucket.to_owned(),
        has_new_data: !files.is_empty(),
        files,
        row_counts: runs.iter().map(|r| (r.table.to_owned(), r.rows)).collect(),
    }
}

/// Reads one table's window `[last ingest time, end)` into S3, then records the new watermark.
pub async fn ingest_table(
    client: &Client,
    store: &S3Store,
    table: &'static TableSpec,
    end: DateTime<Utc>,
) -> Result<TableRun> {
    let start = last_ingest_time(store, table.name).await?;
    let run = extract_table(client, store, table, Window { start, end }).await?;
    record_watermark(store, &run).await?;
    Ok(run)
}

/// Reads one table's window into S3 (nothing for an empty window or one without rows). The
/// caller moves the watermark afterwards, with [`record_watermark`].
#[instrument(skip(client, store), fields(table = table.name))]
pub async fn extract_table(
    client: &Client,
    store: &S3Store,
    table: &'static TableSpec,
    window: Window,
) -> Result<TableRun> {
    let start_text = window.start_text();
    let end_text = format_time(window.end);
    if window.is_empty() {
        info!(
            table = table.name,
            window_start = start_text,
            window_end = end_text,
            "window is empty: the watermark is already at or past the window end"
        );
        return Ok(TableRun {
            table: table.name,
            window,
            rows: 0,
            key: None,
        });
    }
    let key = parquet_key(table.name, window.end);
    let written = extract_window(client, store, table, &window, &key).await?;
    let (rows, bytes, key) = match written {
        Some(f) => (f.rows, f.bytes, Some(f.key)),
        None => (0, 0, None),
    };
    info!(
        table = table.name,
        rows,
        bytes,
        key = key.as_deref().unwrap_or(""),
        window_start = start_text,
        window_end = end_text,
        "ingested"
    );
    Ok(TableRun {
        table: table.name,
        window,
        rows,
        key,
    })
}

/// Moves the table's watermark to the end of the window `run` read. Only after its file (if
/// any) is complete. An empty window leaves the watermark where it is (already at or past it).
pub async fn record_watermark(store: &S3Store, run: &TableRun) -> Result<()> {
    if run.window.is_empty() {
        return Ok(());
    }
    record_ingest(
        store,
        run.table,
        run.window.end,
        run.key.as_deref(),
        run.rows,
    )
    .await?;
    Ok(())
}

/// The end of this run's windows, by the source database's clock: now, or the start of the
/// oldest open transaction holding a transaction id if that is earlier, less `safety_lag`.
/// Rows that such a transaction stamps before it commits are then left for a later run,
/// never skipped. Warns when this session cannot see other users' transactions.
pub async fn window_end(client: &Client, safety_lag: Duration) -> Result<DateTime<Utc>> {
    if !sees_other_transactions(client).await? {
        warn!(
            "the source user cannot see other sessions' transactions (grant pg_read_all_stats): \
             the window end relies on the safety lag alone"
        );
    }
    let row = client
        .query_one(WINDOW_END_QUERY, &[&safety_lag.as_secs_f64()])
        .await?;
    Ok(row.try_get::<_, DateTime<Utc>>(0)?)
}

/// Whether this session can see other users' open transactions (superuser or a member of
/// `pg_read_all_stats`); without that, PostgreSQL hides them and the guard cannot wait for them.
pub async fn sees_other_transactions(client: &Client) -> Result<bool> {
    Ok(client.query_one(ACTIVITY_VISIBILITY, &[]).await?.get(0))
}

/// Checks that every requested table exists with the registry's columns and types, so that a
/// changed source fails clearly before anything is written.
pub async fn check_source_schema(client: &Client, tables: &[&'static TableSpec]) -> Result<()> {
    let names: Vec<&str> = tables.iter().map(|t| t.name).collect();
    let found = utils::catalog::columns(client, &names).await?;
    let mut problems = Vec::new();
    for table in tables {
        let columns = found.get(table.name).map(Vec::as_slice);
        let expected = table
            .columns
            .iter()
            .map(|c| (c, c.name, c.pg_type.sql_name()));
        for (registry, column) in
            utils::catalog::differences(table.name, columns, expected, &mut problems)
        {
            if !registry.nullable && !column.not_null {
                problems.push(format!(
                    "{}.{} is nullable, expected NOT NULL",
                    table.name, registry.name
                ));
            }
        }
        for column in columns.unwrap_or_default() {
            if table.column(&column.name).is_none() {
                warn!(
                    table = table.name,
                    column = column.name.as_str(),
                    "source column is not in the registry and is not copied"
                );
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::SourceSchemaMismatch(problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn output_lists_files_only_for_tables_with_rows() {
        let end = Utc.timestamp_micros(1_731_576_605_123_456).unwrap();
        let window = Window { start: None, end };
        let runs = [
            TableRun {
                table: "staff",
                window,
                rows: 2,
                key: Some("staff/2024/11/14/093005123456.parquet".into()),
            },
            TableRun {
                table: "design",
                window,
                rows: 0,
                key: None,
            },
        ];
        let out = output("raw", &runs);
        assert_eq!(
            serde_json::to_value(&out).unwrap(),
            serde_json::json!({
                "bucket": "raw",
                "files": {"staff": "staff/2024/11/14/093005123456.parquet"},
                "row_counts": {"design": 0, "staff": 2},
                "has_new_data": true
            })
        );
        assert!(!output("raw", &runs[1..]).has_new_data);
    }
}
