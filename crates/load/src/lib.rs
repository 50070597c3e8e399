//! The load Lambda: applies the processed star schema files to the PostgreSQL warehouse,
//! each file exactly once.
//!
//! Each file loads in one transaction: it is claimed in the load ledger (key and ETag), its
//! rows stream row group by row group from S3 into a binary `COPY` to a temporary staging
//! table, and one `INSERT ... SELECT ... ON CONFLICT` applies them: dimensions are upserted
//! (a row is updated only when a value changed), facts insert new versions and leave known
//! ones (the unique version key). A crash or a lost connection anywhere rolls all of it back,
//! ledger row included, so the next run loads the file again from the start; a file already
//! in the ledger is skipped, whether the event is a retry, a duplicate or a concurrent one
//! (the second claim waits for the first transaction and then finds the row).
//!
//! Order: dimensions before facts. A fact file whose rows reference a dimension row the
//! warehouse does not hold yet (the S3-trigger path can deliver it first) fails with the
//! retryable `MissingDimension` and commits nothing. Dimension files may come in any order
//! (a late notification, a replay, a file a fault left behind newer ones): a row is updated
//! only by a version not older than its own (the source's `last_updated`, see
//! [`utils::warehouse::WarehouseTable::version`]), so a late file changes only the rows it
//! holds the newest version of, and no other file is read again.

pub mod bulk;
pub mod config;
pub mod copy;
pub mod error;
pub mod event;
pub mod schema;
pub mod views;

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use futures_util::TryStreamExt;
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::{Client, Transaction};
use tracing::{debug, info, warn};
use utils::deadline::Deadline;
use utils::file_list::FileList;
use utils::parquet_io::{ParquetStream, open_parquet_version, schema_difference, unwrap_external};
use utils::store::S3Store;
use utils::tables::quote_ident;
use utils::warehouse::{Kind, WAREHOUSE_TABLES, WarehouseTable};

use crate::bulk::Bulk;
pub use crate::config::Config;
pub use crate::error::{Error, Result};
use crate::event::{ProcessedFile, Request, parse_event};
use crate::schema::LEDGER;

/// What the handler needs, built once per cold start.
#[derive(Debug, Clone)]
pub struct Deps {
    pub config: Config,
    pub store: S3Store,
    /// The database, its secret and TLS setup kept between warm invocations.
    pub db: utils::db::Connector,
}

impl Deps {
    pub fn new(config: Config, sdk: &aws_config::SdkConfig) -> Self {
        let store = S3Store::new(
            utils::store::s3_client(sdk),
            config.processed_bucket.clone(),
        );
        let db = utils::db::Connector::new(
            config.warehouse.clone(),
            aws_sdk_secretsmanager::Client::new(sdk),
        );
        Deps { config, store, db }
    }
}

/// The invocation's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Output {
    /// Rows inserted or updated, per warehouse table loaded.
    pub loaded: BTreeMap<String, u64>,
    /// Files already in the ledger, left alone.
    pub skipped_files: Vec<String>,
    /// False when the deadline stopped the invocation before every file, or before the views'
    /// refresh; `remaining` is then the load event for the files left (a list of no files
    /// when only the refresh is).
    pub complete: bool,
    pub remaining: Option<FileList>,
    /// The materialized views refreshed after the files, in the order refreshed.
    pub refreshed_views: Vec<views::Refreshed>,
    /// The views whose refresh failed (the files are committed; the next load tries again).
    pub failed_views: Vec<views::Failed>,
    /// Files copied straight into their table with its foreign keys checked set-based (the
    /// bulk path), per table.
    pub set_based: BTreeMap<String, u64>,
}

impl Default for Output {
    fn default() -> Self {
        Output {
            loaded: BTreeMap::new(),
            skipped_files: Vec::new(),
            complete: true,
            remaining: None,
            refreshed_views: Vec::new(),
            failed_views: Vec::new(),
            set_based: BTreeMap::new(),
        }
    }
}

/// How an invocation loads: until `deadline` (no new file once it is reached; one file always
/// loads), files of at least `bulk.min_rows` rows by the bulk path, and no lock waited for
/// longer than `lock_timeout`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub deadline: Deadline,
    pub bulk: Bulk,
    pub lock_timeout: std::time::Duration,
}

/// The Lambda handler.
pub async fn handler(event: LambdaEvent<Value>, deps: &Deps) -> Result<Output> {
    utils::metrics::timed(STAGE, Box::pin(invoke(event, deps))).await
}

/// The `Stage` of this Lambda's metrics.
pub(crate) const STAGE: &str = "load";

async fn invoke(event: LambdaEvent<Value>, deps: &Deps) -> Result<Output> {
    let request = parse_event(&event.payload)?;
    if request == Request::Nothing {
        info!("no processed data files in the event");
        return Ok(Output::default());
    }
    let settings = Settings {
        deadline: Deadline::from_context_ms(event.context.deadline, deps.config.deadline_margin),
        bulk: Bulk::new(deps.config.bulk_min_rows),
        lock_timeout: deps.config.lock_timeout,
    };
    let mut client = deps.db.connect("totesys-load").await?;
    Box::pin(run(&mut client, &deps.store, request, settings)).await
}

/// Loads every processed file queued for the load (see [`utils::cursor`]) and any `request`
/// names, from `store` into the warehouse behind `client`: dimensions first, each table's files
/// in key order. Each file's marker is cleared once the ledger holds it.
pub async fn run(
    client: &mut Client,
    store: &S3Store,
    request: Request,
    settings: Settings,
) -> Result<Output> {
    // A list of no files is what an invocation leaves when only queued files, or its views'
    // refresh, are left.
    let listed = matches!(request, Request::Files { .. });
    let Settings {
        mut deadline,
        mut bulk,
        lock_timeout,
    } = settings;
    let named = match request {
        Request::Nothing => return Ok(Output::default()),
        Request::Files { bucket, files } => {
            store.expect_bucket(&bucket).map_err(Error::InvalidEvent)?;
            files
        }
        // S3 mode: the notification stands for whatever is queued, and nothing would invoke
        // the load again for files left at a deadline: the queue loads in one go. Each file
        // commits on its own, so a timeout loses at most the file in hand, and Lambda's
        // asynchronous retry goes on from there.
        Request::Run { bucket, .. } => {
            store.expect_bucket(&bucket).map_err(Error::InvalidEvent)?;
            deadline = Deadline::NONE;
            Vec::new()
        }
    };
    let files = queued(store, named).await?;
    let mut output = Output::default();
    if files.is_empty() && !listed {
        return Ok(output);
    }
    // Every statement of the invocation waits for a lock at most this long (a DBA's ALTER
    // TABLE, a plain REFRESH of a view over a table): a lock timeout fails the file, which
    // rolls back and is retried, rather than queueing readers behind the load.
    client
        .batch_execute(&format!("SET lock_timeout = {}", lock_timeout.as_millis()))
        .await?;
    schema::prepare(client).await?;
    let mut progress = utils::logging::Progress::new(STAGE, None, files.len());
    let mut files = files.into_iter();
    let mut done = 0;
    let mut left: BTreeMap<&str, usize> = WAREHOUSE_TABLES.iter().map(|t| (t.name, 0)).collect();
    while let Some(file) = files.next() {
        if done > 0 && deadline.reached() {
            info!(
                files_done = done,
                files_left = 1 + files.len(),
                "deadline margin reached: the files left are for the next invocation"
            );
            for f in std::iter::once(file).chain(files) {
                *left.entry(f.table.name).or_default() += 1;
            }
            output.complete = false;
            // The files left stay queued: the next invocation finds them itself.
            output.remaining = Some(FileList::new(store.bucket()));
            break;
        }
        let table = file.table.name;
        let changed = match load_file(client, store, &file, &mut bulk).await {
            Ok(Some((changed, set_based))) => {
                if set_based {
                    *output.set_based.entry(table.to_owned()).or_default() += 1;
                }
                Some(changed)
            }
            Ok(None) => None,
            Err(e) => {
                if e.is_lock_wait() {
                    warn!(
                        table,
                        key = file.key.as_str(),
                        lock_timeout_ms = lock_timeout.as_millis() as u64,
                        "the file waited too long for a lock (or deadlocked) and rolled back; \
                         a retry loads it"
                    );
                    utils::metrics::emit(
                        STAGE,
                        Some(table),
                        &[(utils::metrics::LOCK_TIMEOUTS, 1.0)],
                    );
                }
                return Err(in_file(e, store, &file));
            }
        };
        utils::cursor::clear_pending(store, &file.key).await?;
        done += 1;
        progress.step(changed.unwrap_or(0));
        match changed {
            Some(n) => *output.loaded.entry(table.to_owned()).or_default() += n,
            None => output.skipped_files.push(file.key),
        }
    }
    for (table, n) in left {
        utils::metrics::emit(
            STAGE,
            Some(table),
            &[(utils::metrics::FILES_WAITING, n as f64)],
        );
    }
    // The views are refreshed once the files are: by this invocation if it has time left,
    // else by one more, handed a list of no files.
    if output.complete {
        if done > 0 && deadline.reached() && views::any_pending(client).await? {
            info!(
                files_done = done,
                "deadline margin reached: the materialized views are refreshed by the next \
                 invocation"
            );
            output.complete = false;
            output.remaining = Some(FileList::new(store.bucket()));
        } else {
            let refresh = views::refresh_pending(client, deadline).await?;
            if refresh.cut {
                info!("deadline margin reached between views: the rest for the next invocation");
                output.complete = false;
                output.remaining = Some(FileList::new(store.bucket()));
            }
            output.refreshed_views = refresh.refreshed;
            output.failed_views = refresh.failed;
        }
    }
    Ok(output)
}

/// The files to load: every one queued and every one of `named` (the ledger skips those it
/// holds), dimensions first, each table's in key order.
pub async fn queued(store: &S3Store, named: Vec<ProcessedFile>) -> Result<Vec<ProcessedFile>> {
    let mut files = named;
    for key in utils::cursor::pending(store).await? {
        match ProcessedFile::from_key(&key) {
            Some((file, _)) if !files.iter().any(|f| f.key == file.key) => files.push(file),
            Some(_) => {}
            None => {
                warn!(
                    key = key.as_str(),
                    "a queued key is not a processed data key; ignored"
                );
            }
        }
    }
    files.sort_by(|a, b| {
        (event::position(a.table), &a.key).cmp(&(event::position(b.table), &b.key))
    });
    Ok(files)
}

/// Names the file in an error that does not already.
fn in_file(e: Error, store: &S3Store, file: &ProcessedFile) -> Error {
    match e {
        named @ (Error::InvalidInput { .. }
        | Error::MissingDimension { .. }
        | Error::File { .. }) => named,
        other => Error::File {
            table: file.table.name,
            bucket: store.bucket().to_owned(),
            key: file.key.clone(),
            source: Box::new(other),
        },
    }
}

fn invalid(store: &S3Store, file: &ProcessedFile, reason: impl Into<String>) -> Error {
    Error::InvalidInput {
        table: file.table.name,
        bucket: store.bucket().to_owned(),
        key: file.key.clone(),
        reason: reason.into(),
    }
}

/// Loads one file in one transaction: `Some(rows inserted or updated)`, or `None` when the
/// ledger already holds it.
async fn load_file(
    client: &mut Client,
    store: &S3Store,
    file: &ProcessedFile,
    bulk: &mut Bulk,
) -> Result<Option<(u64, bool)>> {
    let started = std::time::Instant::now();
    let table = file.table;
    let etag = store
        .etag(&file.key)
        .await?
        .ok_or_else(|| invalid(store, file, "the file does not exist"))?;
    // The footer and schema are checked before the transaction starts. Every read is of the
    // version whose ETag the ledger records.
    let opened = open(store, file, &etag).await?;
    let bytes = opened.bytes;
    let count = |n: u64| i64::try_from(n).map_err(|_| invalid(store, file, format!("{n} rows")));
    let rows = count(opened.rows)?;

    let tx = client.transaction().await?;
    if table.kind == Kind::Dimension {
        // One file of a dimension at a time: two upserting the same keys in different orders
        // would deadlock. Their order does not matter (see `apply_sql`).
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&format!("{LEDGER}:{}", table.name)],
        )
        .await?;
    }
    let claimed = tx
        .execute(
            &format!(
                "INSERT INTO {LEDGER} (file_key, etag, table_name, rows, changed)
                 VALUES ($1, $2, $3, $4, 0) ON CONFLICT DO NOTHING"
            ),
            &[&file.key, &etag, &table.name, &rows],
        )
        .await?;
    if claimed == 0 {
        tx.rollback().await?;
        info!(
            table = table.name,
            key = file.key.as_str(),
            "already loaded; skipped"
        );
        return Ok(None);
    }
    let checks = bulk.prepare(&tx, table, opened.rows).await?;
    let direct = bulk.direct(opened.rows).then_some(checks);
    let (changed, set_based) = apply(&tx, store, (file, &etag), opened, direct).await?;
    tx.execute(
        &format!("UPDATE {LEDGER} SET changed = $3 WHERE file_key = $1 AND etag = $2"),
        &[&file.key, &etag, &count(changed)?],
    )
    .await?;
    if changed > 0 {
        views::mark_changed(&tx, table.name).await?;
    }
    tx.commit().await?;
    let seconds = started.elapsed().as_secs_f64();
    info!(
        table = table.name,
        key = file.key.as_str(),
        rows,
        changed,
        foreign_keys_checked_set_based = set_based,
        seconds,
        rows_per_second = (rows as f64 / seconds.max(1e-6)).round() as u64,
        "loaded"
    );
    utils::metrics::emit(
        STAGE,
        Some(table.name),
        &[
            (utils::metrics::ROWS, rows as f64),
            (utils::metrics::BYTES, bytes as f64),
            (utils::metrics::CHANGED_ROWS, changed as f64),
        ],
    );
    Ok(Some((changed, set_based)))
}

/// Opens a processed file and checks its schema against the registry.
async fn open(store: &S3Store, file: &ProcessedFile, etag: &str) -> Result<ParquetStream> {
    let opened = open_parquet_version(store, &file.key, etag)
        .await
        .map_err(|e| read_error(store, file, e))?;
    let problem = schema_difference(&opened.schema, &file.table.arrow_schema());
    match problem {
        Some(p) => Err(invalid(
            store,
            file,
            format!("schema does not match the warehouse registry: {p}"),
        )),
        None => Ok(opened),
    }
}

fn read_error(store: &S3Store, file: &ProcessedFile, e: utils::Error) -> Error {
    if e.is_transient() {
        Error::Shared(e)
    } else {
        invalid(store, file, e.to_string())
    }
}

/// Why a COPY into the table itself stopped.
enum CopyFailure {
    /// A row whose key the table holds already (or the file holds twice): the file goes
    /// through the staging table's upsert instead.
    Conflict,
    Other(Error),
}

/// Applies the file's rows to the table: rows inserted or updated, and whether its foreign keys
/// were checked set-based. A file of at least
/// `bulk.min_rows` rows (`direct` is `Some`) is first copied straight into the table, inside a
/// savepoint (the temporary table and the `INSERT ... SELECT` cost more than the COPY itself),
/// with its foreign keys checked set-based where `direct` holds the checks (see [`bulk`]);
/// when its first batch's keys are in the table already, or a later key is, the file goes the
/// usual way: staged by COPY into a temporary table, then applied by one `INSERT ... ON
/// CONFLICT`, with every check row by row.
async fn apply(
    tx: &Transaction<'_>,
    store: &S3Store,
    (file, etag): (&ProcessedFile, &str),
    mut opened: ParquetStream,
    direct: Option<Option<bulk::Checks>>,
) -> Result<(u64, bool)> {
    let started = std::time::Instant::now();
    let table = file.table;
    let mut first = None;
    if let Some(mut checks) = direct {
        first = next_batch(store, file, &mut opened).await?;
        let held = match &first {
            Some(batch) => bulk::holds_any_key(tx, table, batch).await?,
            None => false,
        };
        if !held {
            tx.batch_execute("SAVEPOINT direct_copy").await?;
            if checks.is_some() {
                // Undone with the savepoint if the COPY meets a key after all.
                tx.batch_execute("SET LOCAL session_replication_role = replica")
                    .await?;
            }
            let target = quote_ident(table.name);
            match copy_rows(
                tx,
                store,
                file,
                (first.take(), opened),
                &target,
                checks.as_mut(),
            )
            .await
            {
                Ok(rows) => {
                    if let Some(checks) = &checks {
                        if let Some(detail) = checks.run(tx, table.name).await? {
                            return Err(Error::MissingDimension {
                                table: table.name,
                                bucket: store.bucket().to_owned(),
                                key: file.key.clone(),
                                detail,
                            });
                        }
                        tx.batch_execute("SET LOCAL session_replication_role = origin")
                            .await?;
                    }
                    tx.batch_execute("RELEASE SAVEPOINT direct_copy").await?;
                    debug!(
                        table = table.name,
                        key = file.key.as_str(),
                        set_based_checks = checks.as_ref().map_or(0, bulk::Checks::len),
                        seconds = started.elapsed().as_secs_f64(),
                        "copied straight into the table"
                    );
                    return Ok((rows, checks.is_some()));
                }
                Err(CopyFailure::Conflict) => {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT direct_copy")
                        .await?;
                    info!(
                        table = table.name,
                        key = file.key.as_str(),
                        "the table holds some of the file's keys: staged and applied instead"
                    );
                    opened = open(store, file, etag).await?;
                }
                Err(CopyFailure::Other(e)) => return Err(e),
            }
        }
    }
    let stage_columns: Vec<String> = table
        .columns
        .iter()
        .map(|c| format!("{} {}", quote_ident(c.name), c.wh_type.sql_name()))
        .collect();
    tx.batch_execute(&format!(
        "DROP TABLE IF EXISTS pg_temp.load_stage;
         CREATE TEMP TABLE load_stage ({}) ON COMMIT DROP",
        stage_columns.join(", ")
    ))
    .await?;
    copy_rows(tx, store, file, (first, opened), "load_stage", None)
        .await
        .map_err(|e| match e {
            CopyFailure::Conflict => invalid(
                store,
                file,
                "a unique violation copying into the staging table, which has no keys",
            ),
            CopyFailure::Other(e) => e,
        })?;
    let staged = started.elapsed();
    let changed = tx
        .execute(&apply_sql(table), &[])
        .await
        .map_err(|e| db_error(store, file, e))?;
    debug!(
        table = table.name,
        key = file.key.as_str(),
        staged_seconds = staged.as_secs_f64(),
        applied_seconds = (started.elapsed() - staged).as_secs_f64(),
        "staged and applied"
    );
    Ok((changed, false))
}

/// The file's next batch, as the registry's schema types it.
async fn next_batch(
    store: &S3Store,
    file: &ProcessedFile,
    opened: &mut ParquetStream,
) -> Result<Option<RecordBatch>> {
    let Some(batch) = opened
        .stream
        .try_next()
        .await
        .map_err(|e| read_error(store, file, unwrap_external(e)))?
    else {
        return Ok(None);
    };
    RecordBatch::try_new(file.table.arrow_schema(), batch.columns().to_vec())
        .map(Some)
        .map_err(|e| invalid(store, file, e.to_string()))
}

/// Streams the file's rows (a batch read ahead, then the rest) through a binary COPY into
/// `target` (the registry's columns of the file's table), gathering each batch's values for
/// `checks`: the rows copied.
async fn copy_rows(
    tx: &Transaction<'_>,
    store: &S3Store,
    file: &ProcessedFile,
    (mut first, mut opened): (Option<RecordBatch>, ParquetStream),
    target: &str,
    mut checks: Option<&mut bulk::Checks>,
) -> Result<u64, CopyFailure> {
    let table = file.table;
    let failed = |e: tokio_postgres::Error| {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            CopyFailure::Conflict
        } else {
            CopyFailure::Other(db_error(store, file, e))
        }
    };
    let sink = tx
        .copy_in(&format!(
            "COPY {target} ({}) FROM STDIN (FORMAT binary)",
            column_list(table)
        ))
        .await
        .map_err(failed)?;
    let writer = BinaryCopyInWriter::new(sink, &copy::pg_types(table));
    futures_util::pin_mut!(writer);
    loop {
        let batch = match first.take() {
            Some(batch) => batch,
            None => match next_batch(store, file, &mut opened)
                .await
                .map_err(CopyFailure::Other)?
            {
                Some(batch) => batch,
                None => break,
            },
        };
        if let Some(checks) = checks.as_deref_mut() {
            checks
                .add(&batch)
                .map_err(|reason| CopyFailure::Other(invalid(store, file, reason)))?;
        }
        copy::write_batch(writer.as_mut(), table, &batch)
            .await
            .map_err(|e| match e {
                copy::CopyError::Value(reason) => CopyFailure::Other(invalid(store, file, reason)),
                copy::CopyError::Database(e) => failed(e),
            })?;
    }
    writer.finish().await.map_err(failed)
}

fn column_list(table: &WarehouseTable) -> String {
    quoted(table.columns.iter().map(|c| c.name), "")
}

/// `names` quoted as identifiers, each behind `prefix`, as a comma-separated list.
fn quoted<'a>(names: impl IntoIterator<Item = &'a str>, prefix: &str) -> String {
    names
        .into_iter()
        .map(|n| format!("{prefix}{}", quote_ident(n)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The statement that moves the staged rows into the table.
fn apply_sql(table: &WarehouseTable) -> String {
    let columns = column_list(table);
    let key = quoted(table.key.iter().copied(), "");
    let insert = format!(
        "INSERT INTO {name} AS t ({columns}) SELECT {columns} FROM load_stage \
         ON CONFLICT ({key})",
        name = quote_ident(table.name)
    );
    let values: Vec<&str> = table
        .columns
        .iter()
        .map(|c| c.name)
        .filter(|c| !table.key.contains(c))
        .collect();
    if table.kind == Kind::Fact || values.is_empty() {
        return format!("{insert} DO NOTHING");
    }
    let set: Vec<String> = values
        .iter()
        .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
        .collect();
    let changed = format!(
        "({}) IS DISTINCT FROM ({})",
        quoted(values.iter().copied(), "t."),
        quoted(values.iter().copied(), "EXCLUDED.")
    );
    // A row is updated only by a version not older than its own (a version it does not have,
    // from a warehouse older than the versions, is the oldest), so files of a dimension
    // applied in any order leave the newest values: a late file changes nothing newer.
    let version = |prefix: &str| -> Vec<String> {
        table
            .version()
            .map(|c| format!("COALESCE({prefix}{}, '-infinity')", quote_ident(c.name)))
            .collect()
    };
    let newer = match version("") {
        v if v.is_empty() => String::new(),
        _ => format!(
            "({}) >= ({}) AND ",
            version("EXCLUDED.").join(", "),
            version("t.").join(", ")
        ),
    };
    format!(
        "{insert} DO UPDATE SET {} WHERE {newer}{changed}",
        set.join(", ")
    )
}

/// A database error while staging or applying a file: what the file's values caused is
/// `InvalidInput` (or `MissingDimension`), the rest keeps its own type.
fn db_error(store: &S3Store, file: &ProcessedFile, e: tokio_postgres::Error) -> Error {
    let Some(db) = e.as_db_error() else {
        return Error::from(e);
    };
    let code = db.code().code();
    let detail = utils::error::describe_db_error(&e);
    if code == "23503" {
        Error::MissingDimension {
            table: file.table.name,
            bucket: store.bucket().to_owned(),
            key: file.key.clone(),
            detail,
        }
    } else if code == "21000" {
        invalid(
            store,
            file,
            format!("the file holds the same key more than once ({detail})"),
        )
    } else if code.starts_with("22") || code.starts_with("23") {
        invalid(store, file, detail)
    } else {
        Error::from(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use utils::warehouse::warehouse_table;

    #[test]
    fn dimensions_update_only_what_changed_by_a_version_not_older_and_facts_insert() {
        let sql = apply_sql(warehouse_table("dim_currency").unwrap());
        assert_eq!(
            sql,
            "INSERT INTO \"dim_currency\" AS t (\"currency_id\", \"currency_code\", \
             \"currency_name\", \"last_updated\") SELECT \"currency_id\", \"currency_code\", \
             \"currency_name\", \"last_updated\" FROM load_stage ON CONFLICT (\"currency_id\") \
             DO UPDATE SET \"currency_code\" = EXCLUDED.\"currency_code\", \"currency_name\" = \
             EXCLUDED.\"currency_name\", \"last_updated\" = EXCLUDED.\"last_updated\" WHERE \
             (COALESCE(EXCLUDED.\"last_updated\", '-infinity')) >= \
             (COALESCE(t.\"last_updated\", '-infinity')) AND (t.\"currency_code\", \
             t.\"currency_name\", t.\"last_updated\") IS DISTINCT FROM \
             (EXCLUDED.\"currency_code\", EXCLUDED.\"currency_name\", EXCLUDED.\"last_updated\")"
        );
        let sql = apply_sql(warehouse_table("dim_staff").unwrap());
        assert!(
            sql.contains(
                "WHERE (COALESCE(EXCLUDED.\"last_updated\", '-infinity'), \
                 COALESCE(EXCLUDED.\"department_last_updated\", '-infinity')) >= \
                 (COALESCE(t.\"last_updated\", '-infinity'), \
                 COALESCE(t.\"department_last_updated\", '-infinity')) AND"
            ),
            "{sql}"
        );
        let sql = apply_sql(warehouse_table("dim_date").unwrap());
        assert!(
            sql.contains("DO UPDATE SET") && !sql.contains("infinity"),
            "{sql}"
        );
        let sql = apply_sql(warehouse_table("fact_payment").unwrap());
        assert!(
            sql.ends_with(
                "ON CONFLICT (\"payment_id\", \"last_updated_date\", \"last_updated_time\") \
                 DO NOTHING"
            ),
            "{sql}"
        );
    }
}
