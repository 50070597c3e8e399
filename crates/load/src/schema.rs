//! Checks, before anything is written, that the warehouse holds every registry table with
//! the columns, types and keys the load relies on; and creates the load's own tables (the
//! ledger, the views' pending refreshes) when they are missing. The star schema itself is
//! never created here; the one change made to it is [`MIGRATION`], on a warehouse created
//! before the dimensions had versions.

use std::collections::{BTreeSet, HashMap};

use tokio_postgres::Client;
use utils::warehouse::WAREHOUSE_TABLES;

use crate::error::{Error, Result};

pub use utils::warehouse::LEDGER;

const CREATE_LEDGER: &str = "
CREATE TABLE IF NOT EXISTS totesys_load_ledger (
    file_key   text NOT NULL,
    etag       text NOT NULL,
    table_name text NOT NULL,
    rows       bigint NOT NULL,
    changed    bigint NOT NULL,
    loaded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (file_key, etag)
);
CREATE INDEX IF NOT EXISTS totesys_load_ledger_table ON totesys_load_ledger (table_name, file_key)";

/// Adds the dimensions' version columns (`sql/migrations/0001_dimension_versions.sql`).
pub const MIGRATION: &str = include_str!("../../../sql/migrations/0001_dimension_versions.sql");

/// Checks the star schema (adding the dimensions' versions to a warehouse without them), then
/// creates the load's own tables if need be.
pub async fn prepare(client: &mut Client) -> Result<()> {
    let mut tables = star_schema_columns(client).await?;
    if missing_versions(&tables) {
        migrate(client).await?;
        tables = star_schema_columns(client).await?;
    }
    check(client, &tables).await?;
    // Only when something is missing: CREATE INDEX IF NOT EXISTS locks the ledger SHARE before
    // it finds the index there, which would wait for every load with a file in flight.
    let present: bool = client
        .query_one(
            &format!(
                "SELECT to_regclass('{LEDGER}_table') IS NOT NULL
                    AND to_regclass('{}') IS NOT NULL",
                crate::views::PENDING
            ),
            &[],
        )
        .await?
        .get(0);
    if present {
        return Ok(());
    }
    // Serialised, since two first invocations could otherwise race on CREATE TABLE.
    client
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock(hashtext('{LEDGER}')); {CREATE_LEDGER}; {}; \
             COMMIT",
            crate::views::CREATE_PENDING
        ))
        .await?;
    Ok(())
}

/// The columns of every registry table the warehouse holds.
async fn star_schema_columns(client: &Client) -> Result<Columns> {
    let names: Vec<&str> = WAREHOUSE_TABLES.iter().map(|t| t.name).collect();
    Ok(utils::catalog::columns(client, &names).await?)
}

type Columns = HashMap<String, Vec<utils::catalog::Column>>;

/// Whether some dimension lacks a version column of the registry.
fn missing_versions(tables: &Columns) -> bool {
    WAREHOUSE_TABLES.iter().any(|t| {
        tables
            .get(t.name)
            .is_some_and(|found| t.version().any(|v| !found.iter().any(|c| c.name == v.name)))
    })
}

/// Runs [`MIGRATION`] in one transaction (each ALTER waits for its table's lock no longer
/// than the session's `lock_timeout`); a role that does not own the tables gets an error
/// saying what to run.
async fn migrate(client: &mut Client) -> Result<()> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock(hashtext('{LEDGER}')); {MIGRATION}"
    ))
    .await
    .map_err(|e| match e.code() {
        Some(code) if *code == tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE => {
            Error::WarehouseSchema(format!(
                "the dimensions have no version columns (last_updated), and this role may not \
                 add them ({}): run sql/migrations/0001_dimension_versions.sql as the tables' \
                 owner",
                utils::error::describe_db_error(&e)
            ))
        }
        _ => Error::from(e),
    })?;
    tx.commit().await?;
    tracing::info!("added the dimensions' version columns (0001_dimension_versions.sql)");
    Ok(())
}

async fn check(client: &Client, tables: &Columns) -> Result<()> {
    let names: Vec<&str> = WAREHOUSE_TABLES.iter().map(|t| t.name).collect();
    let keys = client
        .query(
            "SELECT c.relname::text, array_agg(a.attname::text)
             FROM pg_index i
             JOIN pg_class c ON c.oid = i.indrelid
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
             WHERE i.indisunique AND i.indpred IS NULL
               AND c.relnamespace = current_schema()::regnamespace AND c.relname = ANY($1)
             GROUP BY c.relname, i.indexrelid",
            &[&names],
        )
        .await?;
    let mut unique: HashMap<String, Vec<BTreeSet<String>>> = HashMap::new();
    for row in keys {
        let columns: Vec<String> = row.get(1);
        unique
            .entry(row.get(0))
            .or_default()
            .push(columns.into_iter().collect());
    }

    let mut problems = Vec::new();
    for table in WAREHOUSE_TABLES {
        let found = tables.get(table.name).map(Vec::as_slice);
        let expected = table
            .columns
            .iter()
            .map(|c| (c, c.name, c.wh_type.sql_name()));
        for (registry, column) in
            utils::catalog::differences(table.name, found, expected, &mut problems)
        {
            if column.not_null && registry.nullable {
                problems.push(format!(
                    "{}.{} is NOT NULL, but the registry lets it be NULL",
                    table.name, registry.name
                ));
            }
        }
        let Some(found) = found else { continue };
        for c in found {
            if c.not_null && !c.has_default && !table.columns.iter().any(|k| k.name == c.name) {
                problems.push(format!(
                    "{}.{} is NOT NULL without a default, and the load has no value for it",
                    table.name, c.name
                ));
            }
        }
        let key: BTreeSet<String> = table.key.iter().map(|k| k.to_string()).collect();
        if !unique.get(table.name).is_some_and(|u| u.contains(&key)) {
            problems.push(format!(
                "table {} has no primary key or unique constraint on ({}), which the load's \
                 ON CONFLICT needs",
                table.name,
                table.key.join(", ")
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        problems.sort();
        Err(Error::WarehouseSchema(problems.join("; ")))
    }
}
