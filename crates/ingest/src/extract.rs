//! Streaming one table's window from PostgreSQL into a Parquet object in S3.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Decimal128Builder, Int32Builder, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::SchemaRef;
use futures_util::{StreamExt, pin_mut};
use tokio_postgres::Client;
use tokio_postgres::binary_copy::{BinaryCopyOutRow, BinaryCopyOutStream};
use tokio_postgres::types::Type;
use utils::error::describe_db_error;
use utils::parquet_io::{BATCH_ROWS, PIPELINE_VERSION, ParquetUpload, WrittenFile};
use utils::query::{Window, new_entries_copy};
use utils::store::S3Store;
use utils::tables::{Column, MONEY_PRECISION, MONEY_SCALE, PgType, TableSpec};
use utils::time::format_time;

use crate::error::{Error, Result};
use crate::wire::{EpochMillis, Hundredths};

/// The type a column arrives as in the binary COPY (enums are cast to text by the query).
fn wire_type(t: PgType) -> Type {
    match t {
        PgType::Int4 => Type::INT4,
        PgType::Money => Type::NUMERIC,
        PgType::Timestamp3 => Type::TIMESTAMP,
        PgType::Text | PgType::Enum(_) => Type::TEXT,
        PgType::Varchar(_) => Type::VARCHAR,
        PgType::Bool => Type::BOOL,
    }
}

/// One Arrow builder per column, typed after the registry.
enum ColumnBuilder {
    Int(Int32Builder),
    Money(Decimal128Builder),
    Timestamp(TimestampMillisecondBuilder),
    Text(StringBuilder),
    Bool(BooleanBuilder),
}

impl ColumnBuilder {
    fn new(t: PgType) -> Self {
        match t {
            PgType::Int4 => ColumnBuilder::Int(Int32Builder::with_capacity(BATCH_ROWS)),
            PgType::Money => ColumnBuilder::Money(
                Decimal128Builder::with_capacity(BATCH_ROWS)
                    .with_precision_and_scale(MONEY_PRECISION, MONEY_SCALE)
                    .expect("valid decimal precision and scale"),
            ),
            PgType::Timestamp3 => {
                ColumnBuilder::Timestamp(TimestampMillisecondBuilder::with_capacity(BATCH_ROWS))
            }
            PgType::Text | PgType::Varchar(_) | PgType::Enum(_) => {
                ColumnBuilder::Text(StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 16))
            }
            PgType::Bool => ColumnBuilder::Bool(BooleanBuilder::with_capacity(BATCH_ROWS)),
        }
    }

    fn push(&mut self, row: &BinaryCopyOutRow, idx: usize) -> Result<(), String> {
        let get_err = |e: tokio_postgres::Error| describe_db_error(&e);
        match self {
            ColumnBuilder::Int(b) => {
                b.append_option(row.try_get::<Option<i32>>(idx).map_err(get_err)?)
            }
            ColumnBuilder::Text(b) => {
                b.append_option(row.try_get::<Option<&str>>(idx).map_err(get_err)?)
            }
            ColumnBuilder::Bool(b) => {
                b.append_option(row.try_get::<Option<bool>>(idx).map_err(get_err)?)
            }
            ColumnBuilder::Timestamp(b) => {
                let ts = row.try_get::<Option<EpochMillis>>(idx).map_err(get_err)?;
                b.append_option(ts.map(|t| t.0));
            }
            ColumnBuilder::Money(b) => {
                let value = row.try_get::<Option<Hundredths>>(idx).map_err(get_err)?;
                b.append_option(value.map(|v| v.0));
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Int(b) => Arc::new(b.finish()),
            ColumnBuilder::Money(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
            ColumnBuilder::Text(b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
        }
    }
}

/// Accumulates rows into fixed-size record batches.
struct BatchBuilder {
    table: &'static TableSpec,
    schema: SchemaRef,
    columns: Vec<ColumnBuilder>,
    rows: usize,
}

impl BatchBuilder {
    fn new(table: &'static TableSpec) -> Self {
        BatchBuilder {
            table,
            schema: table.arrow_schema(),
            columns: table
                .columns
                .iter()
                .map(|c| ColumnBuilder::new(c.pg_type))
                .collect(),
            rows: 0,
        }
    }

    fn push(&mut self, row: &BinaryCopyOutRow) -> Result<()> {
        let table = self.table;
        for (idx, (builder, column)) in self.columns.iter_mut().zip(table.columns).enumerate() {
            builder
                .push(row, idx)
                .map_err(|reason| invalid(table, column, reason))?;
        }
        self.rows += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<RecordBatch> {
        let arrays = self.columns.iter_mut().map(ColumnBuilder::finish).collect();
        self.rows = 0;
        RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| Error::InvalidSourceData {
            table: self.table.name,
            column: "*",
            reason: e.to_string(),
        })
    }
}

fn invalid(table: &TableSpec, column: &Column, reason: String) -> Error {
    Error::InvalidSourceData {
        table: table.name,
        column: column.name,
        reason: format!("expected {}: {reason}", column.pg_type.sql_name()),
    }
}

/// Parquet footer metadata describing where a raw file came from.
pub fn file_metadata(table: &TableSpec, window: &Window, rows: u64) -> Vec<(String, String)> {
    let pg_types: serde_json::Map<String, serde_json::Value> = table
        .columns
        .iter()
        .map(|c| (c.name.to_owned(), c.pg_type.sql_name().into()))
        .collect();
    vec![
        ("totesys.source_table".into(), table.name.into()),
        ("totesys.window_start".into(), window.start_text()),
        ("totesys.window_end".into(), format_time(window.end)),
        ("totesys.row_count".into(), rows.to_string()),
        (
            "totesys.pg_types".into(),
            serde_json::Value::Object(pg_types).to_string(),
        ),
        ("totesys.pipeline_version".into(), PIPELINE_VERSION.into()),
    ]
}

/// Streams the rows of `table` in `window` into a Parquet object at `key`. Writes nothing and
/// returns `None` when the window holds no rows. On any failure the partial upload is aborted.
pub async fn extract_window(
    client: &Client,
    store: &S3Store,
    table: &'static TableSpec,
    window: &Window,
    key: &str,
) -> Result<Option<WrittenFile>> {
    let mut upload = None;
    match stream_rows(client, store, table, window, key, &mut upload).await {
        Ok(()) => match upload {
            Some(upload) => {
                let rows = upload.rows();
                Ok(Some(
                    upload.finish(file_metadata(table, window, rows)).await?,
                ))
            }
            None => Ok(None),
        },
        Err(e) => {
            if let Some(upload) = upload {
                upload.abort().await;
            }
            Err(e)
        }
    }
}

async fn stream_rows(
    client: &Client,
    store: &S3Store,
    table: &'static TableSpec,
    window: &Window,
    key: &str,
    upload: &mut Option<ParquetUpload>,
) -> Result<()> {
    let types: Vec<Type> = table.columns.iter().map(|c| wire_type(c.pg_type)).collect();
    let copy = client.copy_out(&new_entries_copy(table, window)).await?;
    let rows = BinaryCopyOutStream::new(copy, &types);
    pin_mut!(rows);
    let mut batch = BatchBuilder::new(table);
    while let Some(row) = rows.next().await {
        batch.push(&row?)?;
        if batch.rows == BATCH_ROWS {
            write_batch(store, key, &mut batch, upload).await?;
        }
    }
    if batch.rows > 0 {
        write_batch(store, key, &mut batch, upload).await?;
    }
    Ok(())
}

async fn write_batch(
    store: &S3Store,
    key: &str,
    batch: &mut BatchBuilder,
    upload: &mut Option<ParquetUpload>,
) -> Result<()> {
    let records = batch.finish()?;
    if upload.is_none() {
        *upload = Some(ParquetUpload::create(
            store,
            key,
            batch.schema.clone(),
            batch.table.high_cardinality_columns(),
        )?);
    }
    upload
        .as_mut()
        .expect("created above")
        .write(&records)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use utils::tables::table;

    #[test]
    fn metadata_records_table_window_rows_types_and_version() {
        let window = Window {
            start: None,
            end: Utc.timestamp_micros(1_731_576_605_123_456).unwrap(),
        };
        let md = file_metadata(table("currency").unwrap(), &window, 3);
        let get = |k: &str| md.iter().find(|(key, _)| key == k).unwrap().1.clone();
        assert_eq!(get("totesys.source_table"), "currency");
        assert_eq!(get("totesys.window_start"), "-infinity");
        assert_eq!(get("totesys.window_end"), "2024-11-14T09:30:05.123456Z");
        assert_eq!(get("totesys.row_count"), "3");
        assert_eq!(
            get("totesys.pg_types"),
            r#"{"currency_id":"integer","currency_code":"character varying(3)","created_at":"timestamp(3) without time zone","last_updated":"timestamp(3) without time zone"}"#
        );
        assert_eq!(get("totesys.pipeline_version"), PIPELINE_VERSION);
    }
}
