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

mod apply;
pub mod bulk;
pub mod config;
pub mod copy;
pub mod dataset;
pub mod error;
pub mod event;
mod file;
pub mod schema;
pub mod views;

use std::collections::BTreeMap;

use lambda_runtime::LambdaEvent;
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::Client;
use tracing::{info, warn};
use utils::deadline::Deadline;
use utils::file_list::FileList;
use utils::store::S3Store;
use utils::warehouse::WAREHOUSE_TABLES;

use crate::bulk::Bulk;
pub use crate::config::Config;
pub use crate::error::{Error, Result};
use crate::event::{ProcessedFile, Request, parse_event};

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
    /// The declared datasets whose files the queue may hold.
    pub datasets: &'static [datasets::Dataset],
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
        datasets: deps.config.datasets,
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
        datasets,
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
    let (files, dataset_files) = queued(store, named, datasets).await?;
    let mut output = Output::default();
    if files.is_empty() && dataset_files.is_empty() && !listed {
        return Ok(output);
    }
    // Every statement of the invocation waits for a lock at most this long (a DBA's ALTER
    // TABLE, a plain REFRESH of a view over a table): a lock timeout fails the file, which
    // rolls back and is retried, rather than queueing readers behind the load.
    client
        .batch_execute(&format!("SET lock_timeout = {}", lock_timeout.as_millis()))
        .await?;
    schema::prepare(client).await?;
    if !dataset_files.is_empty() {
        // Every declared table, not only those of the files queued: a view may join several.
        let declared: Vec<&datasets::Dataset> = datasets.iter().collect();
        dataset::prepare(client, &declared).await?;
    }
    let mut progress =
        utils::logging::Progress::new(STAGE, None, files.len() + dataset_files.len());
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
        let changed = match file::load_file(client, store, &file, &mut bulk).await {
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
    // Declared datasets' files after the star schema's, in key order.
    let mut dataset_files = dataset_files.into_iter();
    while output.complete
        && let Some((declared, key)) = dataset_files.next()
    {
        if done > 0 && deadline.reached() {
            info!(
                files_done = done,
                files_left = 1 + dataset_files.len(),
                "deadline margin reached: the files left are for the next invocation"
            );
            output.complete = false;
            output.remaining = Some(FileList::new(store.bucket()));
            break;
        }
        // A dataset without a warehouse table is the lake's only: nothing to load.
        if let Some(table) = declared.warehouse_table() {
            match dataset::load_file(client, store, declared, table, &key, &mut bulk).await? {
                dataset::Loaded::Changed(n) => {
                    *output.loaded.entry(table.to_owned()).or_default() += n;
                }
                dataset::Loaded::Skipped => output.skipped_files.push(key.clone()),
                dataset::Loaded::NotThereYet => continue,
            }
        }
        utils::cursor::clear_pending(store, &key).await?;
        done += 1;
        progress.step(0);
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
/// holds), dimensions first, each table's in key order; and the declared datasets' files
/// queued, in key order.
pub async fn queued(
    store: &S3Store,
    named: Vec<ProcessedFile>,
    datasets: &'static [datasets::Dataset],
) -> Result<(Vec<ProcessedFile>, Vec<DatasetFile>)> {
    let mut files = named;
    let mut dataset_files = Vec::new();
    for key in utils::cursor::pending(store).await? {
        match ProcessedFile::from_key(&key) {
            Some((file, _)) if !files.iter().any(|f| f.key == file.key) => files.push(file),
            Some(_) => {}
            None if let Some(d) = dataset::dataset_of(datasets, &key) => {
                dataset_files.push((d, key));
            }
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
    Ok((files, dataset_files))
}

/// A queued file of a declared dataset.
pub type DatasetFile = (&'static datasets::Dataset, String);

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
