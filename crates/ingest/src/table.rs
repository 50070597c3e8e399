//! One table's part of a run: its window cut into sub-windows, each read into a file, and the
//! watermark moved after each.

use chrono::{DateTime, NaiveDateTime, Utc};
use tokio::sync::watch;
use tokio_postgres::Client;
use tracing::{info, instrument};
use utils::keys::parquet_key;
use utils::metrics;
use utils::query::{Window, estimate_query, estimated_rows, split_points_query};
use utils::store::S3Store;
use utils::tables::TableSpec;
use utils::time::format_time;
use utils::watermark::record_ingest;

use crate::budget::Budget;
use crate::error::Result;
use crate::extract::extract_window;
use crate::{FileRun, STAGE, TableRun};

/// Reads one table's window `[last ingest time, end)` into S3 with no deadline, then records
/// the watermark of each file in turn. For tests: none of [`crate::run`]'s guarantees (the hold, one
/// watermark writer per table, the deadline) apply.
#[cfg(any(test, feature = "test-util"))]
pub async fn ingest_table(
    client: &Client,
    store: &S3Store,
    table: &'static TableSpec,
    end: DateTime<Utc>,
    max_rows_per_file: u64,
) -> Result<TableRun> {
    let start = utils::watermark::last_ingest_time(store, table.name).await?;
    let limits = crate::budget::Limits {
        max_rows_per_file,
        deadline: utils::deadline::Deadline::NONE,
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
/// holds it back (see [`crate::Hold`]).
#[derive(Debug, Clone, Copy)]
pub struct TableRead {
    pub table: &'static TableSpec,
    pub window: Window,
    pub held: bool,
}

/// Reads one table's window into S3, a file per sub-window, handing each completed file to
/// `written` (which moves the watermark). Stops before a sub-window once the budget is spent.
/// `held`: the table waits for a dimension table (see [`crate::Hold`]), so it is incomplete even
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
pub(crate) async fn write_watermarks(
    store: S3Store,
    mut files: watch::Receiver<FileRun>,
) -> Result<()> {
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
