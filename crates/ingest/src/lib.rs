//! The ingest Lambda: copies the ToteSys rows changed since each table's last successful run
//! into S3 as typed Parquet, one file per table and (sub-)window.
//!
//! A run computes one window end from the source's clock ([`window_end`]), then for each
//! table reads the half-open window `[last ingest time, end)` in binary COPYs, streams it into
//! Parquet in S3, and only then moves the table's watermark. A window of more rows than a file
//! may hold is read as consecutive sub-windows cut at `last_updated` values, a file each, the
//! watermark moving after each; the deadline margin stops the run between files.

pub mod config;
pub mod error;
pub mod event;
pub mod extract;
pub mod wire;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use futures_util::future::try_join_all;
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_postgres::{Client, IsolationLevel};
use tracing::{info, instrument, warn};
use utils::deadline::Deadline;
use utils::keys::parquet_key;
use utils::metrics;
use utils::query::{
    ACTIVITY_VISIBILITY, WINDOW_END_QUERY, Window, estimate_query, estimated_rows,
    split_points_query,
};
use utils::store::S3Store;
use utils::tables::TableSpec;
use utils::time::format_time;
use utils::watermark::{last_ingest_time, read_state, record_ingest};

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
}

/// What an incomplete invocation left: an ingest event for the tables not read to the end
/// (each goes on from its watermark).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Remaining {
    pub tables_to_query: Vec<String>,
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

/// How much one invocation does: files of at most `max_rows_per_file` rows, and no new file
/// once the deadline is reached (one file is always written, so a run always moves on).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rows_per_file: u64,
    pub deadline: Deadline,
}

/// The source tables that become fact tables, from the registry.
pub use utils::tables::FACT_TABLES;

/// How far a fact table may be read in an invocation that does not read the dimension tables
/// itself: to the earliest watermark among them (rows past it could reference dimension rows
/// not ingested yet, which the load would refuse). A dimension table that stopped short of its
/// own window end (mid-backfill) and whose watermark is still behind this run's end makes the
/// fact table report itself incomplete, so the state machine runs another round; one whose
/// watermark reached the run's end holds nothing back, whatever its last run said (so a table
/// that is not read again cannot hold the facts back for ever). A dimension table never
/// ingested holds nothing back (a fact table may be ingested alone); one read in the same
/// invocation needs no hold (one snapshot, one window end).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hold {
    pub until: Option<DateTime<Utc>>,
    /// The dimension tables mid-backfill, each with its watermark.
    pub backfilling: Vec<(&'static str, DateTime<Utc>)>,
}

impl Hold {
    /// The hold on the fact tables of an invocation reading `tables`, from the state objects
    /// of the `deployed` dimension tables it does not read (a table taken out of the
    /// deployment holds nothing back).
    pub async fn for_invocation(
        store: &S3Store,
        tables: &[&'static TableSpec],
        deployed: &[&'static TableSpec],
    ) -> Result<Hold> {
        let reads_facts = tables.iter().any(|t| t.is_fact());
        let others: Vec<&'static str> = deployed
            .iter()
            .filter(|t| !t.is_fact())
            .map(|t| t.name)
            .filter(|name| !tables.iter().any(|t| t.name == *name))
            .collect();
        if !reads_facts || others.is_empty() {
            return Ok(Hold::default());
        }
        let states = try_join_all(others.iter().map(|name| async move {
            read_state(store, name)
                .await
                .map_err(|e| Error::from(e).in_table(name))
        }))
        .await?;
        let mut hold = Hold::default();
        for (name, state) in others.into_iter().zip(states) {
            let Some(state) = state else { continue };
            hold.until = Some(
                hold.until
                    .map_or(state.window_end, |u| u.min(state.window_end)),
            );
            if !state.caught_up {
                hold.backfilling.push((name, state.window_end));
            }
        }
        Ok(hold)
    }

    /// `table`'s window end under this hold (a dimension table is not held), and whether it
    /// waits for a dimension table that is mid-backfill and behind `end`.
    fn apply(&self, table: &TableSpec, end: DateTime<Utc>) -> (DateTime<Utc>, bool) {
        if !table.is_fact() {
            return (end, false);
        }
        let waiting_for: Vec<&str> = self
            .backfilling
            .iter()
            .filter(|(_, watermark)| *watermark < end)
            .map(|(name, _)| *name)
            .collect();
        let waiting = !waiting_for.is_empty();
        match self.until.filter(|until| *until < end) {
            Some(until) => {
                info!(
                    table = table.name,
                    until = format_time(until),
                    waiting_for = waiting_for.join(", "),
                    "read only up to the dimension tables' watermark"
                );
                (until, waiting)
            }
            None => (end, waiting),
        }
    }
}

/// Files one invocation writes at most, whatever its deadline. The state machine carries every
/// key of a round in its state (ingest's outputs, transform's input and output, load's input),
/// which Step Functions limits to 256 KB: 11 tables of 20 keys (about 60 bytes each, quoted)
/// is 13 KB, and transform writes at most two outputs per raw file, so a round stays well under
/// the limit in every copy. At the default bound a round is then up to 20M rows a table,
/// transformed and loaded before the next round reads on.
pub const MAX_FILES_PER_INVOCATION: usize = 20;

/// What an invocation may still do: [`Limits`], and the files written so far.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub limits: Limits,
    pub files_written: usize,
}

impl Budget {
    pub fn new(limits: Limits) -> Self {
        Budget {
            limits,
            files_written: 0,
        }
    }

    /// True once a file is written and the deadline margin reached, or
    /// [`MAX_FILES_PER_INVOCATION`] files are written.
    fn spent(&self) -> bool {
        self.files_written >= MAX_FILES_PER_INVOCATION
            || self.files_written > 0 && self.limits.deadline.reached()
    }
}

/// The Lambda handler.
pub async fn handler(event: LambdaEvent<Value>, deps: &Deps) -> Result<Output> {
    metrics::timed(STAGE, Box::pin(invoke(event, deps))).await
}

async fn invoke(event: LambdaEvent<Value>, deps: &Deps) -> Result<Output> {
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
        }),
    }
}

/// Reads one table's window `[last ingest time, end)` into S3 with no deadline, then records
/// the watermark of each file in turn. For tests: none of [`run`]'s guarantees (the hold, one
/// watermark writer per table, the deadline) apply.
#[cfg(any(test, feature = "test-util"))]
pub async fn ingest_table(
    client: &Client,
    store: &S3Store,
    table: &'static TableSpec,
    end: DateTime<Utc>,
    max_rows_per_file: u64,
) -> Result<TableRun> {
    let start = last_ingest_time(store, table.name).await?;
    let limits = Limits {
        max_rows_per_file,
        deadline: Deadline::NONE,
    };
    let mut done = Vec::new();
    let window = Window { start, end };
    let mut budget = Budget::new(limits);
    let read = TableRead {
        table,
        window,
        held: false,
    };
    let run = read_table(client, store, read, &mut budget, |f| done.push(f)).await?;
    for file in &done {
        record_watermark(store, file).await?;
    }
    Ok(run)
}

/// One table's part of an invocation: its window, and whether a dimension table mid-backfill
/// holds it back (see [`Hold`]).
#[derive(Debug, Clone, Copy)]
pub struct TableRead {
    pub table: &'static TableSpec,
    pub window: Window,
    pub held: bool,
}

/// Reads one table's window into S3, a file per sub-window, handing each completed file to
/// `written` (which moves the watermark). Stops before a sub-window once the budget is spent.
/// `held`: the table waits for a dimension table (see [`Hold`]), so it is incomplete even
/// when read to the end of `window`.
pub async fn read_table(
    client: &Client,
    store: &S3Store,
    TableRead {
        table,
        window,
        held,
    }: TableRead,
    budget: &mut Budget,
    mut written: impl FnMut(FileRun),
) -> Result<TableRun> {
    let mut run = TableRun {
        table: table.name,
        rows: 0,
        keys: Vec::new(),
        complete: !held,
        watermark: window.start,
    };
    if window.is_empty() {
        info!(
            table = table.name,
            window_start = window.start_text(),
            window_end = format_time(window.end),
            "window is empty: the watermark is already at or past the window end"
        );
        return Ok(run);
    }
    if budget.spent() {
        run.complete = false;
        return Ok(run);
    }
    let windows = sub_windows(client, table, window, budget.limits.max_rows_per_file).await?;
    let parts = windows.len();
    let mut progress = utils::logging::Progress::new(STAGE, Some(table.name), parts);
    for (i, sub) in windows.into_iter().enumerate() {
        if budget.spent() {
            info!(
                table = table.name,
                left = parts - i,
                remaining_ms = budget
                    .limits
                    .deadline
                    .remaining()
                    .map(|d| d.as_millis() as u64),
                files_written = budget.files_written,
                "deadline margin or file count reached: the sub-windows left are for the next \
                 invocation"
            );
            run.complete = false;
            break;
        }
        let mut file = extract_table(client, store, table, sub).await?;
        file.caught_up = i + 1 == parts && !held;
        budget.files_written += 1;
        run.rows += file.rows;
        run.keys.extend(file.key.clone());
        run.watermark = Some(file.window.end);
        progress.step(file.rows);
        written(file);
    }
    Ok(run)
}

/// `window` cut into sub-windows of at most `max_rows` rows (rows sharing a `last_updated`
/// kept together). The split query runs only where the planner estimates the table could hold
/// more than half of `max_rows`: a smaller table cannot fill a file, however long its window.
pub async fn sub_windows(
    client: &Client,
    table: &'static TableSpec,
    window: Window,
    max_rows: u64,
) -> Result<Vec<Window>> {
    let plan = client.query(&estimate_query(table), &[]).await?;
    let estimate = plan
        .first()
        .and_then(|row| row.try_get::<_, &str>(0).ok())
        .and_then(estimated_rows);
    if estimate.is_some_and(|rows| rows.saturating_mul(2) <= max_rows) {
        return Ok(vec![window]);
    }
    let every = i64::try_from(max_rows).unwrap_or(i64::MAX);
    let points: Vec<DateTime<Utc>> = client
        .query(&split_points_query(table, &window), &[&every])
        .await?
        .iter()
        .map(|row| row.try_get::<_, NaiveDateTime>(0).map(|t| t.and_utc()))
        .collect::<Result<_, _>>()?;
    let windows = window.split(&points);
    if windows.len() > 1 {
        info!(
            table = table.name,
            files = windows.len(),
            max_rows,
            "window split into sub-windows"
        );
    }
    Ok(windows)
}

/// Reads one (sub-)window into S3 (nothing for an empty window or one without rows). The
/// caller moves the watermark afterwards, with [`record_watermark`].
#[instrument(skip(client, store), fields(table = table.name))]
pub async fn extract_table(
    client: &Client,
    store: &S3Store,
    table: &'static TableSpec,
    window: Window,
) -> Result<FileRun> {
    let start_text = window.start_text();
    let end_text = format_time(window.end);
    let key = parquet_key(table.name, window.end);
    let started = std::time::Instant::now();
    let written = extract_window(client, store, table, &window, &key).await?;
    let (rows, bytes, key) = match written {
        Some(f) => (f.rows, f.bytes, Some(f.key)),
        None => (0, 0, None),
    };
    let seconds = started.elapsed().as_secs_f64();
    info!(
        table = table.name,
        rows,
        bytes,
        key = key.as_deref().unwrap_or(""),
        window_start = start_text,
        window_end = end_text,
        seconds,
        rows_per_second = (rows as f64 / seconds.max(1e-6)).round() as u64,
        "ingested"
    );
    metrics::emit(
        STAGE,
        Some(table.name),
        &[(metrics::ROWS, rows as f64), (metrics::BYTES, bytes as f64)],
    );
    Ok(FileRun {
        table: table.name,
        window,
        rows,
        key,
        caught_up: false,
    })
}

/// Writes the watermark of the newest file `files` holds until its sender is gone and the
/// last one is written.
async fn write_watermarks(store: S3Store, mut files: watch::Receiver<FileRun>) -> Result<()> {
    loop {
        let file = files.borrow_and_update().clone();
        record_watermark(&store, &file)
            .await
            .map_err(|e| e.in_table(file.table))?;
        // An error only once the sender is gone and its last file was seen.
        if files.changed().await.is_err() {
            return Ok(());
        }
    }
}

/// Moves the table's watermark to the end of the window `file` read. Only after its file (if
/// any) is complete. An empty window leaves the watermark where it is (already at or past it).
pub async fn record_watermark(store: &S3Store, file: &FileRun) -> Result<()> {
    if file.window.is_empty() {
        return Ok(());
    }
    record_ingest(
        store,
        file.table,
        file.window.end,
        file.key.as_deref(),
        file.rows,
        file.caught_up,
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
