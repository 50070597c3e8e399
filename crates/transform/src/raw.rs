//! Reading the raw zone: one file per table and window, checked against the table registry
//! before anything is read from it.

use arrow::array::{
    Array, ArrayAccessor, AsArray, Int32Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::compute::concat_batches;
use arrow::datatypes::{Field, Int32Type, Schema, SchemaRef, TimestampMillisecondType};
use futures_util::TryStreamExt;
use std::sync::Arc;
use utils::parquet_io::{ParquetStream, open_parquet, schema_difference, unwrap_external};
use utils::store::S3Store;
use utils::tables::TableSpec;

use crate::error::{Error, Result};
use crate::event::RawFile;

/// A raw file opened for reading: its footer has been read and its schema checked.
pub struct OpenFile {
    pub file: RawFile,
    pub rows: u64,
    /// The table's relaxed schema, which every batch is read into.
    schema: SchemaRef,
    stream: ParquetStream,
}

impl RawFile {
    /// An `InvalidInput` error about this file.
    pub fn invalid(&self, bucket: &str, reason: impl Into<String>) -> Error {
        Error::InvalidInput {
            table: self.table.name,
            bucket: bucket.to_owned(),
            key: self.key.clone(),
            reason: reason.into(),
        }
    }

    /// A failure reading this file: transient ones stay retryable, the rest mean the file
    /// cannot be used.
    fn read_error(&self, bucket: &str, e: utils::Error) -> Error {
        if e.is_transient() {
            Error::Shared(e)
        } else {
            self.invalid(bucket, e.to_string())
        }
    }
}

/// The registry schema of `table` with every column nullable: what the transform reads raw
/// rows into. A NULL in a column the registry says is NOT NULL is the transform's to handle
/// (quarantine a fact row, a placeholder in a dimension), not a reason to refuse the file.
pub fn relaxed_schema(table: &TableSpec) -> SchemaRef {
    let fields: Vec<Field> = table
        .arrow_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Arc::new(Schema::new(fields))
}

/// Opens `file` and checks that it holds its table's columns, in order, with the registry's
/// types, and says it comes from that table.
pub async fn open(store: &S3Store, file: &RawFile) -> Result<OpenFile> {
    let bucket = store.bucket();
    let stream = open_parquet(store, &file.key)
        .await
        .map_err(|e| file.read_error(bucket, e))?;
    check_schema(file.table, &stream.schema).map_err(|reason| file.invalid(bucket, reason))?;
    if let Some((_, source)) = stream
        .metadata
        .iter()
        .find(|(k, _)| k == "totesys.source_table")
        && source != file.table.name
    {
        return Err(file.invalid(
            bucket,
            format!(
                "the file says it holds table {source:?}, not {}",
                file.table.name
            ),
        ));
    }
    Ok(OpenFile {
        file: file.clone(),
        rows: stream.rows,
        schema: relaxed_schema(file.table),
        stream,
    })
}

fn check_schema(table: &TableSpec, schema: &Schema) -> std::result::Result<(), String> {
    let expected = table.arrow_schema();
    match schema_difference(schema, &expected) {
        None => Ok(()),
        Some(problem) => {
            let columns: Vec<String> = expected
                .fields()
                .iter()
                .map(|f| format!("{} {}", f.name(), f.data_type()))
                .collect();
            Err(format!(
                "schema does not match the table registry: {problem} (expected columns: {})",
                columns.join(", ")
            ))
        }
    }
}

impl OpenFile {
    /// The next batch of rows, in the relaxed schema, or `None` at the end of the file.
    pub async fn next_batch(&mut self, bucket: &str) -> Result<Option<RecordBatch>> {
        let Some(batch) = self
            .stream
            .stream
            .try_next()
            .await
            .map_err(|e| self.file.read_error(bucket, unwrap_external(e)))?
        else {
            return Ok(None);
        };
        let batch = RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec())
            .map_err(|e| self.file.invalid(bucket, e.to_string()))?;
        Ok(Some(batch))
    }

    /// Every row of the file in one batch: for the joined tables' files, which are small.
    pub async fn read_all(mut self, bucket: &str) -> Result<RecordBatch> {
        let mut batches = Vec::new();
        while let Some(batch) = self.next_batch(bucket).await? {
            batches.push(batch);
        }
        concat_batches(&self.schema, &batches).map_err(|e| self.file.invalid(bucket, e.to_string()))
    }
}

// Typed access to a column of a batch in its table's relaxed schema. The column's presence and
// type were checked when the file was opened (or the snapshot read), so a mismatch here is a
// bug, not bad input.

fn column<'a>(batch: &'a RecordBatch, name: &str) -> &'a dyn Array {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name} was checked against the registry"))
        .as_ref()
}

pub fn ints<'a>(batch: &'a RecordBatch, name: &str) -> &'a Int32Array {
    column(batch, name).as_primitive::<Int32Type>()
}

pub fn texts<'a>(batch: &'a RecordBatch, name: &str) -> &'a StringArray {
    column(batch, name).as_string::<i32>()
}

pub fn timestamps<'a>(batch: &'a RecordBatch, name: &str) -> &'a TimestampMillisecondArray {
    column(batch, name).as_primitive::<TimestampMillisecondType>()
}

/// A value of an optional column as an `Option`.
pub fn opt<A: ArrayAccessor>(array: A, row: usize) -> Option<A::Item> {
    (!array.is_null(row)).then(|| array.value(row))
}
