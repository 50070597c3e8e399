//! Parquet to and from S3 with bounded memory.
//!
//! Writing: record batches are encoded into row groups of at most [`MAX_ROW_GROUP_ROWS`] rows
//! or [`MAX_ROW_GROUP_BYTES`] encoded bytes, and the encoded bytes go out as S3 multipart
//! upload parts of at least [`PART_SIZE`], each uploaded on its own task while the next one
//! fills, with at most one in flight. Memory is one row group plus two parts, whatever the
//! file's size. The object appears only when the upload completes; a failed write aborts the
//! upload.

use std::mem;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use aws_sdk_s3::types::CompletedPart;
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::async_reader::{
    AsyncFileReader, MetadataSuffixFetch, ParquetRecordBatchStream, ParquetRecordBatchStreamBuilder,
};
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::arrow::{ArrowWriter, AsyncArrowWriter};
use parquet::basic::Compression;
use parquet::errors::ParquetError;
use parquet::file::metadata::{KeyValue, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::error::{Error, Result};
use crate::store::S3Store;

/// Rows in a record batch built from a stream.
pub const BATCH_ROWS: usize = 8192;
/// Row-group limit in rows.
pub const MAX_ROW_GROUP_ROWS: usize = 64 * 1024;
/// Row-group limit in encoded bytes held in memory.
pub const MAX_ROW_GROUP_BYTES: usize = 8 * 1024 * 1024;
/// Multipart part size: S3's minimum for all parts but the last, to keep memory low.
pub const PART_SIZE: usize = 5 * 1024 * 1024;

pub const PARQUET_CONTENT_TYPE: &str = "application/vnd.apache.parquet";

/// The pipeline version recorded in every file's metadata.
pub const PIPELINE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Writer properties shared by every Lambda: Snappy (cheap to encode), statistics, the
/// row-group limits, and dictionary encoding except for the `plain` columns: those whose
/// values rarely repeat (keys, timestamps, amounts), where building a dictionary only costs
/// time before Parquet falls back to plain encoding anyway. A nested column is named by its
/// dotted path (`origin_coord.lon`).
pub fn writer_properties<'a>(plain: impl IntoIterator<Item = &'a str>) -> WriterProperties {
    plain
        .into_iter()
        .fold(WriterProperties::builder(), |props, column| {
            let path = ColumnPath::new(column.split('.').map(str::to_owned).collect());
            props.set_column_dictionary_enabled(path, false)
        })
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(MAX_ROW_GROUP_ROWS))
        .set_max_row_group_bytes(Some(MAX_ROW_GROUP_BYTES))
        .build()
}

/// An [`AsyncFileWriter`] that streams to one S3 object. Small files go up in a single
/// PutObject; from the first full part on, as a multipart upload whose parts upload in the
/// background while the next part fills. A writer dropped with its multipart upload neither
/// completed nor aborted (an error path that forgot it) aborts the upload in the background.
pub struct S3UploadWriter {
    store: S3Store,
    key: String,
    buffer: Vec<u8>,
    upload: Option<Multipart>,
    /// Write only where no object is at the key yet (`If-None-Match: *`).
    create_only: bool,
    /// Set by the finish of a `create_only` writer that found an object at the key: that
    /// object stays as it is, this one is dropped.
    existed: bool,
}

struct Multipart {
    id: String,
    parts: Vec<CompletedPart>,
    in_flight: Option<JoinHandle<Result<CompletedPart>>>,
}

impl Multipart {
    /// Waits for the part in flight, if any, and records it.
    async fn settle(&mut self, store: &S3Store, key: &str) -> Result<()> {
        if let Some(handle) = self.in_flight.take() {
            let part = handle.await.map_err(|e| Error::Storage {
                operation: "UploadPart",
                bucket: store.bucket().to_owned(),
                key: key.to_owned(),
                message: format!("upload task failed: {e}"),
                transient: true,
            })??;
            self.parts.push(part);
        }
        Ok(())
    }
}

impl S3UploadWriter {
    pub fn new(store: S3Store, key: impl Into<String>) -> Self {
        S3UploadWriter {
            store,
            key: key.into(),
            buffer: Vec::new(),
            upload: None,
            create_only: false,
            existed: false,
        }
    }

    /// A writer that never replaces an object: where one is at the key when it finishes, that
    /// object is kept and this one dropped (see [`WrittenFile::existed`]).
    pub fn create_only(store: S3Store, key: impl Into<String>) -> Self {
        let mut writer = Self::new(store, key);
        writer.create_only = true;
        writer
    }

    /// Starts uploading `body` as the next part, once the previous part is done.
    async fn send_part(&mut self, body: Bytes) -> Result<()> {
        if self.upload.is_none() {
            let id = self
                .store
                .create_multipart_upload(&self.key, PARQUET_CONTENT_TYPE)
                .await?;
            self.upload = Some(Multipart {
                id,
                parts: Vec::new(),
                in_flight: None,
            });
        }
        let upload = self.upload.as_mut().expect("upload started above");
        upload.settle(&self.store, &self.key).await?;
        let number = i32::try_from(upload.parts.len() + 1).expect("fewer than 10,000 parts");
        let (store, key, id) = (self.store.clone(), self.key.clone(), upload.id.clone());
        upload.in_flight = Some(tokio::spawn(async move {
            store.upload_part(&key, &id, number, body).await
        }));
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        let body = Bytes::from(mem::take(&mut self.buffer));
        if self.upload.is_none() {
            if !self.create_only {
                return self.store.put(&self.key, body, PARQUET_CONTENT_TYPE).await;
            }
            let created = self
                .store
                .put_if(&self.key, body, PARQUET_CONTENT_TYPE, None)
                .await?;
            return self.found_existing(created).await;
        }
        if !body.is_empty() {
            self.send_part(body).await?;
        }
        let upload = self.upload.as_mut().expect("multipart upload");
        upload.settle(&self.store, &self.key).await?;
        let parts = mem::take(&mut upload.parts);
        let created = self
            .store
            .complete_multipart_upload(&self.key, &upload.id, parts, self.create_only)
            .await?;
        let upload = self.upload.take().expect("multipart upload");
        if !created {
            upload.abort(&self.store, &self.key).await;
        }
        self.found_existing(created).await
    }

    /// After a create-only write that did not `create`: the object in the way must be there
    /// (a conditional write that lost to one still in progress finds none, and is tried again).
    async fn found_existing(&mut self, created: bool) -> Result<()> {
        if created {
            return Ok(());
        }
        if self.store.etag(&self.key).await?.is_none() {
            return Err(Error::Storage {
                operation: "PutObject",
                bucket: self.store.bucket().to_owned(),
                key: self.key.clone(),
                message: "another write of this object was in progress".into(),
                transient: true,
            });
        }
        self.existed = true;
        Ok(())
    }

    /// Abandons the object: an unfinished multipart upload is aborted, so nothing appears.
    pub async fn abort(mut self) {
        if let Some(upload) = self.upload.take() {
            upload.abort(&self.store, &self.key).await;
        }
    }
}

impl Multipart {
    async fn abort(mut self, store: &S3Store, key: &str) {
        if let Some(handle) = self.in_flight.take() {
            handle.abort();
            let _ = handle.await;
        }
        if let Err(e) = store.abort_multipart_upload(key, &self.id).await {
            // The bucket's lifecycle rule removes what an abort could not.
            warn!(key, error = %e, "could not abort multipart upload");
        }
    }
}

impl Drop for S3UploadWriter {
    fn drop(&mut self) {
        let Some(upload) = self.upload.take() else {
            return;
        };
        warn!(key = %self.key, "an upload was dropped unfinished: aborting it");
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, key) = (self.store.clone(), self.key.clone());
            runtime.spawn(async move { upload.abort(&store, &key).await });
        }
    }
}

fn external(e: Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileWriter for S3UploadWriter {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, parquet::errors::Result<()>> {
        Box::pin(async move {
            let part = if self.buffer.is_empty() && bs.len() >= PART_SIZE {
                bs
            } else {
                self.buffer.extend_from_slice(&bs);
                if self.buffer.len() < PART_SIZE {
                    return Ok(());
                }
                Bytes::from(mem::take(&mut self.buffer))
            };
            self.send_part(part).await.map_err(external)
        })
    }

    fn complete(&mut self) -> BoxFuture<'_, parquet::errors::Result<()>> {
        Box::pin(async move { self.finish().await.map_err(external) })
    }
}

/// What a finished upload wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
    /// A create-only upload found an object at its key and left it as it was.
    pub existed: bool,
}

/// A Parquet file being written to S3. It aborts itself when a write or the finish fails, so
/// a failed upload leaves nothing behind whoever holds it; one dropped unfinished is aborted
/// by its [`S3UploadWriter`].
pub struct ParquetUpload {
    /// `None` once aborted.
    writer: Option<AsyncArrowWriter<S3UploadWriter>>,
    key: String,
    rows: u64,
}

impl ParquetUpload {
    /// Starts a file at `key` (see [`writer_properties`] for `plain`). Nothing is sent until
    /// the first part fills or the file closes.
    pub fn create<'a>(
        store: &S3Store,
        key: &str,
        schema: SchemaRef,
        plain: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self> {
        Self::with_sink(S3UploadWriter::new(store.clone(), key), key, schema, plain)
    }

    /// [`ParquetUpload::create`] that never replaces an object at `key`: where one is there
    /// when the file finishes, it is kept and [`WrittenFile::existed`] says so.
    pub fn create_new<'a>(
        store: &S3Store,
        key: &str,
        schema: SchemaRef,
        plain: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self> {
        let sink = S3UploadWriter::create_only(store.clone(), key);
        Self::with_sink(sink, key, schema, plain)
    }

    fn with_sink<'a>(
        sink: S3UploadWriter,
        key: &str,
        schema: SchemaRef,
        plain: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self> {
        let writer = AsyncArrowWriter::try_new(sink, schema, Some(writer_properties(plain)))?;
        Ok(ParquetUpload {
            writer: Some(writer),
            key: key.to_owned(),
            rows: 0,
        })
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes `batch`; on failure the upload is aborted and every later call fails.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let writer = self.writer.as_mut().ok_or_else(|| aborted(&self.key))?;
        if let Err(e) = writer.write(batch).await {
            self.abort_now().await;
            return Err(unwrap_external(e));
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Writes the footer with `metadata` and completes the object. On failure the upload is
    /// aborted and nothing is left at the key.
    pub async fn finish(mut self, metadata: Vec<(String, String)>) -> Result<WrittenFile> {
        let mut writer = self.writer.take().ok_or_else(|| aborted(&self.key))?;
        for (k, v) in metadata {
            writer.append_key_value_metadata(KeyValue::new(k, v));
        }
        match writer.finish().await {
            Ok(_) => Ok(WrittenFile {
                bytes: writer.bytes_written() as u64,
                existed: writer.into_inner().existed,
                key: self.key,
                rows: self.rows,
            }),
            Err(e) => {
                writer.into_inner().abort().await;
                Err(unwrap_external(e))
            }
        }
    }

    /// Gives up on the file: nothing is left at the key.
    pub async fn abort(mut self) {
        self.abort_now().await;
    }

    async fn abort_now(&mut self) {
        if let Some(writer) = self.writer.take() {
            writer.into_inner().abort().await;
        }
    }
}

fn aborted(key: &str) -> Error {
    Error::Parquet(ParquetError::General(format!(
        "the upload of {key} was aborted after an error"
    )))
}

/// `batch` as a whole Parquet file in memory, for objects small enough to hold (the transform's
/// snapshots) that must be written in one conditional PutObject.
pub fn parquet_bytes<'a>(
    batch: &RecordBatch,
    plain: impl IntoIterator<Item = &'a str>,
) -> Result<Bytes> {
    let mut writer =
        ArrowWriter::try_new(Vec::new(), batch.schema(), Some(writer_properties(plain)))?;
    writer.write(batch)?;
    Ok(Bytes::from(writer.into_inner()?))
}

/// Our own errors come back from the Parquet writer wrapped as `External`; unwrap them so
/// their kind (and retryability) survives.
pub fn unwrap_external(e: ParquetError) -> Error {
    match e {
        ParquetError::External(inner) => match inner.downcast::<Error>() {
            Ok(ours) => *ours,
            Err(other) => Error::Parquet(ParquetError::External(other)),
        },
        other => Error::Parquet(other),
    }
}

/// A whole Parquet file read back: schema, batches and footer key-value metadata.
#[derive(Debug)]
pub struct ParquetContents {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub metadata: Vec<(String, String)>,
}

impl ParquetContents {
    #[cfg(any(test, feature = "test-util"))]
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Decodes a Parquet file held in memory.
pub fn read_parquet(bytes: Bytes) -> Result<ParquetContents> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let metadata = key_value_metadata(builder.metadata().file_metadata());
    let schema = builder.schema().clone();
    let batches = builder
        .with_batch_size(BATCH_ROWS)
        .build()?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ParquetContents {
        schema,
        batches,
        metadata,
    })
}

/// Bytes fetched with the footer in the first request: enough for the metadata of every file
/// this pipeline writes, so opening a file costs one GET.
const FOOTER_PREFETCH: usize = 64 * 1024;

/// An [`AsyncFileReader`] over one S3 object: the footer with a suffix range request, then
/// one ranged GET per row group (its column chunks are contiguous), so reading a file holds
/// one row group in memory, whatever the file's size.
pub struct S3ParquetReader {
    store: S3Store,
    key: String,
    etag: Option<String>,
}

impl S3ParquetReader {
    /// Reads whichever version of `key` each request finds; with `etag`, that version only.
    pub fn new(store: S3Store, key: impl Into<String>, etag: Option<String>) -> Self {
        S3ParquetReader {
            store,
            key: key.into(),
            etag,
        }
    }

    async fn fetch(&self, range: String) -> parquet::errors::Result<Bytes> {
        self.store
            .get_range(&self.key, &range, self.etag.as_deref())
            .await
            .map_err(external)
    }
}

impl AsyncFileReader for S3ParquetReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            if range.is_empty() {
                return Ok(Bytes::new());
            }
            self.fetch(format!("bytes={}-{}", range.start, range.end - 1))
                .await
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            let (Some(start), Some(end)) = (
                ranges.iter().map(|r| r.start).min(),
                ranges.iter().map(|r| r.end).max(),
            ) else {
                return Ok(Vec::new());
            };
            // One request for the span: the ranges asked for together are a row group's
            // column chunks, which lie next to each other.
            let span = self.get_bytes(start..end).await?;
            Ok(ranges
                .iter()
                .map(|r| span.slice((r.start - start) as usize..(r.end - start) as usize))
                .collect())
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let metadata = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(FOOTER_PREFETCH))
                .load_via_suffix_and_finish(self)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

impl MetadataSuffixFetch for &mut S3ParquetReader {
    fn fetch_suffix(&mut self, suffix: usize) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move { self.fetch(format!("bytes=-{suffix}")).await }.boxed()
    }
}

/// How a file's schema differs from the expected one (column names and Arrow types, in
/// order), or `None` when it does not.
pub fn schema_difference(found: &Schema, expected: &Schema) -> Option<String> {
    let describe = |s: &Schema| -> Vec<String> {
        s.fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect()
    };
    let (found, expected) = (describe(found), describe(expected));
    if found == expected {
        return None;
    }
    Some(
        expected
            .iter()
            .zip(&found)
            .position(|(e, f)| e != f)
            .map(|i| {
                format!(
                    "column {} is `{}`, expected `{}`",
                    i + 1,
                    found[i],
                    expected[i]
                )
            })
            .unwrap_or_else(|| format!("{} columns, expected {}", found.len(), expected.len())),
    )
}

/// An S3 Parquet file opened for streaming: its footer is read, its batches come one row
/// group at a time.
pub struct ParquetStream {
    pub schema: SchemaRef,
    pub metadata: Vec<(String, String)>,
    pub rows: u64,
    /// The row groups' compressed bytes: the file's data, without its footer.
    pub bytes: u64,
    pub stream: ParquetRecordBatchStream<S3ParquetReader>,
}

/// Opens `key` for streaming in batches of [`BATCH_ROWS`]. Reads only the footer.
pub async fn open_parquet(store: &S3Store, key: &str) -> Result<ParquetStream> {
    open(S3ParquetReader::new(store.clone(), key, None)).await
}

/// [`open_parquet`] for the version of `key` whose ETag is `etag`: every ranged read carries
/// `If-Match`, so the rows read are the rows of the version a caller recorded.
pub async fn open_parquet_version(store: &S3Store, key: &str, etag: &str) -> Result<ParquetStream> {
    open(S3ParquetReader::new(
        store.clone(),
        key,
        Some(etag.to_owned()),
    ))
    .await
}

async fn open(reader: S3ParquetReader) -> Result<ParquetStream> {
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(unwrap_external)?;
    let file = builder.metadata().file_metadata();
    let metadata = key_value_metadata(file);
    let rows = u64::try_from(file.num_rows()).map_err(|_| {
        Error::Parquet(ParquetError::General(format!(
            "the footer counts {} rows",
            file.num_rows()
        )))
    })?;
    let bytes = builder
        .metadata()
        .row_groups()
        .iter()
        .map(|g| u64::try_from(g.compressed_size()).unwrap_or(0))
        .sum();
    let schema = builder.schema().clone();
    let stream = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(unwrap_external)?;
    Ok(ParquetStream {
        schema,
        metadata,
        rows,
        bytes,
        stream,
    })
}

fn key_value_metadata(file: &parquet::file::metadata::FileMetaData) -> Vec<(String, String)> {
    file.key_value_metadata()
        .map(|kv| {
            kv.iter()
                .map(|e| (e.key.clone(), e.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}
