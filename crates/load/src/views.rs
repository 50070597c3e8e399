//! Materialized views kept fresh: after the files of an invocation are committed, every
//! materialized view that depends (through views and other materialized views, at any depth)
//! on a table the load changed is refreshed, in dependency order. The views are found in
//! PostgreSQL's catalog, so a view a user adds is refreshed as well as the project's own
//! (`sql/warehouse_views.sql`).
//!
//! What is still to refresh is recorded in the warehouse, in the same transaction as the rows
//! that make it so: a file that changed rows adds a row naming its table to
//! [`PENDING`]. A refresh reads the pending rows, refreshes the views depending on their
//! tables, and deletes the rows it read, so a refresh that fails is done by the next load
//! that finishes its files, and nothing is refreshed when nothing changed. An invocation that
//! finishes its files within the deadline margin leaves the refresh to one more invocation
//! (its `remaining` is a list of no files), which has the whole timeout for it.
//!
//! The rows are only ever inserted by loads and deleted by id, so loads never wait on them: a
//! file committed while a refresh runs leaves a row the refresh did not read, for the next
//! one. (A refresh reads its tables as any query does: a bulk-path file, holding its fact
//! table exclusively, and a refresh reading that table wait for each other.)

use std::time::Instant;

use serde::Serialize;
use tokio_postgres::{Client, GenericClient};
use tracing::{info, warn};

use crate::error::{Error, Result};

/// Tables changed by committed files whose dependent views are not refreshed yet.
pub const PENDING: &str = "totesys_refresh_pending";

pub(crate) const CREATE_PENDING: &str = "
CREATE TABLE IF NOT EXISTS totesys_refresh_pending (
    id         bigserial PRIMARY KEY,
    table_name text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
)";

/// Every materialized view depending on one of the tables `$1` (of the current schema),
/// dependencies before their dependents: the walk follows each view's rewrite rule to the
/// relations it reads, so a view over a view over a table counts. `concurrent` says whether
/// `REFRESH ... CONCURRENTLY` may be used: the view is populated and has a valid unique index
/// on plain columns over all its rows.
const DEPENDENTS: &str = "
WITH RECURSIVE walk(oid, depth) AS (
    SELECT c.oid, 0 FROM pg_class c
    WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY($1)
  UNION ALL
    SELECT r.ev_class, w.depth + 1
    FROM walk w
    JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = w.oid
                    AND d.classid = 'pg_rewrite'::regclass
    JOIN pg_rewrite r ON r.oid = d.objid
    WHERE r.ev_class <> w.oid
)
SELECT v.oid::regclass::text,
       v.relispopulated AND EXISTS (
           SELECT 1 FROM pg_index i
           WHERE i.indrelid = v.oid AND i.indisunique AND i.indisvalid
             AND i.indpred IS NULL AND i.indexprs IS NULL),
       max(w.depth)
FROM walk w
JOIN pg_class v ON v.oid = w.oid
WHERE v.relkind = 'm'
GROUP BY v.oid
ORDER BY max(w.depth), 1";

/// One view refreshed, as the load's output reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refreshed {
    /// The view's name (schema-qualified when it is not on the search path).
    pub view: String,
    /// False when the view had no usable unique index (or no data yet) and was refreshed
    /// plainly, locking out its readers meanwhile.
    pub concurrently: bool,
    pub seconds: f64,
}

/// Records, inside a file's transaction, that `table` changed.
pub async fn mark_changed(tx: &impl GenericClient, table: &str) -> Result<()> {
    tx.execute(
        &format!("INSERT INTO {PENDING} (table_name) VALUES ($1)"),
        &[&table],
    )
    .await?;
    Ok(())
}

/// Whether changes wait for their views' refresh.
pub async fn any_pending(client: &impl GenericClient) -> Result<bool> {
    let row = client
        .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {PENDING})"), &[])
        .await?;
    Ok(row.get(0))
}

/// The materialized views depending on `tables`, dependencies first: (name, concurrently).
pub async fn dependents(
    client: &impl GenericClient,
    tables: &[String],
) -> Result<Vec<(String, bool)>> {
    Ok(client
        .query(DEPENDENTS, &[&tables])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Refreshes the views depending on the tables changed since the last refresh; what it
/// refreshed, in order. Each refresh commits on its own; the pending rows read are deleted
/// once every view is refreshed.
pub async fn refresh_pending(client: &Client) -> Result<Vec<Refreshed>> {
    let pending = client
        .query(&format!("SELECT id, table_name FROM {PENDING}"), &[])
        .await?;
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = pending.iter().map(|r| r.get(0)).collect();
    let mut tables: Vec<String> = pending.iter().map(|r| r.get(1)).collect();
    tables.sort();
    tables.dedup();
    let mut refreshed = Vec::new();
    for (view, concurrently) in dependents(client, &tables).await? {
        if !concurrently {
            warn!(
                view = view.as_str(),
                "materialized view without a unique index on plain columns (or not populated \
                 yet): refreshed without CONCURRENTLY, so its readers wait meanwhile"
            );
        }
        let started = Instant::now();
        let sql = format!(
            "REFRESH MATERIALIZED VIEW {}{view}",
            if concurrently { "CONCURRENTLY " } else { "" }
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| Error::ViewRefresh {
                view: view.clone(),
                source: e.into(),
            })?;
        let seconds = started.elapsed().as_secs_f64();
        info!(
            view = view.as_str(),
            concurrently, seconds, "materialized view refreshed"
        );
        refreshed.push(Refreshed {
            view,
            concurrently,
            seconds,
        });
    }
    client
        .execute(
            &format!("DELETE FROM {PENDING} WHERE id = ANY($1)"),
            &[&ids],
        )
        .await?;
    Ok(refreshed)
}
