//! A landed Parquet file, read record by record.
//!
//! Parquet is read from its footer: the file is copied to a temporary file first. Only the
//! declared columns are decoded, a batch at a time (memory: one row group's column chunks and
//! one batch). Each value is written as text and read under its declared type like any other
//! format's, so a value that does not fit (a float in an integer column, a string that is not
//! a date) quarantines its row, never the file: a string is text (the declared formats
//! apply), anything else is typed and written as ISO 8601 (timestamps, dates, times) or as
//! its exact decimal.

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::error::{Error, Result};
use crate::read::{Cell, Input, Row, RowSource, spool};

/// Records decoded at once.
const BATCH: usize = 4096;

/// A Parquet file whose columns are known and whose rows are not read yet.
pub(crate) struct ParquetInput {
    builder: ParquetRecordBatchReaderBuilder<std::fs::File>,
    file: String,
}

impl ParquetInput {
    /// Copies `read` (named `file` in errors) to local storage and reads its footer.
    pub(crate) fn open(read: Input<'_>, file: &str) -> Result<Self> {
        let local = spool(read, file)?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(local).map_err(|e| Error::Unreadable {
                file: file.into(),
                reason: format!("not a Parquet file: {e}"),
            })?;
        Ok(ParquetInput {
            builder,
            file: file.into(),
        })
    }

    /// The file's top-level column names, in order.
    pub(crate) fn names(&self) -> Vec<String> {
        let schema = self.builder.schema();
        schema.fields().iter().map(|f| f.name().clone()).collect()
    }

    /// The rows of the columns `fields` picks (each declared column's place in the file), and
    /// each declared column's place in those rows.
    pub(crate) fn rows(
        self,
        fields: &[Option<usize>],
    ) -> Result<(RowSource<'static>, Vec<Option<usize>>)> {
        let mut picked: Vec<usize> = fields.iter().flatten().copied().collect();
        picked.sort_unstable();
        picked.dedup();
        let places = fields
            .iter()
            .map(|f| f.map(|i| picked.binary_search(&i).expect("picked")))
            .collect();
        let mask = ProjectionMask::roots(self.builder.parquet_schema(), picked.iter().copied());
        let reader = self
            .builder
            .with_projection(mask)
            .with_batch_size(BATCH)
            .build()
            .map_err(|e| Error::Unreadable {
                file: self.file.clone(),
                reason: e.to_string(),
            })?;
        let rows = ParquetRows {
            reader,
            pending: Vec::new().into_iter(),
            read: 0,
            file: self.file,
        };
        Ok((Box::new(rows), places))
    }
}

struct ParquetRows {
    reader: ParquetRecordBatchReader,
    pending: std::vec::IntoIter<Row>,
    /// Records read so far.
    read: u64,
    file: String,
}

impl Iterator for ParquetRows {
    type Item = Result<Row>;

    fn next(&mut self) -> Option<Result<Row>> {
        loop {
            if let Some(row) = self.pending.next() {
                return Some(Ok(row));
            }
            let batch = match self.reader.next()? {
                Ok(batch) => batch,
                Err(e) => {
                    return Some(Err(Error::Unreadable {
                        file: self.file.clone(),
                        reason: e.to_string(),
                    }));
                }
            };
            match rows_of(&batch, self.read) {
                Ok(rows) => {
                    self.read += rows.len() as u64;
                    self.pending = rows.into_iter();
                }
                Err(reason) => {
                    return Some(Err(Error::Unreadable {
                        file: self.file.clone(),
                        reason,
                    }));
                }
            }
        }
    }
}

/// A batch as rows of cells; `before` records came before it.
fn rows_of(batch: &RecordBatch, before: u64) -> std::result::Result<Vec<Row>, String> {
    let options = FormatOptions::default();
    let columns: Vec<(bool, &dyn Array, ArrayFormatter<'_>)> = batch
        .columns()
        .iter()
        .zip(batch.schema().fields())
        .map(|(array, field)| {
            let formatter = ArrayFormatter::try_new(array.as_ref(), &options)
                .map_err(|e| format!("column {:?}: {e}", field.name()))?;
            Ok((is_text(array.data_type()), array.as_ref(), formatter))
        })
        .collect::<std::result::Result<_, String>>()?;
    Ok((0..batch.num_rows())
        .map(|i| Row {
            line: before + i as u64 + 1,
            cells: columns
                .iter()
                .map(|(text, array, formatter)| {
                    if array.is_null(i) {
                        Cell::Empty
                    } else if *text {
                        Cell::Text(formatter.value(i).to_string())
                    } else {
                        Cell::Typed(formatter.value(i).to_string())
                    }
                })
                .collect(),
        })
        .collect())
}

/// Whether a column holds strings (read under the declared formats).
fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, values) => is_text(values),
        _ => false,
    }
}
