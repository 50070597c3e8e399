//! Each stage's own place in the zone before it, so that no stage depends on the message the
//! stage before it sent (a lost, repeated or merged result loses or doubles nothing).
//!
//! - Transform keeps, per source table, the newest raw key through which every raw data file
//!   of the table is transformed (`_state/transform/cursor.json` in the processed bucket). An
//!   invocation takes every raw file after it, whatever its event says.
//! - Load takes the processed files transform queued for it: for each data file it writes,
//!   transform puts an empty marker `_state/pending/<processed key>` before it moves its cursor,
//!   and load deletes the marker once the file is in the ledger. The ledger stays the record of
//!   exactly once; the markers only say where to look.
//! - Datasets' raw files (see the ingest crate's `dataset` module) are queued for transform
//!   the same way: ingest puts `_state/datasets/pending/<raw key>` in the ingest bucket for
//!   each file before it records the landed file as ingested, and transform deletes the
//!   marker once the file is published and queued for the load. A landed file arriving late
//!   gets raw keys older than others already transformed, so a cursor by key would pass it by.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::S3Store;

/// Where transform's cursor lives in the processed bucket.
pub const TRANSFORM_CURSOR_KEY: &str = "_state/transform/cursor.json";

/// Under which prefix of the processed bucket the load's queue lives.
pub const PENDING_PREFIX: &str = "_state/pending/";

/// Transform's cursor: per source table, the raw key through which every data file of the
/// table is transformed. A table that is not named has had none transformed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransformCursor {
    pub through: BTreeMap<String, String>,
}

impl TransformCursor {
    /// The raw key through which `table`'s files are transformed.
    pub fn through(&self, table: &str) -> Option<&str> {
        self.through.get(table).map(String::as_str)
    }

    /// Whether `key`, a raw data key of `table`, is transformed.
    pub fn covers(&self, table: &str, key: &str) -> bool {
        self.through(table).is_some_and(|through| key <= through)
    }
}

/// Transform's cursor with the ETag of the version read, or the empty cursor.
pub async fn read_transform_cursor(store: &S3Store) -> Result<(TransformCursor, Option<String>)> {
    match store.get_version(TRANSFORM_CURSOR_KEY).await? {
        Some((bytes, etag)) => {
            let cursor = serde_json::from_slice(&bytes)
                .map_err(|e| store.corrupt(TRANSFORM_CURSOR_KEY, e))?;
            Ok((cursor, Some(etag)))
        }
        None => Ok((TransformCursor::default(), None)),
    }
}

/// Moves transform's cursor forward to `through` (per table; a table's cursor never moves
/// back here, so two transforms meeting keep the further of the two), over the version read.
pub async fn advance_transform_cursor(
    store: &S3Store,
    through: &BTreeMap<String, String>,
) -> Result<()> {
    update_transform_cursor(store, |cursor| {
        let mut changed = false;
        for (table, key) in through {
            if !cursor.covers(table, key) {
                cursor.through.insert(table.clone(), key.clone());
                changed = true;
            }
        }
        changed
    })
    .await
}

/// Moves `table`'s place in transform's cursor back to `key` if it is past it: a replay makes
/// transform take the raw files after `key` again.
pub async fn rewind_transform_cursor(store: &S3Store, table: &str, key: &str) -> Result<()> {
    update_transform_cursor(store, |cursor| {
        let past = cursor.through(table).is_some_and(|through| through > key);
        if past {
            cursor.through.insert(table.to_owned(), key.to_owned());
        }
        past
    })
    .await
}

/// Reads the cursor, lets `change` change it (true when it did), and writes it over the
/// version read; read again when another writer got there first.
async fn update_transform_cursor(
    store: &S3Store,
    mut change: impl FnMut(&mut TransformCursor) -> bool,
) -> Result<()> {
    for _ in 0..CURSOR_ATTEMPTS {
        let (mut cursor, etag) = read_transform_cursor(store).await?;
        if !change(&mut cursor) {
            return Ok(());
        }
        let body = Bytes::from(serde_json::to_vec(&cursor).expect("cursor serializes"));
        if store
            .put_if(
                TRANSFORM_CURSOR_KEY,
                body,
                "application/json",
                etag.as_deref(),
            )
            .await?
        {
            return Ok(());
        }
    }
    Err(Error::Storage {
        operation: "PutObject",
        bucket: store.bucket().to_owned(),
        key: TRANSFORM_CURSOR_KEY.to_owned(),
        message: format!(
            "the cursor changed {CURSOR_ATTEMPTS} times while this invocation recorded its own"
        ),
        transient: true,
    })
}

/// How often an update that lost the race to write the cursor reads it again.
const CURSOR_ATTEMPTS: usize = 16;

/// The marker that queues the processed file `key` for the load.
pub fn pending_key(key: &str) -> String {
    format!("{PENDING_PREFIX}{key}")
}

/// Queues the processed file `key` for the load.
pub async fn mark_pending(store: &S3Store, key: &str) -> Result<()> {
    store
        .put(&pending_key(key), Bytes::new(), "application/octet-stream")
        .await
}

/// Takes the processed file `key` off the load's queue.
pub async fn clear_pending(store: &S3Store, key: &str) -> Result<()> {
    store.delete(&pending_key(key)).await
}

/// The processed files queued for the load, in key order.
pub async fn pending(store: &S3Store) -> Result<Vec<String>> {
    Ok(store
        .list_keys(PENDING_PREFIX, None)
        .await?
        .into_iter()
        .filter_map(|k| k.strip_prefix(PENDING_PREFIX).map(str::to_owned))
        .collect())
}

/// Under which prefix of the ingest bucket transform's queue of dataset files lives.
pub const DATASET_PENDING_PREFIX: &str = "_state/datasets/pending/";

/// Queues the raw dataset file `key` for transform.
pub async fn mark_dataset_pending(store: &S3Store, key: &str) -> Result<()> {
    store
        .put(
            &format!("{DATASET_PENDING_PREFIX}{key}"),
            Bytes::new(),
            "application/octet-stream",
        )
        .await
}

/// Takes the raw dataset file `key` off transform's queue.
pub async fn clear_dataset_pending(store: &S3Store, key: &str) -> Result<()> {
    store
        .delete(&format!("{DATASET_PENDING_PREFIX}{key}"))
        .await
}

/// The raw dataset files queued for transform, in key order.
pub async fn dataset_pending(store: &S3Store) -> Result<Vec<String>> {
    Ok(store
        .list_keys(DATASET_PENDING_PREFIX, None)
        .await?
        .into_iter()
        .filter_map(|k| k.strip_prefix(DATASET_PENDING_PREFIX).map(str::to_owned))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::table_prefix;

    #[test]
    fn cursor_covers_keys_up_to_its_own() {
        let mut cursor = TransformCursor::default();
        assert!(!cursor.covers("staff", "staff/2024/11/14/093005123456.parquet"));
        cursor.through.insert(
            "staff".into(),
            "staff/2024/11/14/093005123456.parquet".into(),
        );
        assert!(cursor.covers("staff", "staff/2024/11/14/093005123456.parquet"));
        assert!(cursor.covers("staff", "staff/2024/11/14/093005123455.parquet"));
        assert!(!cursor.covers("staff", "staff/2024/11/14/093005123457.parquet"));
        assert!(!cursor.covers("department", "department/2024/11/14/0.parquet"));
        assert_eq!(
            serde_json::to_string(&cursor).unwrap(),
            r#"{"through":{"staff":"staff/2024/11/14/093005123456.parquet"}}"#
        );
    }

    #[test]
    fn state_keys_are_outside_every_table_prefix() {
        for t in crate::warehouse::WAREHOUSE_TABLES {
            assert!(!pending_key("x").starts_with(&table_prefix(t.name)));
            assert!(!TRANSFORM_CURSOR_KEY.starts_with(&table_prefix(t.name)));
        }
        assert_eq!(
            pending_key("dim_date/2024/11/14/093005123456-payment.parquet"),
            "_state/pending/dim_date/2024/11/14/093005123456-payment.parquet"
        );
    }
}
