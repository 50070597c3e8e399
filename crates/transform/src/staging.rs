//! The outputs of a batch while it is read: nothing becomes visible at its key until the whole
//! batch has been read ([`Staged::finish`]), and on any error every output is aborted. Each
//! [`ParquetUpload`] also aborts itself when its own write fails.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};
use tracing::{info, warn};
use utils::keys::suffixed_parquet_key;
use utils::parquet_io::{PIPELINE_VERSION, ParquetUpload};
use utils::store::S3Store;
use utils::warehouse::{WarehouseTable, WhType};

use crate::Output;
use crate::error::{Error, Result};
use crate::event::RawFile;
use crate::raw::OpenFile;

/// The latest time and the keys of the raw files an output comes from.
pub(crate) type Sources = Vec<(DateTime<Utc>, String)>;

/// Outputs being written. Nothing is visible at its key until [`Staged::finish`]: small files
/// are sent whole on completion, large ones complete their multipart upload then.
#[derive(Default)]
pub(crate) struct Staged {
    uploads: Vec<StagedUpload>,
}

struct StagedUpload {
    /// The warehouse table.
    name: String,
    /// Whether this is the table's quarantine file rather than its data file.
    quarantine: bool,
    upload: ParquetUpload,
    metadata: Vec<(String, String)>,
}

impl Staged {
    pub(crate) async fn abort(self) {
        for staged in self.uploads {
            staged.upload.abort().await;
        }
    }

    /// Completes every output into `output`: the data files' keys (not quarantine's).
    pub(crate) async fn finish(self, output: &mut Output) -> Result<Vec<String>> {
        let mut data = Vec::new();
        let mut uploads = self.uploads.into_iter();
        while let Some(StagedUpload {
            name,
            quarantine,
            upload,
            mut metadata,
        }) = uploads.next()
        {
            metadata.push(("totesys.row_count".into(), upload.rows().to_string()));
            let written = match upload.finish(metadata).await {
                Ok(written) => written,
                Err(e) => {
                    // What completed stays (a retry rewrites it identically); the rest goes.
                    Staged {
                        uploads: uploads.collect(),
                    }
                    .abort()
                    .await;
                    return Err(e.into());
                }
            };
            if written.existed {
                // The same batch ran before (a retry, a repeated event) and wrote this output;
                // it stays as it was, what the load may have applied already.
                info!(
                    table = name.as_str(),
                    key = written.key.as_str(),
                    "written by an earlier run of this batch; kept"
                );
            }
            if quarantine {
                warn!(
                    table = name.as_str(),
                    rows = written.rows,
                    key = written.key.as_str(),
                    "fact rows quarantined"
                );
                utils::metrics::emit(
                    crate::STAGE,
                    Some(&name),
                    &[(utils::metrics::QUARANTINED_ROWS, written.rows as f64)],
                );
                *output.quarantined.entry(name).or_default() += written.rows;
            } else {
                info!(
                    table = name.as_str(),
                    rows = written.rows,
                    bytes = written.bytes,
                    key = written.key.as_str(),
                    "transformed"
                );
                utils::metrics::emit(
                    crate::STAGE,
                    Some(&name),
                    &[
                        (utils::metrics::ROWS, written.rows as f64),
                        (utils::metrics::BYTES, written.bytes as f64),
                    ],
                );
                *output.row_counts.entry(name.clone()).or_default() += written.rows;
                data.push(written.key.clone());
                output.files.entry(name).or_default().push(written.key);
            }
        }
        Ok(data)
    }
}

/// Queues the data files `keys` for the load (see [`utils::cursor`]): after they are complete,
/// before the cursor moves past their raw files.
pub(crate) async fn queue(processed: &S3Store, keys: &[String]) -> Result<()> {
    futures_util::future::try_join_all(
        keys.iter()
            .map(|key| utils::cursor::mark_pending(processed, key)),
    )
    .await?;
    Ok(())
}

fn file_metadata(table: &str, sources: &Sources) -> Vec<(String, String)> {
    let keys: Vec<&str> = sources.iter().map(|(_, k)| k.as_str()).collect();
    vec![
        ("totesys.table".into(), table.into()),
        (
            "totesys.source_keys".into(),
            serde_json::to_string(&keys).expect("strings serialise"),
        ),
        ("totesys.pipeline_version".into(), PIPELINE_VERSION.into()),
    ]
}

/// Columns written without a dictionary: keys, timestamps' parts and amounts rarely repeat.
pub(crate) fn plain_columns(table: &WarehouseTable) -> impl Iterator<Item = &'static str> + '_ {
    table
        .columns
        .iter()
        .enumerate()
        .filter(|(i, c)| *i == 0 || matches!(c.wh_type, WhType::Time | WhType::Money))
        .map(|(_, c)| c.name)
}

pub(crate) fn latest(sources: &Sources) -> DateTime<Utc> {
    sources
        .iter()
        .map(|(t, _)| *t)
        .max()
        .expect("at least one source file")
}

/// The source tables of `sources`' raw keys, sorted, joined by `-`: what an output built from
/// several files is named after besides its window end, so that two batches of one window end
/// with different files never write the same key.
fn source_tables(sources: &Sources) -> String {
    let tables: std::collections::BTreeSet<&str> = sources
        .iter()
        .filter_map(|(_, key)| key.split_once('/').map(|(table, _)| table))
        .collect();
    tables.into_iter().collect::<Vec<_>>().join("-")
}

/// Stages a whole in-memory batch as `table`'s output (nothing for an empty batch), named
/// after its window end and its source tables.
pub(crate) async fn stage_batch(
    processed: &S3Store,
    staged: &mut Staged,
    table: &'static WarehouseTable,
    batch: &RecordBatch,
    sources: &Sources,
) -> Result<()> {
    if batch.num_rows() == 0 {
        return Ok(());
    }
    let key = suffixed_parquet_key(table.name, latest(sources), &source_tables(sources));
    let mut upload =
        ParquetUpload::create_new(processed, &key, batch.schema(), plain_columns(table))?;
    upload.write(batch).await?;
    staged.uploads.push(StagedUpload {
        name: table.name.to_owned(),
        quarantine: false,
        upload,
        metadata: file_metadata(table.name, sources),
    });
    Ok(())
}

/// An output streamed batch by batch, created with its first row: a source file whose rows
/// all go elsewhere (quarantine, or nowhere) leaves no empty file behind.
pub(crate) struct LazyUpload {
    key: String,
    schema: SchemaRef,
    plain: Vec<&'static str>,
    upload: Option<ParquetUpload>,
}

impl LazyUpload {
    pub(crate) fn new(key: String, schema: SchemaRef, plain: Vec<&'static str>) -> Self {
        LazyUpload {
            key,
            schema,
            plain,
            upload: None,
        }
    }

    async fn write(&mut self, processed: &S3Store, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let upload = match &mut self.upload {
            Some(upload) => upload,
            None => self.upload.insert(ParquetUpload::create_new(
                processed,
                &self.key,
                self.schema.clone(),
                self.plain.iter().copied(),
            )?),
        };
        upload.write(batch).await?;
        Ok(())
    }

    async fn abort(self) {
        if let Some(upload) = self.upload {
            upload.abort().await;
        }
    }
}

/// Streams one raw file through `each`, which turns a batch of its rows into rows for each of
/// `outputs`; on success the outputs that got rows are staged under `name`, on failure all of
/// them are aborted.
pub(crate) async fn stage_stream<const N: usize>(
    raw_bucket: &str,
    processed: &S3Store,
    mut file: OpenFile,
    staged: &mut Staged,
    name: &'static str,
    outputs: [(LazyUpload, bool); N],
    mut each: impl FnMut(&RawFile, RecordBatch) -> Result<[Option<RecordBatch>; N]>,
) -> Result<()> {
    let mut outputs = outputs;
    let outcome = async {
        while let Some(batch) = file.next_batch(raw_bucket).await? {
            for (out, (upload, _)) in each(&file.file, batch)?.iter().zip(&mut outputs) {
                if let Some(out) = out {
                    upload.write(processed, out).await?;
                }
            }
        }
        Ok::<_, Error>(())
    }
    .await;
    if let Err(e) = outcome {
        for (upload, _) in outputs {
            upload.abort().await;
        }
        return Err(e);
    }
    let sources: Sources = vec![(file.file.window_end, file.file.key.clone())];
    for (lazy, quarantine) in outputs {
        if let Some(upload) = lazy.upload {
            staged.uploads.push(StagedUpload {
                name: name.to_owned(),
                quarantine,
                upload,
                metadata: file_metadata(name, &sources),
            });
        }
    }
    Ok(())
}
