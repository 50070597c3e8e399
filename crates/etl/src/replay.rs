//! `etl replay`: moves tables' watermarks back, so that the next run reads from a past time
//! again (after fixing a transform bug, say), and transform's cursor with them, so that the
//! files that run writes are transformed whatever their keys. The raw files written since stay (the bucket
//! keeps versions); the state object records the newest of them, so that they do not move the
//! window forward again (`utils::watermark::replay`). The warehouse gains nothing twice:
//! dimensions are upserted only where different, fact versions are unique.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;
use utils::tables::{TableSpec, quote_ident};
use utils::watermark::Replayed;

use crate::text::{or_dash, table};
use crate::{Context, Pipeline, Result};

/// What a replay will do (or did) to one table.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub table: &'static str,
    /// `None`: nothing to move (never ingested, or already at or before the time).
    pub replay: Option<Replayed>,
    /// Source rows the next run reads again (`last_updated` at or after the time), when the
    /// source was reached.
    pub rows_to_read: Option<i64>,
}

/// The plans for `tables`, or (with `dry_run` false) the watermarks moved, holding the
/// pipeline's lock.
pub async fn replay(
    pipeline: &Pipeline,
    tables: &[&'static TableSpec],
    since: DateTime<Utc>,
    dry_run: bool,
) -> Result<Vec<Plan>> {
    if dry_run {
        return plan_or_move(pipeline, tables, since, true).await;
    }
    pipeline
        .locked("replay", plan_or_move(pipeline, tables, since, false))
        .await
}

async fn plan_or_move(
    pipeline: &Pipeline,
    tables: &[&'static TableSpec],
    since: DateTime<Utc>,
    dry_run: bool,
) -> Result<Vec<Plan>> {
    let source = pipeline.source().await.ok();
    let mut plans = Vec::new();
    for spec in tables {
        let replay = utils::watermark::replay(&pipeline.raw, spec.name, since, dry_run)
            .await
            .doing(|| {
                format!(
                    "{} the watermark of {}",
                    if dry_run { "reading" } else { "moving back" },
                    spec.name
                )
            })?;
        if let (Some(_), false) = (&replay, dry_run) {
            // The files the next run writes may sort before those transformed already.
            let from = utils::keys::parquet_key(spec.name, since);
            utils::cursor::rewind_transform_cursor(&pipeline.processed, spec.name, &from)
                .await
                .doing(|| format!("moving back transform's cursor for {}", spec.name))?;
        }
        let rows_to_read = match (&source, &replay) {
            (Some(client), Some(_)) => Some(count_since(client, spec, since).await?),
            _ => None,
        };
        plans.push(Plan {
            table: spec.name,
            replay,
            rows_to_read,
        });
    }
    Ok(plans)
}

async fn count_since(client: &Client, spec: &TableSpec, since: DateTime<Utc>) -> Result<i64> {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*) FROM {} WHERE last_updated >= $1",
                quote_ident(spec.name)
            ),
            &[&since.naive_utc()],
        )
        .await
        .map_err(utils::Error::from)
        .doing(|| {
            format!(
                "counting the rows of source table {} to read again",
                spec.name
            )
        })?;
    Ok(row.get(0))
}

/// The plans for people.
pub fn render(plans: &[Plan], since: DateTime<Utc>, done: bool) -> String {
    let rows: Vec<Vec<String>> = plans
        .iter()
        .map(|p| match &p.replay {
            None => vec![
                p.table.to_owned(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "nothing to do: never ingested, or already at or before that time".into(),
            ],
            Some(r) => vec![
                p.table.to_owned(),
                utils::time::format_time(r.before.window_end),
                utils::time::format_time(r.after.window_end),
                r.files_passed_over.to_string(),
                or_dash(p.rows_to_read),
                if done { "moved back" } else { "to move back" }.into(),
            ],
        })
        .collect();
    let mut out = table(
        &[
            "table",
            "watermark now",
            "moves to",
            "raw files since",
            "rows to read again",
            "",
        ],
        &rows,
    );
    let moving = plans.iter().filter(|p| p.replay.is_some()).count();
    out += &if done {
        format!(
            "\n{moving} watermark(s) moved back to {}: the next run reads from there (the \
             earlier states are kept as object versions).\n",
            utils::time::format_time(since)
        )
    } else {
        format!(
            "\nThe next run would read each table above from {} to its window end again; \
             nothing is written by a dry run.\n",
            utils::time::format_time(since)
        )
    };
    out
}
