//! Current-state snapshots of the source tables that dimensions join: the latest version of
//! each row, keyed by primary key. Each run merges its new rows in, so a change in a joined
//! table (a department, an address) can re-emit the dimension rows built from it without
//! reading the raw history again.
//!
//! A snapshot is one small Parquet object per table, `_state/transform/<table>.parquet` in the
//! processed bucket, in the table's relaxed raw schema. Its size follows the number of
//! entities (tens to thousands of rows), not the number of changes.
//!
//! It is written only over the version that was read (a conditional PutObject on its ETag), so
//! two transforms that meet do not lose each other's rows: the one that loses the race reads
//! the new version, merges its rows into it and tries again.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use arrow::array::{Array, RecordBatch};
use arrow::compute::interleave_record_batch;
use tracing::info;
use utils::parquet_io::{PARQUET_CONTENT_TYPE, parquet_bytes, read_parquet};
use utils::store::S3Store;
use utils::tables::{LAST_UPDATED, TableSpec};

use crate::error::{Error, Result};
use crate::event::RawFile;
use crate::raw::{ints, opt, relaxed_schema, timestamps};

pub fn snapshot_key(table: &str) -> String {
    format!("_state/transform/{table}.parquet")
}

/// A table's snapshot as it was read.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub batch: RecordBatch,
    /// The version read, which [`save`] writes over; `None` before the first run wrote one.
    pub etag: Option<String>,
}

/// The table's snapshot, or an empty batch before the first run.
pub async fn load(store: &S3Store, table: &'static TableSpec) -> Result<Snapshot> {
    let key = snapshot_key(table.name);
    let schema = relaxed_schema(table);
    let Some((bytes, etag)) = store.get_version(&key).await? else {
        return Ok(Snapshot {
            batch: RecordBatch::new_empty(schema),
            etag: None,
        });
    };
    let corrupt = |reason: String| {
        Error::Shared(utils::Error::CorruptState {
            bucket: store.bucket().to_owned(),
            key: key.clone(),
            reason,
        })
    };
    let contents = read_parquet(bytes).map_err(|e| corrupt(e.to_string()))?;
    let same = contents.schema.fields().len() == schema.fields().len()
        && contents
            .schema
            .fields()
            .iter()
            .zip(schema.fields())
            .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
    if !same {
        return Err(corrupt(format!(
            "schema {:?} is not the relaxed schema of table {}",
            contents.schema, table.name
        )));
    }
    let batches: Vec<RecordBatch> = contents
        .batches
        .into_iter()
        .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| corrupt(e.to_string()))?;
    let batch =
        arrow::compute::concat_batches(&schema, &batches).map_err(|e| corrupt(e.to_string()))?;
    Ok(Snapshot {
        batch,
        etag: Some(etag),
    })
}

/// How often a transform that lost the race merges again before it gives up (transiently).
/// Every lost race is another writer's win, so n transforms meeting need at most n attempts.
const SAVE_ATTEMPTS: usize = 16;

/// Merges `rows` into the snapshot `read` and writes it, only if the object is still that
/// version; if another transform wrote it since, merges `rows` into the new version instead.
pub async fn save(
    store: &S3Store,
    table: &'static TableSpec,
    read: Snapshot,
    rows: &RecordBatch,
) -> Result<()> {
    let key = snapshot_key(table.name);
    let mut base = read;
    for _ in 0..SAVE_ATTEMPTS {
        let merged = latest_per_key(table, &[&base.batch, rows])?;
        let body = parquet_bytes(&merged, [])?;
        if store
            .put_if(&key, body, PARQUET_CONTENT_TYPE, base.etag.as_deref())
            .await?
        {
            return Ok(());
        }
        info!(
            table = table.name,
            key, "the snapshot changed since it was read: merging into the new version"
        );
        base = load(store, table).await?;
    }
    Err(utils::Error::Storage {
        operation: "PutObject",
        bucket: store.bucket().to_owned(),
        key,
        message: format!(
            "the snapshot changed {SAVE_ATTEMPTS} times while this transform merged into it"
        ),
        transient: true,
    }
    .into())
}

/// The latest version of each row of a dimension's raw batch; a NULL key is refused.
pub fn latest_rows(raw_bucket: &str, file: &RawFile, rows: &RecordBatch) -> Result<RecordBatch> {
    let spec = file.table;
    let keys = ints(rows, spec.primary_key);
    if keys.null_count() > 0 {
        return Err(file.invalid(
            raw_bucket,
            format!(
                "{} NULL value(s) in primary key {}: a dimension row needs its key",
                keys.null_count(),
                spec.primary_key
            ),
        ));
    }
    latest_per_key(spec, &[rows])
}

/// The snapshot of `table` re-derived from the raw zone: every data file of the table, oldest
/// first, merged as transform merges each run's file into the snapshot. Memory holds one file
/// and the result (one row per entity). Also the raw files read.
pub async fn rebuild(raw: &S3Store, table: &'static TableSpec) -> Result<(RecordBatch, usize)> {
    let keys = raw.data_files(table.name, None).await?;
    let mut merged = RecordBatch::new_empty(relaxed_schema(table));
    for (window_end, key) in &keys {
        let file = RawFile::new(table, key.clone(), *window_end)?;
        let rows = crate::raw::open(raw, &file)
            .await?
            .read_all(raw.bucket())
            .await?;
        let latest = latest_rows(raw.bucket(), &file, &rows)?;
        merged = latest_per_key(table, &[&merged, &latest])?;
    }
    Ok((merged, keys.len()))
}

/// Writes `batch` as the table's snapshot, over the version `read` (`None`: only if there is
/// none); false when the object changed since.
pub async fn replace(
    store: &S3Store,
    table: &'static TableSpec,
    batch: &RecordBatch,
    read: Option<&str>,
) -> Result<bool> {
    let body = parquet_bytes(batch, [])?;
    Ok(store
        .put_if(&snapshot_key(table.name), body, PARQUET_CONTENT_TYPE, read)
        .await?)
}

/// The latest version of each row across `batches` (all in `table`'s relaxed schema), sorted
/// by primary key. A later `last_updated` wins; on a tie the earlier batch's row stays, so
/// merging the same rows twice changes nothing. Every primary key must be non-NULL.
pub fn latest_per_key(table: &TableSpec, batches: &[&RecordBatch]) -> Result<RecordBatch> {
    let mut best: HashMap<i32, (usize, usize, i64)> = HashMap::new();
    for (b, batch) in batches.iter().enumerate() {
        let ids = ints(batch, table.primary_key);
        let updated = timestamps(batch, LAST_UPDATED);
        for row in 0..batch.num_rows() {
            let id = ids.value(row);
            let at = opt(updated, row).unwrap_or(i64::MIN);
            match best.entry(id) {
                Entry::Occupied(e) if e.get().2 >= at => {}
                Entry::Occupied(mut e) => *e.get_mut() = (b, row, at),
                Entry::Vacant(e) => {
                    e.insert((b, row, at));
                }
            }
        }
    }
    let mut winners: Vec<(i32, usize, usize)> =
        best.into_iter().map(|(id, (b, r, _))| (id, b, r)).collect();
    winners.sort_unstable_by_key(|w| w.0);
    let indices: Vec<(usize, usize)> = winners.iter().map(|&(_, b, r)| (b, r)).collect();
    if indices.is_empty() {
        return Ok(RecordBatch::new_empty(relaxed_schema(table)));
    }
    Ok(interleave_record_batch(batches, &indices).map_err(utils::Error::from)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, StringArray, TimestampMillisecondArray};
    use std::sync::Arc;
    use utils::tables::table;

    fn departments(rows: &[(i32, &str, i64)]) -> RecordBatch {
        let spec = table("department").unwrap();
        let n = rows.len();
        RecordBatch::try_new(
            relaxed_schema(spec),
            vec![
                Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from(vec![Some("Leeds"); n])),
                Arc::new(StringArray::from(vec![None::<&str>; n])),
                Arc::new(TimestampMillisecondArray::from(vec![0; n])),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.2),
                )),
            ],
        )
        .unwrap()
    }

    fn names(batch: &RecordBatch) -> Vec<(i32, String)> {
        let ids = ints(batch, "department_id");
        let names = crate::raw::texts(batch, "department_name");
        (0..batch.num_rows())
            .map(|r| (ids.value(r), names.value(r).to_owned()))
            .collect()
    }

    #[test]
    fn later_versions_win_and_rows_come_out_by_key() {
        let spec = table("department").unwrap();
        let old = departments(&[(2, "Sales", 10), (1, "Finance", 10)]);
        let new = departments(&[(2, "Sales & Marketing", 20), (3, "Dispatch", 20)]);
        let merged = latest_per_key(spec, &[&old, &new]).unwrap();
        assert_eq!(
            names(&merged),
            [
                (1, "Finance".to_owned()),
                (2, "Sales & Marketing".to_owned()),
                (3, "Dispatch".to_owned())
            ]
        );
    }

    #[test]
    fn an_older_version_arriving_late_does_not_win() {
        let spec = table("department").unwrap();
        let current = departments(&[(2, "Sales & Marketing", 20)]);
        let late = departments(&[(2, "Sales", 10)]);
        let merged = latest_per_key(spec, &[&current, &late]).unwrap();
        assert_eq!(names(&merged), [(2, "Sales & Marketing".to_owned())]);
    }

    #[test]
    fn merging_the_same_rows_again_changes_nothing() {
        let spec = table("department").unwrap();
        let rows = departments(&[(1, "Finance", 10), (2, "Sales", 10)]);
        let once = latest_per_key(spec, &[&rows]).unwrap();
        let twice = latest_per_key(spec, &[&once, &rows]).unwrap();
        assert_eq!(once, twice);
    }
}
