//! Materialized views kept fresh: after the files of an invocation are committed, every
//! materialized view that depends (through views and other materialized views, at any depth)
//! on a table the load changed is refreshed, in dependency order. The views are found in
//! PostgreSQL's catalog, so a view a user adds is refreshed as well as the project's own
//! (`sql/warehouse_views.sql`).
//!
//! Only the views the load's role may refresh: those it owns (is a member of the owner of) or,
//! on PostgreSQL 17 and later, holds `MAINTAIN` on. A view an analyst creates and owns is
//! theirs to refresh; the load leaves it alone (and says so in its log).
//!
//! What is still to refresh is recorded in the warehouse, in the same transaction as the rows
//! that make it so: a file that changed rows adds a row naming its table to
//! [`PENDING`]. A refresh reads the pending rows, refreshes the views depending on their
//! tables, and deletes the rows it read, so nothing is refreshed when nothing changed. A view
//! whose refresh fails (its query fails on the new data, a lock wait outlasts `lock_timeout`)
//! does not fail the load, whose files are committed: it is reported in the output
//! (`failed_views`), logged and counted (`ViewRefreshFailures`), and stays pending itself (a
//! row naming the view, which stands for it and the views over it) so that the next load
//! tries again. The deadline is checked between views: the views left when it comes stay
//! pending the same way, and the invocation leaves them to one more (its `remaining` is a
//! list of no files), as one that finishes its files within the deadline margin leaves the
//! whole refresh; the next has the whole timeout for it.
//!
//! The rows are only ever inserted by loads and deleted by id, so loads never wait on them: a
//! file committed while a refresh runs leaves a row the refresh did not read, for the next
//! one. A refresh reads its tables as any query does, and the loads take no lock a reader
//! waits for (see [`crate::bulk`]).

use std::collections::BTreeSet;
use std::time::Instant;

use serde::Serialize;
use tokio_postgres::{Client, GenericClient};
use tracing::{info, warn};
use utils::deadline::Deadline;

use crate::error::Result;

/// Tables changed by committed files whose dependent views are not refreshed yet.
pub const PENDING: &str = "totesys_refresh_pending";

pub(crate) const CREATE_PENDING: &str = "
CREATE TABLE IF NOT EXISTS totesys_refresh_pending (
    id         bigserial PRIMARY KEY,
    table_name text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
)";

/// Every materialized view depending on one of the tables `$1` (of the current schema), or
/// named in it (as `regclass` text) with those depending on it, dependencies before their
/// dependents: the walk follows each view's rewrite rule to the
/// relations it reads, so a view over a view over a table counts. `concurrent` says whether
/// `REFRESH ... CONCURRENTLY` may be used: the view is populated and has a valid unique index
/// on plain columns over all its rows; `ours`, whether the role may refresh it (owner, or
/// `MAINTAIN` from PostgreSQL 17, which names the privilege).
const DEPENDENTS: &str = "
WITH RECURSIVE walk(oid, depth) AS (
    SELECT c.oid, 0 FROM pg_class c
    WHERE (c.relnamespace = current_schema()::regnamespace AND c.relname = ANY($1))
       OR (c.relkind = 'm' AND c.oid::regclass::text = ANY($1))
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
       CASE WHEN current_setting('server_version_num')::int >= 170000
            THEN has_table_privilege(v.oid, 'MAINTAIN')
            ELSE pg_has_role(v.relowner, 'USAGE') END,
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

/// A view whose refresh failed, as the load's output reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failed {
    pub view: String,
    /// PostgreSQL's message, with its SQLSTATE.
    pub error: String,
}

/// What a refresh did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Refresh {
    pub refreshed: Vec<Refreshed>,
    pub failed: Vec<Failed>,
    /// The deadline came between views: the rest is left pending for the next invocation.
    pub cut: bool,
}

/// One materialized view depending on changed tables.
#[derive(Debug, Clone, PartialEq)]
pub struct Dependent {
    pub view: String,
    pub concurrently: bool,
    /// The load's role may refresh it.
    pub ours: bool,
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

/// The materialized views depending on `tables`, dependencies first.
pub async fn dependents(client: &impl GenericClient, tables: &[String]) -> Result<Vec<Dependent>> {
    Ok(client
        .query(DEPENDENTS, &[&tables])
        .await?
        .iter()
        .map(|r| Dependent {
            view: r.get(0),
            concurrently: r.get(1),
            ours: r.get(2),
        })
        .collect())
}

/// Refreshes the views the role may refresh that depend on the tables (or views) pending since
/// the last refresh, until `deadline` (checked between views). Each refresh commits on its
/// own; then the pending rows read are replaced by one row per view that failed or was left at
/// the deadline.
pub async fn refresh_pending(client: &mut Client, deadline: Deadline) -> Result<Refresh> {
    let pending = client
        .query(&format!("SELECT id, table_name FROM {PENDING}"), &[])
        .await?;
    let mut out = Refresh::default();
    if pending.is_empty() {
        return Ok(out);
    }
    let ids: Vec<i64> = pending.iter().map(|r| r.get(0)).collect();
    let mut tables: Vec<String> = pending.iter().map(|r| r.get(1)).collect();
    tables.sort();
    tables.dedup();
    let mut undone = BTreeSet::new();
    let mut attempted = 0;
    for d in dependents(client, &tables).await? {
        if !d.ours {
            info!(
                view = d.view.as_str(),
                "materialized view not refreshed: the load's role neither owns it nor holds \
                 MAINTAIN on it"
            );
            continue;
        }
        if out.cut || (attempted > 0 && deadline.reached()) {
            out.cut = true;
            undone.insert(d.view);
            continue;
        }
        attempted += 1;
        if !d.concurrently {
            warn!(
                view = d.view.as_str(),
                "materialized view without a unique index on plain columns (or not populated \
                 yet): refreshed without CONCURRENTLY, so its readers wait meanwhile"
            );
        }
        let started = Instant::now();
        let sql = format!(
            "REFRESH MATERIALIZED VIEW {}{}",
            if d.concurrently { "CONCURRENTLY " } else { "" },
            d.view
        );
        if let Err(e) = client.batch_execute(&sql).await {
            if e.is_closed() {
                return Err(e.into());
            }
            let error = utils::error::describe_db_error(&e);
            warn!(
                view = d.view.as_str(),
                error = error.as_str(),
                "materialized view refresh failed: the loaded files are committed, the view \
                 stays pending for the next load"
            );
            utils::metrics::emit(
                crate::STAGE,
                None,
                &[(utils::metrics::VIEW_REFRESH_FAILURES, 1.0)],
            );
            undone.insert(d.view.clone());
            out.failed.push(Failed {
                view: d.view,
                error,
            });
            continue;
        }
        let seconds = started.elapsed().as_secs_f64();
        info!(
            view = d.view.as_str(),
            concurrently = d.concurrently,
            seconds,
            "materialized view refreshed"
        );
        out.refreshed.push(Refreshed {
            view: d.view,
            concurrently: d.concurrently,
            seconds,
        });
    }
    // The rows read are done with; the views left undone stay pending by name, in the same
    // transaction.
    let undone: Vec<String> = undone.into_iter().collect();
    let tx = client.transaction().await?;
    tx.execute(
        &format!("DELETE FROM {PENDING} WHERE id = ANY($1)"),
        &[&ids],
    )
    .await?;
    tx.execute(
        &format!("INSERT INTO {PENDING} (table_name) SELECT unnest($1::text[])"),
        &[&undone],
    )
    .await?;
    tx.commit().await?;
    Ok(out)
}
