//! Declared datasets (see the `datasets` crate): each file landing under a dataset's prefix of
//! the landing bucket becomes typed Parquet files in the raw zone, exactly once, whatever
//! arrives twice, late or not at all.
//!
//! A landed file is known by its key and ETag. Everything ingest writes for it is named after
//! the two (and the file's time), so a repeat writes the same objects with the same bytes:
//!
//! 1. the typed rows, `<dataset>/YYYY/MM/DD/HHMMSSffffff-<id>-<part>.parquet` (the file's
//!    `LastModified`; `id` hashes key and ETag), a part per [`PartLimits`], written
//!    create-only;
//! 2. each part's quarantined rows, `quarantine/<part key>.jsonl`: file, line, column,
//!    reason and the value as it was;
//! 3. a marker per part queueing it for transform (`utils::cursor::mark_dataset_pending`);
//! 4. last, the file's record, `_state/datasets/<dataset>/files/<id>.json`: the commit point.
//!    A file with a record is skipped.
//!
//! A crash before the record leaves what a repeat writes again (create-only parts are kept
//! as they are; markers already taken by transform come back and find their files published
//! and loaded). A notification (`ObjectCreated`) ingests its files at once; the sweep, on a
//! schedule, lists each dataset's prefix and ingests every file without a record, so a lost
//! notification costs a delay, never a file. A file that cannot be read at all (corrupt gzip,
//! a header against the declared policies) gets a record with the error and no parts (any it
//! had are deleted), so it never blocks the sweep, and the invocation fails with
//! `InvalidInput` naming it, once the other files it was given are in; landing it again (a
//! new ETag) ingests it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
pub use datasets::landed::{file_id, record_key, records_prefix};
use datasets::{Batch, BatchLimits, Dataset, LandedFile, Quarantined};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{info, warn};
use utils::deadline::Deadline;
use utils::keys::suffixed_parquet_key;
use utils::metrics;
use utils::parquet_io::ParquetUpload;
use utils::store::{ObjectInfo, S3Store};

use crate::error::{Error, Result};
pub use crate::keys::KmsKeys;
use crate::{Output, Remaining};

/// How much of a landed file one raw file holds at most: records (typed or quarantined) and
/// bytes of (decompressed) input. Memory is bounded by one read batch and one row group, not
/// by the part: the part streams to S3.
#[derive(Debug, Clone, Copy)]
pub struct PartLimits {
    pub records: u64,
    pub bytes: u64,
    pub batch: BatchLimits,
    /// The threads a CSV file is typed on (see [`LandedFile::read_all`]): the cores Lambda
    /// gives the function (one per 1,769 MB of memory).
    pub workers: usize,
    /// An API's pages.
    pub api: crate::api::ApiLimits,
}

impl Default for PartLimits {
    fn default() -> Self {
        PartLimits {
            records: 1_000_000,
            bytes: 256 * 1024 * 1024,
            batch: BatchLimits::default(),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            api: crate::api::ApiLimits::default(),
        }
    }
}

/// What an invocation is asked to ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Every file under these datasets' prefixes that has no record.
    Sweep(Vec<String>),
    /// These landed keys (a notification's, a Distributed Map item's), each in the dataset
    /// whose prefix holds it.
    Keys(Vec<String>),
    /// Part of an API dataset's window: `{"api": {"dataset": name}}` starts the window and
    /// names its ranges (the plan a Map fans out), `{"api": {"dataset": name, "range": k}}`
    /// reads one. A sweep reads an API dataset's whole window.
    Api {
        dataset: String,
        work: crate::api::Work,
    },
}

/// The dataset request an event makes, or `None` for a database one: `{"datasets": [name,
/// ...]}` (a sweep), `{"landed": [key, ...]}`, or an S3 notification from `landing`.
pub fn request_from_event(
    event: &Value,
    landing: Option<&str>,
    datasets: &[Dataset],
) -> Result<Option<Request>> {
    let strings = |field: &str, v: &Value| -> Result<Vec<String>> {
        let list = v.as_array().filter(|l| !l.is_empty()).ok_or_else(|| {
            Error::InvalidEvent(format!("{field} must be a non-empty list of strings"))
        })?;
        list.iter()
            .map(|s| {
                s.as_str().map(str::to_owned).ok_or_else(|| {
                    Error::InvalidEvent(format!("{field} must hold strings, got {s}"))
                })
            })
            .collect()
    };
    let no_landing = || {
        Error::Shared(utils::Error::Configuration(
            "LANDING_BUCKET is not set: this function ingests no datasets".into(),
        ))
    };
    if utils::s3_event::is_notification(event) {
        let landing = landing.ok_or_else(no_landing)?;
        let mut keys = Vec::new();
        for (bucket, key) in utils::s3_event::objects(event).map_err(Error::InvalidEvent)? {
            if bucket != landing {
                return Err(Error::InvalidEvent(format!(
                    "the notification names bucket {bucket:?}, but the landing bucket is \
                     {landing:?}"
                )));
            }
            keys.push(key);
        }
        return Ok(Some(Request::Keys(keys)));
    }
    let Value::Object(fields) = event else {
        return Ok(None);
    };
    let known = |name: &str| -> Result<&Dataset> {
        datasets.iter().find(|d| d.name == name).ok_or_else(|| {
            Error::InvalidEvent(format!(
                "unknown dataset {name:?}: declared are {:?}",
                datasets.iter().map(|d| &d.name).collect::<Vec<_>>()
            ))
        })
    };
    let request = match (
        fields.get("datasets"),
        fields.get("landed"),
        fields.get("api"),
    ) {
        (None, None, None) => return Ok(None),
        (Some(names), None, None) if fields.len() == 1 => {
            let names = strings("datasets", names)?;
            for n in &names {
                known(n)?;
            }
            Request::Sweep(names)
        }
        (None, Some(keys), None) if fields.len() == 1 => Request::Keys(strings("landed", keys)?),
        (None, None, Some(api)) if fields.len() == 1 => {
            let bad = || {
                Error::InvalidEvent(
                    "expected {\"api\": {\"dataset\": name}} or {\"api\": {\"dataset\": name, \
                     \"range\": n}}"
                        .into(),
                )
            };
            let name = api.get("dataset").and_then(Value::as_str).ok_or_else(bad)?;
            let dataset = known(name)?;
            if dataset.source.api.is_none() {
                return Err(Error::InvalidEvent(format!(
                    "dataset {name:?} is not read from an API"
                )));
            }
            let work = match api.get("range") {
                None => crate::api::Work::Plan,
                Some(k) => crate::api::Work::Range(k.as_u64().ok_or_else(bad)? as usize),
            };
            if api
                .as_object()
                .is_some_and(|o| o.keys().any(|k| k != "dataset" && k != "range"))
            {
                return Err(bad());
            }
            return Ok(Some(Request::Api {
                dataset: name.to_owned(),
                work,
            }));
        }
        _ => {
            return Err(Error::InvalidEvent(
                "expected {\"datasets\": [name, ...]}, {\"landed\": [key, ...]} or \
                 {\"api\": {...}} alone"
                    .into(),
            ));
        }
    };
    // Files land: an API's dataset needs no landing bucket.
    let files = match &request {
        Request::Sweep(names) => names.iter().any(|n| {
            datasets
                .iter()
                .any(|d| &d.name == n && d.landing_prefix().is_some())
        }),
        _ => true,
    };
    if files {
        landing.ok_or_else(no_landing)?;
    }
    Ok(Some(request))
}

/// What an invocation ingested of one dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DatasetRun {
    /// The raw files written, in order.
    pub files: Vec<String>,
    pub rows: u64,
    pub quarantined: u64,
    /// The quarantine objects written.
    pub quarantine: Vec<String>,
}

/// Where a landed file's outputs go and what the record says of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub dataset: String,
    pub key: String,
    pub etag: String,
    pub size: u64,
    /// The raw files written, in order.
    pub parts: Vec<String>,
    pub rows: u64,
    pub quarantined: u64,
    /// The quarantine objects written, in order.
    pub quarantine: Vec<String>,
    /// Why the file could not be read at all (it then has no parts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The `part`th raw file of a landed file.
pub fn part_key(dataset: &str, landed: &ObjectInfo, part: usize) -> String {
    let id = file_id(&landed.key, &landed.etag);
    suffixed_parquet_key(dataset, landed.last_modified, &format!("{id}-{part:05}"))
}

/// Where the quarantined rows of a raw file go.
pub fn quarantine_key(part_key: &str) -> String {
    format!(
        "quarantine/{}.jsonl",
        part_key.strip_suffix(".parquet").unwrap_or(part_key)
    )
}

/// The dataset whose prefix holds `key`.
pub fn dataset_of<'d>(datasets: &'d [Dataset], key: &str) -> Option<&'d Dataset> {
    datasets
        .iter()
        .find(|d| d.landing_prefix().is_some_and(|p| key.starts_with(p)))
}

/// Where an invocation reads datasets from: the landing bucket (files), the HTTP client (an
/// API's pages), the key service (encrypted fields).
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub landing: Option<&'a S3Store>,
    pub api: Option<&'a crate::api::ApiClient>,
    pub keys: Option<&'a KmsKeys>,
}

/// Runs `request`: landed files from `landing`, an API's pages, into `raw`, until `deadline`
/// (a sweep leaves the datasets it did not finish to the next invocation).
pub async fn run(
    sources: Sources<'_>,
    raw: &S3Store,
    datasets: &[Dataset],
    request: Request,
    limits: PartLimits,
    deadline: Deadline,
) -> Result<Output> {
    let mut out = Output {
        bucket: raw.bucket().to_owned(),
        files: BTreeMap::new(),
        row_counts: BTreeMap::new(),
        has_new_data: false,
        complete: true,
        remaining: None,
        datasets: BTreeMap::new(),
        skipped_files: Vec::new(),
        api_plan: None,
    };
    let (apis, request) = match request {
        Request::Api { dataset, work } => (vec![(dataset, work)], None),
        Request::Sweep(names) => {
            let (apis, files): (Vec<String>, Vec<String>) = names.into_iter().partition(|n| {
                datasets
                    .iter()
                    .any(|d| &d.name == n && d.source.api.is_some())
            });
            let apis = apis
                .into_iter()
                .map(|n| (n, crate::api::Work::All))
                .collect();
            (apis, (!files.is_empty()).then_some(Request::Sweep(files)))
        }
        keys => (Vec::new(), Some(keys)),
    };
    let mut left = BTreeSet::new();
    // A dataset that fails (its portal down, its token refused) fails the invocation, but only
    // once the others have had their turn: one source never holds the others back. What each
    // got in is committed; the invocation run again (a retry, the next schedule) goes on.
    let mut failed: Option<Error> = None;
    for (name, work) in apis {
        let dataset = datasets.iter().find(|d| d.name == name).expect("checked");
        let client = sources.api.ok_or_else(|| {
            Error::Shared(utils::Error::Configuration(
                "no HTTP client: this function reads no API".into(),
            ))
        })?;
        let done = match crate::api::run(client, raw, dataset, work, limits.api, deadline).await {
            Ok(done) => done,
            Err(e) => {
                warn!(dataset = %name, error = %e, "the dataset failed; the others go on");
                failed.get_or_insert(e);
                continue;
            }
        };
        if work == crate::api::Work::Plan {
            out.api_plan = Some(crate::ApiPlan {
                dataset: name.clone(),
                ranges: done.ranges_left.clone(),
            });
        }
        if !done.complete {
            left.insert(name.clone());
        }
        if !done.run.files.is_empty() || done.run.quarantined > 0 {
            out.datasets.insert(name, done.run);
        }
    }
    if let Some(request) = request {
        let landing = sources.landing.expect("checked with the request");
        let swept = files(
            landing,
            raw,
            datasets,
            request,
            limits,
            deadline,
            sources.keys,
            &mut out,
            &mut left,
        )
        .await;
        if let Err(e) = swept {
            return Err(failed.unwrap_or(e));
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    out.has_new_data = out.datasets.values().any(|r| !r.files.is_empty());
    if !left.is_empty() {
        out.complete = false;
        out.remaining = Some(Remaining {
            tables_to_query: Vec::new(),
            datasets: left.into_iter().collect(),
        });
    }
    Ok(out)
}

/// Landed files into `raw`, into `out`; the datasets with files left at the deadline, into
/// `left`.
#[allow(clippy::too_many_arguments)]
async fn files(
    landing: &S3Store,
    raw: &S3Store,
    datasets: &[Dataset],
    request: Request,
    limits: PartLimits,
    deadline: Deadline,
    keys: Option<&KmsKeys>,
    out: &mut Output,
    left: &mut BTreeSet<String>,
) -> Result<()> {
    let mut todo: Vec<(&Dataset, ObjectInfo)> = Vec::new();
    match &request {
        Request::Keys(keys) => {
            for key in keys {
                // A "folder" made in the console, as a listing of the prefix (the first-load
                // Distributed Map's) has it.
                if key.ends_with('/') {
                    continue;
                }
                let Some(dataset) = dataset_of(datasets, key) else {
                    warn!(key, "no dataset's prefix holds this landed key; ignored");
                    continue;
                };
                match landing.head(key).await? {
                    Some(object) => todo.push((dataset, object)),
                    None => warn!(key, "the landed file is gone; nothing to ingest"),
                }
            }
        }
        Request::Sweep(names) => {
            for name in names {
                let dataset = datasets.iter().find(|d| &d.name == name).expect("checked");
                todo.extend(
                    unrecorded(landing, raw, dataset)
                        .await?
                        .into_iter()
                        .map(|o| (dataset, o)),
                );
            }
        }
        Request::Api { .. } => unreachable!("read above"),
    }
    let mut done = 0;
    // A file that cannot be read is recorded as such and fails the invocation, but only once
    // the files after it are in: bad input never holds good input back.
    let mut unreadable: Option<Error> = None;
    for (dataset, object) in todo {
        if done > 0 && deadline.reached() {
            left.insert(dataset.name.clone());
            continue;
        }
        let ingested = ingest_file(landing, raw, dataset, &object, limits, keys).await;
        let (record, skipped) = match ingested {
            Ok(ingested) => ingested,
            Err(e) if e.error_type() == "InvalidInput" => {
                done += 1;
                unreadable.get_or_insert(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        if skipped {
            // A file in already costs one read: it never uses up an invocation, so the same
            // keys given again (a batch run again at the deadline) get further each time.
            out.skipped_files.push(object.key);
            continue;
        }
        done += 1;
        let run = out.datasets.entry(dataset.name.clone()).or_default();
        run.files.extend(record.parts.iter().cloned());
        run.rows += record.rows;
        run.quarantined += record.quarantined;
        run.quarantine.extend(record.quarantine);
    }
    if let Some(e) = unreadable {
        return Err(e);
    }
    if !left.is_empty() {
        info!(
            files_done = done,
            "deadline margin reached: the datasets' other files are for the next invocation"
        );
    }
    Ok(())
}

/// The files under `dataset`'s prefix without a record, oldest first.
pub async fn unrecorded(
    landing: &S3Store,
    raw: &S3Store,
    dataset: &Dataset,
) -> Result<Vec<ObjectInfo>> {
    let recorded: BTreeSet<String> = raw
        .list_keys(&records_prefix(&dataset.name), None)
        .await?
        .into_iter()
        .collect();
    let mut files: Vec<ObjectInfo> = landing
        .list_objects(&dataset.source.prefix)
        .await?
        .into_iter()
        // A "folder" made in the console is an empty object named like a prefix.
        .filter(|o| !o.key.ends_with('/'))
        .filter(|o| !recorded.contains(&record_key(&dataset.name, &file_id(&o.key, &o.etag))))
        .collect();
    files.sort_by(|a, b| (a.last_modified, &a.key).cmp(&(b.last_modified, &b.key)));
    Ok(files)
}

/// Ingests one landed file (the version `landed.etag`) unless its record says it is: the
/// record, and whether it was there already.
pub async fn ingest_file(
    landing: &S3Store,
    raw: &S3Store,
    dataset: &Dataset,
    landed: &ObjectInfo,
    limits: PartLimits,
    keys: Option<&KmsKeys>,
) -> Result<(FileRecord, bool)> {
    let id = file_id(&landed.key, &landed.etag);
    let record_at = record_key(&dataset.name, &id);
    if let Some(bytes) = raw.get(&record_at).await? {
        let record: FileRecord =
            serde_json::from_slice(&bytes).map_err(|e| raw.corrupt(&record_at, e))?;
        info!(
            dataset = dataset.name,
            key = landed.key,
            "ingested already; skipped"
        );
        return Ok((record, true));
    }
    let started = std::time::Instant::now();
    let mut record = FileRecord {
        dataset: dataset.name.clone(),
        key: landed.key.clone(),
        etag: landed.etag.clone(),
        size: landed.size,
        parts: Vec::new(),
        rows: 0,
        quarantined: 0,
        quarantine: Vec::new(),
        error: None,
    };
    match write_parts(landing, raw, dataset, landed, limits, keys, &mut record).await {
        Ok(()) => {}
        Err(Failure::Unreadable(e)) => {
            // Nothing of the file is kept; the record says why, so the sweep passes it by.
            for key in record.parts.drain(..).chain(record.quarantine.drain(..)) {
                raw.delete(&key).await?;
            }
            record.rows = 0;
            record.quarantined = 0;
            record.error = Some(e.to_string());
            put_record(raw, &record_at, &record).await?;
            warn!(dataset = dataset.name, key = landed.key, error = %e, "the landed file cannot be read");
            return Err(Error::Dataset(e));
        }
        Err(Failure::Other(e)) => return Err(e),
    }
    for part in &record.parts {
        utils::cursor::mark_dataset_pending(raw, part).await?;
    }
    put_record(raw, &record_at, &record).await?;
    let seconds = started.elapsed().as_secs_f64();
    info!(
        dataset = dataset.name,
        key = landed.key,
        bytes = landed.size,
        rows = record.rows,
        quarantined = record.quarantined,
        parts = record.parts.len(),
        seconds,
        "ingested"
    );
    metrics::emit(
        STAGE,
        Some(&dataset.name),
        &[
            (metrics::ROWS, record.rows as f64),
            (metrics::BYTES, landed.size as f64),
            (metrics::QUARANTINED_ROWS, record.quarantined as f64),
        ],
    );
    Ok((record, false))
}

const STAGE: &str = "ingest";

async fn put_record(raw: &S3Store, key: &str, record: &FileRecord) -> Result<()> {
    let body = Bytes::from(serde_json::to_vec(record).expect("a record serializes"));
    // A concurrent invocation of the same file may have recorded it first: same outputs.
    raw.put_if(key, body, "application/json", None).await?;
    Ok(())
}

enum Failure {
    /// The file cannot be read as declared: nothing of it is to be kept.
    Unreadable(datasets::Error),
    Other(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Other(e)
    }
}

impl From<utils::Error> for Failure {
    fn from(e: utils::Error) -> Self {
        Failure::Other(e.into())
    }
}

/// Streams the landed file through the reader (on a blocking thread, since it reads
/// synchronously, and a CSV file typed on `limits.workers` more) into parts and their
/// quarantine objects, recording each in `record`.
async fn write_parts(
    landing: &S3Store,
    raw: &S3Store,
    dataset: &Dataset,
    landed: &ObjectInfo,
    limits: PartLimits,
    keys: Option<&KmsKeys>,
    record: &mut FileRecord,
) -> std::result::Result<(), Failure> {
    let body = landing.stream(&landed.key, &landed.etag).await?;
    let failed = Arc::new(Mutex::new(None));
    let source = Tracked {
        inner: tokio_util::io::SyncIoBridge::new(body.into_async_read()),
        failed: Arc::clone(&failed),
    };
    let (sender, mut batches) = mpsc::channel::<datasets::Result<Batch>>(1);
    let reading = {
        let dataset = dataset.clone();
        let name = format!("s3://{}/{}", landing.bucket(), landed.key);
        let keys = keys.cloned();
        tokio::task::spawn_blocking(move || {
            let file = match LandedFile::open(source, &dataset, &name) {
                Ok(file) => match keys {
                    Some(keys) => file.with_keys(Box::new(keys)),
                    None => file,
                },
                Err(e) => {
                    let _ = sender.blocking_send(Err(e));
                    return;
                }
            };
            file.read_all(limits.batch, limits.workers, |batch| {
                match sender.blocking_send(batch) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => ControlFlow::Break(()),
                }
            });
        })
    };
    let schema = Arc::new(dataset.schema());
    let mut table: Vec<(String, String)> = schema
        .metadata()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    table.sort();
    let plain = dataset.plain_columns();
    let mut part: Option<Part> = None;
    let mut started = 0;
    let result = async {
        while let Some(batch) = batches.recv().await {
            let batch = match batch {
                Ok(batch) => batch,
                // The key service failing, or local storage, is not a broken file either.
                Err(e @ (datasets::Error::Keys { .. } | datasets::Error::Scratch { .. })) => {
                    return Err(Failure::Other(Error::Dataset(e)));
                }
                Err(e) => {
                    // A broken connection is not a broken file.
                    if let Some(reason) = failed.lock().expect("not poisoned").take() {
                        return Err(Failure::Other(Error::Shared(utils::Error::Storage {
                            operation: "GetObject",
                            bucket: landing.bucket().to_owned(),
                            key: landed.key.clone(),
                            message: format!("reading the body: {reason}"),
                            transient: true,
                        })));
                    }
                    return Err(Failure::Unreadable(e));
                }
            };
            let current = match &mut part {
                Some(p) => p,
                None => {
                    // Parts are numbered in the file's order; one of quarantined rows only
                    // has no Parquet file but keeps its number.
                    let key = part_key(&dataset.name, landed, started);
                    started += 1;
                    part.insert(Part {
                        upload: ParquetUpload::create_new(
                            raw,
                            &key,
                            schema.clone(),
                            plain.iter().map(String::as_str),
                        )?,
                        key,
                        records: 0,
                        bytes: 0,
                        quarantined: Vec::new(),
                    })
                }
            };
            if batch.rows.num_rows() > 0 {
                current.upload.write(&batch.rows).await?;
            }
            current.records += (batch.rows.num_rows() + batch.quarantined.len()) as u64;
            current.bytes += batch.bytes as u64;
            current.quarantined.extend(batch.quarantined);
            if current.records >= limits.records || current.bytes >= limits.bytes {
                let full = part.take().expect("a part in hand");
                full.finish(raw, landed, &table, record).await?;
            }
        }
        if let Some(last) = part.take() {
            last.finish(raw, landed, &table, record).await?;
        }
        Ok(())
    }
    .await;
    if let Some(p) = part.take() {
        p.upload.abort().await;
    }
    drop(batches);
    reading.await.expect("the reader does not panic");
    result
}

/// A raw file being written, with the quarantined rows of its records.
struct Part {
    upload: ParquetUpload,
    key: String,
    records: u64,
    bytes: u64,
    quarantined: Vec<Quarantined>,
}

impl Part {
    async fn finish(
        self,
        raw: &S3Store,
        landed: &ObjectInfo,
        table: &[(String, String)],
        record: &mut FileRecord,
    ) -> Result<()> {
        let rows = self.upload.rows();
        if rows > 0 {
            // The table's metadata as the footer's own key-values too (not only inside the
            // encoded Arrow schema), so any engine reads it; the landed file's, beside it.
            let mut metadata = table.to_vec();
            metadata.push(("source_file".to_owned(), landed.key.clone()));
            metadata.push(("source_etag".to_owned(), landed.etag.clone()));
            self.upload.finish(metadata).await?;
            record.parts.push(self.key.clone());
        } else {
            self.upload.abort().await;
        }
        record.rows += rows;
        if !self.quarantined.is_empty() {
            let key = quarantine_key(&self.key);
            let body = quarantine_lines(&self.quarantined, Some(&landed.etag));
            raw.put(&key, Bytes::from(body), "application/x-ndjson")
                .await?;
            record.quarantined += self.quarantined.len() as u64;
            record.quarantine.push(key);
        }
        Ok(())
    }
}

/// Quarantined rows as JSON Lines: where each was (file or request, line or record), the
/// column, the reason and the value as it was; a landed file's ETag beside.
pub(crate) fn quarantine_lines(rows: &[Quarantined], etag: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    for q in rows {
        let mut row = serde_json::json!({
            "file": q.file,
            "line": q.line,
            "column": q.column,
            "reason": q.reason,
            "value": q.value,
        });
        if let Some(etag) = etag {
            row["etag"] = etag.into();
        }
        serde_json::to_writer(&mut body, &row).expect("a quarantined row serializes");
        body.push(b'\n');
    }
    body
}

/// The landed object's body, remembering whether reading it failed (as opposed to what it
/// held failing to decode).
struct Tracked<R> {
    inner: R,
    failed: Arc<Mutex<Option<String>>>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            *self.failed.lock().expect("not poisoned") = Some(e.to_string());
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn trips() -> Vec<Dataset> {
        datasets::bundled(&[]).unwrap()
    }

    #[test]
    fn ids_and_keys_are_stable_and_follow_the_key_convention() {
        let landed = ObjectInfo {
            key: "landing/trips/2024-11-14.csv".into(),
            etag: "\"d41d8cd98f00b204e9800998ecf8427e\"".into(),
            last_modified: chrono::Utc
                .with_ymd_and_hms(2024, 11, 14, 9, 30, 5)
                .unwrap(),
            size: 10,
        };
        let id = file_id(&landed.key, &landed.etag);
        assert_eq!(id, file_id(&landed.key, "d41d8cd98f00b204e9800998ecf8427e"));
        assert_ne!(id, file_id("landing/trips/other.csv", &landed.etag));
        let key = part_key("trips", &landed, 2);
        assert_eq!(
            key,
            format!("trips/2024/11/14/093005000000-{id}-00002.parquet")
        );
        assert!(utils::keys::parse_file_key("trips", &key, "parquet").is_some());
        assert_eq!(
            quarantine_key(&key),
            format!("quarantine/trips/2024/11/14/093005000000-{id}-00002.jsonl")
        );
    }

    #[test]
    fn events_name_datasets_landed_keys_or_notifications() {
        let d = trips();
        let landing = Some("landing");
        assert_eq!(request_from_event(&json!({}), landing, &d).unwrap(), None);
        assert_eq!(
            request_from_event(&json!({"tables_to_query": ["staff"]}), landing, &d).unwrap(),
            None
        );
        assert_eq!(
            request_from_event(&json!({"datasets": ["trips"]}), landing, &d).unwrap(),
            Some(Request::Sweep(vec!["trips".into()]))
        );
        assert_eq!(
            request_from_event(&json!({"landed": ["landing/trips/a.csv"]}), landing, &d).unwrap(),
            Some(Request::Keys(vec!["landing/trips/a.csv".into()]))
        );
        let n = json!({"Records": [{"s3": {"bucket": {"name": "landing"},
                                          "object": {"key": "landing/trips/a+b.csv"}}}]});
        assert_eq!(
            request_from_event(&n, landing, &d).unwrap(),
            Some(Request::Keys(vec!["landing/trips/a b.csv".into()]))
        );
        for (bad, says) in [
            (json!({"datasets": ["nope"]}), "unknown dataset \"nope\""),
            (json!({"datasets": []}), "non-empty list"),
            (json!({"datasets": ["trips"], "landed": ["x"]}), "alone"),
        ] {
            let e = request_from_event(&bad, landing, &d)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{e}");
        }
        let e = request_from_event(&json!({"datasets": ["trips"]}), None, &d).unwrap_err();
        assert_eq!(e.error_type(), "Configuration");
        let other = json!({"Records": [{"s3": {"bucket": {"name": "elsewhere"},
                                              "object": {"key": "k"}}}]});
        assert!(request_from_event(&other, landing, &d).is_err());
    }
}
