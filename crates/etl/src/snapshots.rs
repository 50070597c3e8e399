//! `etl rebuild-snapshots`: re-derives transform's current-state snapshots
//! (`_state/transform/<table>.parquet`, the latest version of each row of the tables that
//! dimensions join) from the raw zone, merging every raw file of the table oldest first as
//! transform merges each run's file. A lost or damaged snapshot has this remedy; an existing
//! one is compared row by row with what the raw zone gives, and replaced only when it is
//! missing, or when asked to (`--force`) after the differences are shown.

use std::collections::HashMap;

use arrow::array::{Array, RecordBatch};
use serde::Serialize;
use transform::raw::{ints, opt, timestamps};
use transform::route::Joined;
use transform::snapshot;
use utils::tables::{LAST_UPDATED, TableSpec, table};

use crate::text::table as text_table;
use crate::{Context, Error, Pipeline, Result};

/// How the rebuilt snapshot compares with the one in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Comparison {
    /// There was no snapshot.
    Missing,
    /// Row for row the same.
    Equal,
    /// The raw zone holds newer versions (or new rows) than the snapshot: raw files transform
    /// has not merged yet. Nothing in the snapshot is unexplained.
    Behind { newer_in_raw: usize },
    /// The snapshot holds rows or versions the raw zone does not give.
    Differs {
        newer_in_raw: usize,
        not_in_raw: usize,
        newer_in_snapshot: usize,
        same_version_other_values: usize,
    },
}

/// One table's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Rebuilt {
    pub table: &'static str,
    pub raw_files: usize,
    pub rows: usize,
    pub comparison: Comparison,
    /// Whether the rebuilt snapshot was written.
    pub written: bool,
}

/// The tables transform keeps snapshots of.
pub fn snapshot_tables() -> Vec<&'static TableSpec> {
    Joined::ALL
        .iter()
        .map(|j| table(j.source()).expect("a registry table"))
        .collect()
}

/// Rebuilds the snapshots of `tables` (each one transform keeps); writes each that is missing,
/// and with `force` each that differs, unless `dry_run`. Writing, it holds the pipeline's lock.
pub async fn rebuild(
    pipeline: &Pipeline,
    tables: &[&'static TableSpec],
    force: bool,
    dry_run: bool,
) -> Result<Vec<Rebuilt>> {
    if dry_run {
        return rebuild_unlocked(pipeline, tables, force, true).await;
    }
    pipeline
        .locked(
            "rebuild-snapshots",
            rebuild_unlocked(pipeline, tables, force, false),
        )
        .await
}

async fn rebuild_unlocked(
    pipeline: &Pipeline,
    tables: &[&'static TableSpec],
    force: bool,
    dry_run: bool,
) -> Result<Vec<Rebuilt>> {
    let known = snapshot_tables();
    let mut out = Vec::new();
    for spec in tables {
        if !known.contains(spec) {
            let names: Vec<&str> = known.iter().map(|t| t.name).collect();
            return Err(Error::Usage(format!(
                "transform keeps no snapshot of {}: only of {}",
                spec.name,
                names.join(", ")
            )));
        }
        let what = || format!("rebuilding the snapshot of {}", spec.name);
        // The snapshot first: a transform that merges a raw file listed after this read
        // changes its ETag, and the conditional write below then refuses to drop that file's
        // rows.
        let current = snapshot::load(&pipeline.processed, spec)
            .await
            .doing(what)?;
        let (rebuilt, raw_files) = snapshot::rebuild(&pipeline.raw, spec).await.doing(what)?;
        let comparison = match &current.etag {
            None => Comparison::Missing,
            Some(_) => compare(spec, &current.batch, &rebuilt),
        };
        let write = !dry_run
            && (comparison == Comparison::Missing || (force && comparison != Comparison::Equal));
        if write {
            let replaced =
                snapshot::replace(&pipeline.processed, spec, &rebuilt, current.etag.as_deref())
                    .await
                    .doing(what)?;
            if !replaced {
                return Err(Error::Usage(format!(
                    "the snapshot of {} changed while it was rebuilt (a transform ran): nothing \
                     was written for it; run the command again",
                    spec.name
                )));
            }
        }
        out.push(Rebuilt {
            table: spec.name,
            raw_files,
            rows: rebuilt.num_rows(),
            comparison,
            written: write,
        });
    }
    Ok(out)
}

/// Compares two snapshots of `spec` key by key.
pub fn compare(spec: &TableSpec, snapshot: &RecordBatch, rebuilt: &RecordBatch) -> Comparison {
    if snapshot == rebuilt {
        return Comparison::Equal;
    }
    let index = |batch: &RecordBatch| -> HashMap<i32, (usize, i64)> {
        let ids = ints(batch, spec.primary_key);
        let updated = timestamps(batch, LAST_UPDATED);
        (0..batch.num_rows())
            .filter(|&r| !ids.is_null(r))
            .map(|r| (ids.value(r), (r, opt(updated, r).unwrap_or(i64::MIN))))
            .collect()
    };
    let (old, new) = (index(snapshot), index(rebuilt));
    let (mut newer_in_raw, mut not_in_raw, mut newer_in_snapshot, mut other_values) = (0, 0, 0, 0);
    for (id, &(row, at)) in &old {
        match new.get(id) {
            None => not_in_raw += 1,
            Some(&(_, raw_at)) if raw_at > at => newer_in_raw += 1,
            Some(&(_, raw_at)) if raw_at < at => newer_in_snapshot += 1,
            Some(&(raw_row, _)) => {
                if snapshot.slice(row, 1) != rebuilt.slice(raw_row, 1) {
                    other_values += 1;
                }
            }
        }
    }
    newer_in_raw += new.keys().filter(|id| !old.contains_key(id)).count();
    if not_in_raw + newer_in_snapshot + other_values == 0 {
        Comparison::Behind { newer_in_raw }
    } else {
        Comparison::Differs {
            newer_in_raw,
            not_in_raw,
            newer_in_snapshot,
            same_version_other_values: other_values,
        }
    }
}

pub fn render(rebuilt: &[Rebuilt]) -> String {
    let rows: Vec<Vec<String>> = rebuilt
        .iter()
        .map(|r| {
            let comparison = match &r.comparison {
                Comparison::Missing => "no snapshot before".to_owned(),
                Comparison::Equal => "equal to the snapshot".to_owned(),
                Comparison::Behind { newer_in_raw } => format!(
                    "the snapshot is behind the raw zone: {newer_in_raw} row(s) newer in raw \
                     files not transformed yet"
                ),
                Comparison::Differs {
                    newer_in_raw,
                    not_in_raw,
                    newer_in_snapshot,
                    same_version_other_values,
                } => format!(
                    "DIFFERS: {not_in_raw} row(s) only in the snapshot, {newer_in_snapshot} \
                     newer in the snapshot, {same_version_other_values} same version with \
                     other values, {newer_in_raw} newer in raw files"
                ),
            };
            let action = if r.written {
                "written"
            } else if r.comparison == Comparison::Equal {
                "kept"
            } else {
                "not written"
            };
            vec![
                r.table.to_owned(),
                r.raw_files.to_string(),
                r.rows.to_string(),
                comparison,
                action.to_owned(),
            ]
        })
        .collect();
    text_table(
        &["table", "raw files", "rows", "compared", "snapshot"],
        &rows,
    )
}
