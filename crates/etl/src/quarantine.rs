//! `etl quarantine list|show`: the fact rows transform set aside (Parquet in the processed
//! bucket), and the declared datasets' rows ingest set aside (JSON Lines in the ingest
//! bucket, `quarantine/<dataset>/...jsonl`), with their reasons.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde::Serialize;
use serde_json::{Map, Value};
use utils::parquet_io::read_parquet;
use utils::store::S3Store;

use crate::text::table;
use crate::{Context, Error, Result};

const PREFIX: &str = "quarantine/";

/// The quarantine files, oldest first per table.
pub async fn keys(store: &S3Store) -> Result<Vec<String>> {
    let mut keys = crate::list(store, PREFIX).await?;
    keys.retain(|k| table_of(k).is_some());
    keys.sort();
    Ok(keys)
}

/// The warehouse table a quarantine key is of: `quarantine/<table>/YYYY/MM/DD/...parquet`.
pub fn table_of(key: &str) -> Option<&'static str> {
    utils::warehouse::processed_file(key.strip_prefix(PREFIX)?).map(|(t, _)| t.name)
}

/// The datasets' quarantine files in the ingest bucket, in key order.
pub async fn dataset_keys(raw: &S3Store) -> Result<Vec<String>> {
    let mut keys = crate::list(raw, PREFIX).await?;
    keys.retain(|k| dataset_of(k).is_some());
    Ok(keys)
}

/// The dataset a quarantine key of ingest's is of: `quarantine/<dataset>/...jsonl`.
pub fn dataset_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(PREFIX)?.strip_suffix(".jsonl")?;
    rest.split_once('/').map(|(dataset, _)| dataset)
}

/// One quarantine file: its rows, and how many have each reason.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantineFile {
    pub key: String,
    /// The fact table, or the dataset.
    pub table: String,
    pub rows: usize,
    pub reasons: BTreeMap<String, usize>,
}

/// Every quarantine file with its reasons: transform's in `processed`, then the datasets' in
/// `raw`.
pub async fn list(processed: &S3Store, raw: &S3Store) -> Result<Vec<QuarantineFile>> {
    let mut files = Vec::new();
    let keys = keys(processed).await?.into_iter();
    for key in keys.chain(dataset_keys(raw).await?) {
        let rows = read(processed, raw, &key).await?;
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for row in &rows {
            let reason = row.get("reason").and_then(Value::as_str).unwrap_or("-");
            *reasons.entry(reason.to_owned()).or_default() += 1;
        }
        let table = table_of(&key).or_else(|| dataset_of(&key));
        files.push(QuarantineFile {
            table: table.expect("kept by the listings").to_owned(),
            rows: rows.len(),
            reasons,
            key,
        });
    }
    Ok(files)
}

pub fn render_list(files: &[QuarantineFile]) -> String {
    if files.is_empty() {
        return "no quarantined rows\n".to_owned();
    }
    let rows: Vec<Vec<String>> = files
        .iter()
        .map(|f| {
            let reasons: Vec<String> = f
                .reasons
                .iter()
                .map(|(reason, n)| format!("{n} x {reason}"))
                .collect();
            vec![f.key.clone(), f.rows.to_string(), reasons.join("; ")]
        })
        .collect();
    table(&["file", "rows", "reasons"], &rows)
}

/// The rows of one quarantine file, each a JSON object of its columns as text (`null` for
/// NULL): the original values, as the raw file held them, and the reason. A dataset's (in
/// `raw`): each row's file, line, column, reason and value as it was.
pub async fn read(
    processed: &S3Store,
    raw: &S3Store,
    key: &str,
) -> Result<Vec<Map<String, Value>>> {
    if dataset_of(key).is_some() {
        let bytes = raw
            .get(key)
            .await
            .doing(|| format!("reading s3://{}/{key}", raw.bucket()))?
            .ok_or_else(|| Error::Usage(format!("s3://{}/{key} does not exist", raw.bucket())))?;
        return bytes
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                serde_json::from_slice(line).map_err(|e| {
                    Error::Usage(format!(
                        "s3://{}/{key}: not a quarantine line: {e}",
                        raw.bucket()
                    ))
                })
            })
            .collect();
    }
    if table_of(key).is_none() {
        return Err(Error::Usage(format!(
            "{key:?} is not a quarantine file (quarantine/<fact table>/YYYY/MM/DD/HHMMSSffffff.parquet, \
             or a dataset's quarantine/<dataset>/...jsonl; `etl quarantine list` lists them)"
        )));
    }
    let store = processed;
    let bytes = store
        .get(key)
        .await
        .doing(|| format!("reading s3://{}/{key}", store.bucket()))?
        .ok_or_else(|| Error::Usage(format!("s3://{}/{key} does not exist", store.bucket())))?;
    let contents =
        read_parquet(bytes).doing(|| format!("reading s3://{}/{key}", store.bucket()))?;
    let mut rows = Vec::new();
    for batch in &contents.batches {
        rows.extend(json_rows(batch).doing(|| format!("rendering s3://{}/{key}", store.bucket()))?);
    }
    Ok(rows)
}

fn json_rows(batch: &RecordBatch) -> utils::Result<Vec<Map<String, Value>>> {
    let options = FormatOptions::default();
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let schema = batch.schema();
    Ok((0..batch.num_rows())
        .map(|row| {
            schema
                .fields()
                .iter()
                .zip(batch.columns())
                .zip(&formatters)
                .map(|((field, column), format)| {
                    let value = if column.is_null(row) {
                        Value::Null
                    } else {
                        Value::String(format.value(row).to_string())
                    };
                    (field.name().clone(), value)
                })
                .collect()
        })
        .collect())
}

/// The rows of a file for people: one block per row, a column per line.
pub fn render_rows(rows: &[Map<String, Value>]) -> String {
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        out += &format!("-- row {}\n", i + 1);
        let cells: Vec<Vec<String>> = row
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                vec![k.clone(), v]
            })
            .collect();
        let text = table(&["column", "value"], &cells);
        // Without the header: the rows are self-describing.
        out += text.split_once('\n').map_or("", |(_, rest)| rest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_keys_name_their_fact_table() {
        assert_eq!(
            table_of("quarantine/fact_sales_order/2024/11/14/093005123456.parquet"),
            Some("fact_sales_order")
        );
        assert_eq!(
            table_of("fact_sales_order/2024/11/14/093005123456.parquet"),
            None
        );
        assert_eq!(table_of("quarantine/fact_sales_order/notes.txt"), None);
        assert_eq!(
            dataset_of("quarantine/trips/2024/11/14/093005000000-09ad468e385f8ce8-00000.jsonl"),
            Some("trips")
        );
        assert_eq!(dataset_of("quarantine/trips/notes.txt"), None);
    }
}
