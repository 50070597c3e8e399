//! The last-ingest time of each table: where its next window starts.
//!
//! After a table's data file is safely in S3, a small state object
//! (`_state/ingest/<table>.json`) records the window end. A lookup reads it (one GET) and lists
//! the table's keys that sort after the key of that window end (one LIST, one page in any
//! normal run): a data file that a crash left without its state update is found there, and
//! its window end wins. So a lookup costs two requests however long the history. With no
//! state object at all, the newest data key is found with a full, paginated listing.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::keys::parquet_key;
use crate::store::S3Store;

/// Where a table's state object lives. `_state/` cannot collide with a table's prefix.
pub fn state_key(table: &str) -> String {
    format!("_state/ingest/{table}.json")
}

/// What the state object holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestState {
    pub table: String,
    /// The end of the last window read (exclusive), as [`crate::time::format_time`] text.
    #[serde(with = "crate::time::text")]
    pub window_end: DateTime<Utc>,
    /// The data file that window wrote, if it had rows.
    pub key: Option<String>,
    pub rows: u64,
    /// False when the run that wrote this stopped short of its window end (its deadline, or a
    /// fact table held back by a dimension table's progress): the table is mid-backfill, and
    /// fact tables read in other invocations are held back to `window_end` until it catches up.
    /// States written before this field existed are caught up.
    #[serde(default = "caught_up_by_default")]
    pub caught_up: bool,
    /// Set by a replay (`etl replay`): the newest data key the table had when its watermark was
    /// moved back. The files up to it were written before the replay, so they do not move the
    /// window forward as a crash's leftover file would; kept until the window passes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_over: Option<String>,
}

impl IngestState {
    /// The key after which a data file is one this state does not account for yet.
    fn accounted_through(&self) -> String {
        let end = parquet_key(&self.table, self.window_end);
        match &self.replayed_over {
            Some(k) if *k > end => k.clone(),
            _ => end,
        }
    }
}

fn caught_up_by_default() -> bool {
    true
}

/// The table's state object, if it has one.
pub async fn read_state(store: &S3Store, table: &str) -> Result<Option<IngestState>> {
    let key = state_key(table);
    match store.get(&key).await? {
        Some(bytes) => {
            let state: IngestState =
                serde_json::from_slice(&bytes).map_err(|e| store.corrupt(&key, e))?;
            if state.table != table {
                return Err(store.corrupt(&key, format!("it names table {:?}", state.table)));
            }
            Ok(Some(state))
        }
        None => Ok(None),
    }
}

/// The time the table's next window starts at, or `None` if it was never ingested.
pub async fn last_ingest_time(store: &S3Store, table: &str) -> Result<Option<DateTime<Utc>>> {
    let state = read_state(store, table).await?;
    let recorded = state.as_ref().map(|s| s.window_end);
    let after = state.as_ref().map(IngestState::accounted_through);
    let newest_file = store
        .data_files(table, after.as_deref())
        .await?
        .pop()
        .map(|(t, _)| t);
    Ok(recorded.max(newest_file))
}

/// Records that `table` has been read up to `window_end`. Call only after the window's data
/// file (if any) is complete in S3. The state only moves forward: it is written over the
/// version read (a conditional PutObject), and not at all when another run, meeting this one,
/// already recorded a later end; so it never goes back to make a later run read a window again.
pub async fn record_ingest(
    store: &S3Store,
    table: &str,
    window_end: DateTime<Utc>,
    key: Option<&str>,
    rows: u64,
    caught_up: bool,
) -> Result<()> {
    let mut state = IngestState {
        table: table.to_owned(),
        window_end,
        key: key.map(str::to_owned),
        rows,
        caught_up,
        replayed_over: None,
    };
    let state_key = state_key(table);
    for _ in 0..RECORD_ATTEMPTS {
        let current = store.get_version(&state_key).await?;
        if let Some((bytes, _)) = &current {
            let recorded: IngestState =
                serde_json::from_slice(bytes).map_err(|e| store.corrupt(&state_key, e))?;
            if recorded.window_end >= window_end {
                return Ok(());
            }
            // A replay in progress: the files it passes over still do not count.
            state.replayed_over = recorded
                .replayed_over
                .filter(|k| *k > parquet_key(table, window_end));
        }
        let body = Bytes::from(serde_json::to_vec(&state).expect("state serializes"));
        let read = current.as_ref().map(|(_, etag)| etag.as_str());
        if store
            .put_if(&state_key, body.clone(), "application/json", read)
            .await?
        {
            return Ok(());
        }
    }
    Err(Error::Storage {
        operation: "PutObject",
        bucket: store.bucket().to_owned(),
        key: state_key,
        message: format!(
            "the watermark changed {RECORD_ATTEMPTS} times while this run recorded its own"
        ),
        transient: true,
    })
}

/// What [`replay`] did to a table's watermark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replayed {
    pub table: String,
    /// The state before, which the bucket's versioning keeps.
    pub before: IngestState,
    /// The state written (or, for a dry run, that would be).
    pub after: IngestState,
    /// The data files after the new window start: written before the replay, read again by it.
    pub files_passed_over: usize,
}

/// Moves `table`'s watermark back to `since`, so that its next run reads from there again:
/// writes a state object whose window ends at `since` and that records the newest data key
/// (`replayed_over`), over the version read (a conditional PutObject: a run recording its
/// watermark meanwhile makes this fail rather than be overwritten). With `dry_run`, only says
/// what it would write. `None` when the table was never ingested (its next run reads it all
/// anyway) or its watermark is at or before `since` already.
pub async fn replay(
    store: &S3Store,
    table: &str,
    since: DateTime<Utc>,
    dry_run: bool,
) -> Result<Option<Replayed>> {
    let key = state_key(table);
    let Some((bytes, etag)) = store.get_version(&key).await? else {
        return Ok(None);
    };
    let before: IngestState = serde_json::from_slice(&bytes).map_err(|e| store.corrupt(&key, e))?;
    if before.window_end <= since {
        return Ok(None);
    }
    let passed_over = store
        .data_files(table, Some(&parquet_key(table, since)))
        .await?;
    let after = IngestState {
        table: table.to_owned(),
        window_end: since,
        key: None,
        rows: 0,
        caught_up: true,
        replayed_over: passed_over
            .last()
            .map(|(_, k)| k.clone())
            .or(before.replayed_over.clone()),
    };
    if !dry_run {
        let body = Bytes::from(serde_json::to_vec(&after).expect("state serializes"));
        if !store
            .put_if(&key, body, "application/json", Some(&etag))
            .await?
        {
            return Err(Error::Storage {
                operation: "PutObject",
                bucket: store.bucket().to_owned(),
                key,
                message: "the watermark changed while the replay read it (a run in progress?): \
                          nothing was written; try again between runs"
                    .into(),
                transient: true,
            });
        }
    }
    Ok(Some(Replayed {
        table: table.to_owned(),
        before,
        after,
        files_passed_over: passed_over.len(),
    }))
}

/// How often a run that lost the race to record its watermark reads it again. Every lost race
/// is another run's win, so n runs meeting need at most n attempts.
const RECORD_ATTEMPTS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::table_prefix;

    #[test]
    fn state_key_is_outside_every_table_prefix() {
        assert_eq!(state_key("sales_order"), "_state/ingest/sales_order.json");
        for t in crate::tables::TABLES {
            assert!(!state_key(t.name).starts_with(&table_prefix(t.name)));
        }
    }

    #[test]
    fn state_serializes_to_stable_json() {
        let s = IngestState {
            table: "staff".into(),
            window_end: crate::time::parse_time("2024-11-14T09:30:05.123456Z").unwrap(),
            key: Some("staff/2024/11/14/093005123456.parquet".into()),
            rows: 3,
            caught_up: false,
            replayed_over: None,
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"table":"staff","window_end":"2024-11-14T09:30:05.123456Z","key":"staff/2024/11/14/093005123456.parquet","rows":3,"caught_up":false}"#
        );
        // A state written before the field existed is caught up.
        let old =
            r#"{"table":"staff","window_end":"2024-11-14T09:30:05.123456Z","key":null,"rows":0}"#;
        assert!(serde_json::from_str::<IngestState>(old).unwrap().caught_up);
        let text = r#"{"table":"staff","window_end":"yesterday","key":null,"rows":0}"#;
        let e = serde_json::from_str::<IngestState>(text).unwrap_err();
        assert!(e.to_string().contains("\"yesterday\""), "{e}");
    }
}
