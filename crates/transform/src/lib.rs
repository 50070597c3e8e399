//! The transform Lambda: remodels raw ToteSys Parquet into the warehouse's star schema as
//! Parquet in the processed bucket.
//!
//! An invocation's raw files are taken in batches, a batch per window end, oldest first (a
//! table whose window was split has a file in several), fact files older than the last
//! dimension file after it (see [`event::batches`]); once the deadline margin is reached no
//! new batch starts and the output lists the files left. A batch holds at most one file per
//! table. Every file's footer and schema are checked first. The files of the joined tables
//! (staff, department, counterparty, address: entity tables of tens to thousands of rows)
//! are read whole and merged into the current-state snapshots; every other file (the facts,
//! and the dimensions that copy one table, transaction among them, as large as a fact table)
//! streams row group by row group into its outputs, so peak memory does not grow with the
//! batch. A batch's outputs become visible only once the whole batch has been read: a corrupt
//! file anywhere in it writes nothing of it. The snapshots are written last.
//!
//! Processed keys are `<warehouse table>/YYYY/MM/DD/HHMMSSffffff.parquet`, named after the
//! window end of the raw files they come from (the latest one, for an output built from
//! several), so a re-run or a duplicate event writes the same keys. For the same input and
//! the same snapshots the bytes are the same too.

pub mod config;
pub mod currency;
pub mod dates;
pub mod dims;
pub mod error;
pub mod event;
pub mod facts;
pub mod publish;
pub mod raw;
pub mod route;
pub mod snapshot;
mod staging;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};
use futures_util::future::try_join_all;
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use serde_json::Value;
use tracing::{info, warn};
use utils::cursor::TransformCursor;
use utils::deadline::Deadline;
use utils::file_list::FileList;
use utils::keys::parquet_key;
use utils::store::S3Store;
use utils::tables::{TABLES, table};
use utils::warehouse::WarehouseTable;

pub use crate::config::Config;
use crate::dims::Dim;
pub use crate::error::{Error, Result};
use crate::event::{RawFile, Request, parse_event};
use crate::facts::{FactSpec, quarantine_schema, transform_batch};
use crate::raw::{OpenFile, ints};
use crate::route::{Direct, Joined, Route, Streamed};
use crate::staging::{LazyUpload, Sources, Staged, plain_columns, stage_batch, stage_stream};

/// What the handler needs, built once per cold start.
#[derive(Clone, Debug)]
pub struct Deps {
    pub raw: S3Store,
    pub processed: S3Store,
    /// No new batch is started with less time left than this.
    pub deadline_margin: Duration,
}

impl Deps {
    pub fn new(config: &Config, sdk: &aws_config::SdkConfig) -> Self {
        let client = utils::store::s3_client(sdk);
        Deps {
            raw: S3Store::new(client.clone(), config.ingest_bucket.clone()),
            processed: S3Store::new(client, config.processed_bucket.clone()),
            deadline_margin: config.deadline_margin,
        }
    }
}

/// The invocation's result, as Step Functions passes it on to load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    pub bucket: String,
    /// The files written for each warehouse table that has rows, oldest first.
    pub files: BTreeMap<String, Vec<String>>,
    pub row_counts: BTreeMap<String, u64>,
    /// Fact rows set aside under `quarantine/`, per fact table.
    pub quarantined: BTreeMap<String, u64>,
    pub has_new_data: bool,
    /// False when the deadline stopped the invocation before every batch; `remaining` is then
    /// the transform event for the raw files left.
    pub complete: bool,
    pub remaining: Option<FileList>,
    /// Declared datasets' files published to the lake and queued for the load, per dataset.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub datasets: BTreeMap<String, Vec<String>>,
}

/// The Lambda handler.
pub async fn handler(event: LambdaEvent<Value>, deps: &Deps) -> Result<Output> {
    utils::metrics::timed(STAGE, invoke(event, deps)).await
}

async fn invoke(event: LambdaEvent<Value>, deps: &Deps) -> Result<Output> {
    let request = parse_event(&event.payload)?;
    let deadline = Deadline::from_context_ms(event.context.deadline, deps.deadline_margin);
    // Boxed: the future is deep (S3 SDK calls inside Parquet I/O inside the batch).
    Box::pin(run(&deps.raw, &deps.processed, request, deadline)).await
}

/// The `Stage` of this Lambda's metrics.
pub(crate) const STAGE: &str = "transform";

/// Transforms every raw file after transform's cursor (and any file `request` names that the
/// cursor does not cover) from `raw` into `processed` in [`event::batches`], moving the cursor
/// after each batch; once `deadline` is reached no new batch starts (one always runs).
pub async fn run(
    raw: &S3Store,
    processed: &S3Store,
    request: Request,
    mut deadline: Deadline,
) -> Result<Output> {
    let named = match request {
        Request::Nothing => None,
        Request::Files { bucket, files } => {
            raw.expect_bucket(&bucket).map_err(Error::InvalidEvent)?;
            Some(files)
        }
        // S3 mode: nothing would invoke transform again for files left at a deadline, so it
        // takes them all. Each batch moves the cursor once done, so a timeout loses at most
        // the batch in hand, and Lambda's asynchronous retry goes on from there.
        Request::Window { bucket, window_end } => {
            raw.expect_bucket(&bucket).map_err(Error::InvalidEvent)?;
            deadline = Deadline::NONE;
            Some(window_files(raw, window_end).await?)
        }
    };
    let mut output = Output {
        bucket: processed.bucket().to_owned(),
        files: BTreeMap::new(),
        row_counts: BTreeMap::new(),
        quarantined: BTreeMap::new(),
        has_new_data: false,
        complete: true,
        remaining: None,
        datasets: BTreeMap::new(),
    };
    // Whatever the event, queued dataset files go on (a notification for one of them names
    // no database table).
    let published = publish::publish_datasets(raw, processed, deadline).await?;
    for key in published.keys {
        let dataset = key.split('/').next().unwrap_or_default().to_owned();
        output.datasets.entry(dataset).or_default().push(key);
    }
    if published.left > 0 {
        // They stay queued: the next invocation finds them itself.
        output.complete = false;
        output.remaining = Some(FileList::new(raw.bucket()));
    }
    let Some(named) = named else {
        info!("no raw data files in the event");
        output.has_new_data = !output.datasets.is_empty();
        return Ok(output);
    };
    let (cursor, _) = utils::cursor::read_transform_cursor(processed).await?;
    let (files, watermarks) = untransformed(raw, &cursor, named).await?;
    if files.is_empty() {
        info!("no raw files to transform");
    }
    let mut place = Place::new(cursor, &files);
    let batches = event::batches(files);
    let mut progress = utils::logging::Progress::new(STAGE, None, batches.len());
    let mut batches = batches.into_iter();
    let mut done = 0;
    while let Some(batch) = batches.next() {
        if done > 0 && deadline.reached() {
            let left = 1 + batches.len();
            info!(
                batches_done = done,
                batches_left = left,
                "deadline margin reached: the files left are for the next invocation"
            );
            output.complete = false;
            // The files left are after the cursor: the next invocation finds them itself.
            output.remaining = Some(FileList::new(raw.bucket()));
            break;
        }
        let rows_before = output.row_counts.values().sum::<u64>();
        let keys: Vec<String> = batch.iter().map(|f| f.key.clone()).collect();
        Box::pin(run_batch(raw, processed, batch, &mut output)).await?;
        place.done(keys);
        utils::cursor::advance_transform_cursor(processed, &place.through).await?;
        done += 1;
        progress.step(output.row_counts.values().sum::<u64>() - rows_before);
    }
    // Files a lost or failed result left queued count too: the load has work.
    let queued = utils::cursor::pending(processed).await?;
    output.has_new_data = !output.files.is_empty() || !queued.is_empty();
    place.report(&watermarks, &queued);
    Ok(output)
}

/// The raw files to transform: every data file after the cursor up to the table's ingest
/// watermark, and those of `named` that the cursor does not cover (an event may add files,
/// never hide one). The watermark is ingest's commit: a file is complete before it moves past
/// its key, and no later run writes a key at or before it (but a replay, which moves the
/// cursor back too), so the cursor never passes a file still to come. A file past the
/// watermark (a crash before the watermark moved, or the files a replay passes over) waits for
/// the run that moves the watermark past it; a table with no watermark (never ingested: files
/// put by hand) has no such bound. The fact tables are listed before the dimension tables, so
/// every dimension file a listed fact file's rows reference (written before it, see ingest's
/// hold) is listed too.
async fn untransformed(
    raw: &S3Store,
    cursor: &TransformCursor,
    named: Vec<RawFile>,
) -> Result<(Vec<RawFile>, Watermarks)> {
    let (facts, dimensions): (Vec<_>, Vec<_>) = TABLES.iter().partition(|t| t.is_fact());
    let mut files = Vec::new();
    let mut watermarks = Watermarks::new();
    for group in [facts, dimensions] {
        let listed = try_join_all(group.into_iter().map(|t| async move {
            let watermark = utils::watermark::read_state(raw, t.name)
                .await?
                .map(|s| s.window_end);
            let mut found = raw.data_files(t.name, cursor.through(t.name)).await?;
            if let Some(end) = watermark {
                let horizon = parquet_key(t.name, end);
                found.retain(|(_, key)| *key <= horizon);
            }
            Ok::<_, Error>((t, watermark, found))
        }))
        .await?;
        for (t, watermark, found) in listed {
            watermarks.extend(watermark.map(|end| (t.name, end)));
            for (window_end, key) in found {
                files.push(RawFile::new(t, key, window_end)?);
            }
        }
    }
    for file in named {
        if cursor.covers(file.table.name, &file.key) {
            info!(
                table = file.table.name,
                key = file.key.as_str(),
                "named in the event and transformed already; skipped"
            );
        } else if !files.iter().any(|f| f.key == file.key) {
            files.push(file);
        }
    }
    Ok((files, watermarks))
}

/// Each source table's ingest watermark, where it has one.
type Watermarks = BTreeMap<&'static str, DateTime<Utc>>;

/// Where the cursor can move as batches finish: per table, through the newest key before which
/// every file of this invocation's table is done (batches do not take a table's files in key
/// order when a fact file waits for a newer dimension file).
struct Place {
    /// Each table's files of this invocation, in key order, and whether each is done.
    files: BTreeMap<&'static str, Vec<(String, bool)>>,
    through: BTreeMap<String, String>,
}

impl Place {
    fn new(cursor: TransformCursor, files: &[RawFile]) -> Self {
        let mut by_table: BTreeMap<&'static str, Vec<(String, bool)>> = BTreeMap::new();
        for f in files {
            by_table
                .entry(f.table.name)
                .or_default()
                .push((f.key.clone(), false));
        }
        for keys in by_table.values_mut() {
            keys.sort();
        }
        Place {
            files: by_table,
            through: cursor.through,
        }
    }

    /// Emits, per source table, the raw files this invocation left and how far behind the
    /// source the warehouse is ([`utils::metrics::FRESHNESS_LAG`]): up to the watermark when
    /// nothing is left, else up to the last file transformed; no later than the oldest file in
    /// the load's queue, `queued`.
    fn report(&self, watermarks: &Watermarks, queued: &[String]) {
        let oldest_queued = queued
            .iter()
            .filter_map(|key| utils::warehouse::processed_file(key).map(|(_, at)| at))
            .min();
        let now = Utc::now();
        for t in TABLES {
            let left = self
                .files
                .get(t.name)
                .map_or(0, |files| files.iter().filter(|(_, done)| !*done).count());
            let transformed = self
                .through
                .get(t.name)
                .and_then(|key| utils::keys::parse_file_key(t.name, key, "parquet"));
            let reached = match (left, watermarks.get(t.name)) {
                (0, Some(watermark)) => Some(*watermark),
                _ => transformed,
            };
            let mut values = vec![(utils::metrics::FILES_WAITING, left as f64)];
            if let Some(reached) = reached.map(|r| oldest_queued.map_or(r, |q| r.min(q))) {
                let lag = (now - reached).to_std().unwrap_or_default();
                values.push((utils::metrics::FRESHNESS_LAG, lag.as_secs_f64()));
            }
            utils::metrics::emit(STAGE, Some(t.name), &values);
        }
    }

    fn done(&mut self, keys: Vec<String>) {
        for (table, files) in &mut self.files {
            for (key, done) in files.iter_mut() {
                *done |= keys.contains(key);
            }
            if let Some((key, _)) = files.iter().take_while(|(_, done)| *done).last() {
                let newer = self
                    .through
                    .get(*table)
                    .is_none_or(|through| key.as_str() > through.as_str());
                if newer {
                    self.through.insert((*table).to_owned(), key.clone());
                }
            }
        }
    }
}

/// Transforms one batch (at most one file per table) into `output`.
async fn run_batch(
    raw: &S3Store,
    processed: &S3Store,
    files: Vec<RawFile>,
    output: &mut Output,
) -> Result<()> {
    let started = std::time::Instant::now();
    let rows_in = output.row_counts.values().sum::<u64>();
    let files_end = utils::time::format_time(files[0].window_end);
    // Every footer and schema is checked before anything is read or written.
    let opened = try_join_all(files.iter().map(|f| raw::open(raw, f))).await?;
    let mut streamed = Vec::new();
    let mut joined = Vec::new();
    for file in opened {
        match file.file.route {
            Route::Stream(route) => streamed.push((route, file)),
            Route::Joined(table) => joined.push((table, file)),
        }
    }

    let dims = Dimensions::read(raw, processed, joined).await?;
    let mut staged = Staged::default();
    let result = async {
        let mut dates = BTreeSet::new();
        let mut fact_times = Vec::new();
        for (route, file) in streamed {
            match route {
                Streamed::Direct { dim, target } => {
                    Box::pin(stage_direct(
                        raw.bucket(),
                        processed,
                        file,
                        &mut staged,
                        dim,
                        target,
                    ))
                    .await?;
                }
                Streamed::Fact { spec, target } => {
                    fact_times.push((file.file.window_end, file.file.key.clone()));
                    Box::pin(stage_fact(
                        raw.bucket(),
                        processed,
                        file,
                        &mut staged,
                        spec,
                        target,
                        &mut dates,
                    ))
                    .await?;
                }
            }
        }
        for (dim, sources) in dims.build()? {
            stage_batch(processed, &mut staged, dim.table, &dim.batch, &sources).await?;
            log_notes(&dim);
        }
        if !dates.is_empty() {
            let table = utils::warehouse::warehouse_table("dim_date")?;
            let batch = dates::dim_date(&dates)?;
            stage_batch(processed, &mut staged, table, &batch, &fact_times).await?;
        }
        Ok::<_, Error>(())
    }
    .await;
    if let Err(e) = result {
        staged.abort().await;
        return Err(e);
    }
    let written = staged.finish(output).await?;
    staging::queue(processed, &written).await?;
    dims.save(processed).await?;
    let seconds = started.elapsed().as_secs_f64();
    let rows = output.row_counts.values().sum::<u64>() - rows_in;
    info!(
        window_end = files_end,
        rows,
        seconds,
        rows_per_second = (rows as f64 / seconds.max(1e-6)).round() as u64,
        "batch transformed"
    );
    Ok(())
}

/// Every raw file of one ingest run: all tables' keys for `window_end` that exist.
pub async fn window_files(raw: &S3Store, window_end: DateTime<Utc>) -> Result<Vec<RawFile>> {
    let found = try_join_all(TABLES.iter().map(|t| async move {
        let key = parquet_key(t.name, window_end);
        let exists = raw.etag(&key).await?.is_some();
        exists.then(|| RawFile::new(t, key, window_end)).transpose()
    }))
    .await?;
    Ok(found.into_iter().flatten().collect())
}

/// Streams one fact file into its fact output and, for invalid rows, its quarantine output.
async fn stage_fact(
    raw_bucket: &str,
    processed: &S3Store,
    file: OpenFile,
    staged: &mut Staged,
    spec: &'static FactSpec,
    table: &'static WarehouseTable,
    dates: &mut BTreeSet<i32>,
) -> Result<()> {
    let key = parquet_key(table.name, file.file.window_end);
    let outputs = [
        (
            LazyUpload::new(
                key.clone(),
                table.arrow_schema(),
                plain_columns(table).collect(),
            ),
            false,
        ),
        (
            LazyUpload::new(
                format!("quarantine/{key}"),
                quarantine_schema(file.file.table),
                Vec::new(),
            ),
            true,
        ),
    ];
    stage_stream(
        raw_bucket,
        processed,
        file,
        staged,
        table.name,
        outputs,
        |_, batch| {
            let out = transform_batch(spec, table, &batch, dates)?;
            Ok([Some(out.rows), out.quarantined])
        },
    )
    .await
}

/// Streams the file of a dimension that copies one source table (no join, so no snapshot):
/// each batch is checked, reduced to the latest version per key and remodelled on its own.
/// A raw file is one `SELECT` of its table, so a key is in at most one of its batches.
async fn stage_direct(
    raw_bucket: &str,
    processed: &S3Store,
    file: OpenFile,
    staged: &mut Staged,
    dim: Direct,
    table: &'static WarehouseTable,
) -> Result<()> {
    let key = parquet_key(table.name, file.file.window_end);
    let outputs = [(
        LazyUpload::new(key, table.arrow_schema(), plain_columns(table).collect()),
        false,
    )];
    stage_stream(
        raw_bucket,
        processed,
        file,
        staged,
        table.name,
        outputs,
        |file, batch| {
            let latest = snapshot::latest_rows(raw_bucket, file, &batch)?;
            let built = dim.build(&latest)?;
            log_notes(&built);
            Ok([Some(built.batch)])
        },
    )
    .await
}

fn log_notes(dim: &Dim) {
    for note in &dim.notes {
        warn!(
            table = dim.table.name,
            placeholder = note.as_str(),
            "placeholder used"
        );
    }
}

/// The joined side of a batch: the rows (latest per key) of each joined table's file, and the
/// snapshots of the joined tables with those rows merged in.
struct Dimensions {
    files: HashMap<Joined, (RawFile, RecordBatch)>,
    /// Staff and department, merged, when the batch has a file of either.
    staff: Option<[RecordBatch; 2]>,
    /// Counterparty and address, merged, when the batch has a file of either.
    counterparty: Option<[RecordBatch; 2]>,
    /// The snapshots of the tables with a file, as read: what [`Dimensions::save`] merges into.
    read: Vec<(Joined, snapshot::Snapshot)>,
}

impl Dimensions {
    async fn read(
        raw: &S3Store,
        processed: &S3Store,
        opened: Vec<(Joined, OpenFile)>,
    ) -> Result<Self> {
        let mut files = HashMap::new();
        for (joined, file) in opened {
            let raw_file = file.file.clone();
            let rows = file.read_all(raw.bucket()).await?;
            let latest = snapshot::latest_rows(raw.bucket(), &raw_file, &rows)?;
            files.insert(joined, (raw_file, latest));
        }
        let mut dims = Dimensions {
            files,
            staff: None,
            counterparty: None,
            read: Vec::new(),
        };
        dims.staff = dims
            .group(processed, [Joined::Staff, Joined::Department])
            .await?;
        dims.counterparty = dims
            .group(processed, [Joined::Counterparty, Joined::Address])
            .await?;
        Ok(dims)
    }

    /// The snapshots of `tables`, each with this batch's rows merged in, if the batch has a file
    /// of any of them.
    async fn group(
        &mut self,
        processed: &S3Store,
        tables: [Joined; 2],
    ) -> Result<Option<[RecordBatch; 2]>> {
        if !tables.iter().any(|t| self.files.contains_key(t)) {
            return Ok(None);
        }
        let [first, second] = tables;
        Ok(Some([
            self.merged(processed, first).await?,
            self.merged(processed, second).await?,
        ]))
    }

    /// The snapshot of `joined`, with this batch's rows merged in if it has a file of it.
    async fn merged(&mut self, processed: &S3Store, joined: Joined) -> Result<RecordBatch> {
        let spec = table(joined.source())?;
        let current = snapshot::load(processed, spec).await?;
        Ok(match self.files.get(&joined) {
            Some((_, rows)) => {
                let batch = snapshot::latest_per_key(spec, &[&current.batch, rows])?;
                self.read.push((joined, current));
                batch
            }
            None => current.batch,
        })
    }

    fn ids(&self, table: Joined) -> BTreeSet<i32> {
        self.files
            .get(&table)
            .map(|(f, rows)| {
                ints(rows, f.table.primary_key)
                    .values()
                    .iter()
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn sources(&self, tables: &[Joined]) -> Sources {
        tables
            .iter()
            .filter_map(|t| self.files.get(t))
            .map(|(f, _)| (f.window_end, f.key.clone()))
            .collect()
    }

    /// Every dimension this batch changes, with the raw files it comes from.
    fn build(&self) -> Result<Vec<(Dim, Sources)>> {
        use Joined::{Address, Counterparty, Department, Staff};
        let mut dims = Vec::new();
        if let Some([staff, departments]) = &self.staff {
            let dim = dims::dim_staff(staff, departments, &self.ids(Staff), &self.ids(Department))?;
            dims.push((dim, self.sources(&[Staff, Department])));
        }
        if let Some([counterparties, addresses]) = &self.counterparty {
            if self.files.contains_key(&Address) {
                let dim = dims::dim_location(addresses, &self.ids(Address))?;
                dims.push((dim, self.sources(&[Address])));
            }
            let dim = dims::dim_counterparty(
                counterparties,
                addresses,
                &self.ids(Counterparty),
                &self.ids(Address),
            )?;
            dims.push((dim, self.sources(&[Counterparty, Address])));
        }
        Ok(dims)
    }

    /// Writes the snapshots this batch changed: those of the joined tables it has a file for,
    /// each with this batch's rows merged into the version it finds.
    async fn save(self, processed: &S3Store) -> Result<()> {
        for (joined, read) in self.read {
            if let Some((file, rows)) = self.files.get(&joined) {
                snapshot::save(processed, file.table, read, rows).await?;
            }
        }
        Ok(())
    }
}
