//! What a run asks the source before it reads: that its tables have the registry's columns,
//! and where this run's windows end.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::Client;
use tracing::warn;
use utils::query::{ACTIVITY_VISIBILITY, WINDOW_END_QUERY};
use utils::tables::TableSpec;

use crate::error::{Error, Result};

/// The end of this run's windows, by the source database's clock: now, or the start of the
/// oldest open transaction holding a transaction id if that is earlier, less `safety_lag`.
/// Rows that such a transaction stamps before it commits are then left for a later run,
/// never skipped. Warns when this session cannot see other users' transactions.
pub async fn window_end(client: &Client, safety_lag: Duration) -> Result<DateTime<Utc>> {
    if !sees_other_transactions(client).await? {
        warn!(
            "the source user cannot see other sessions' transactions (grant pg_read_all_stats): \
             the window end relies on the safety lag alone"
        );
    }
    let row = client
        .query_one(WINDOW_END_QUERY, &[&safety_lag.as_secs_f64()])
        .await?;
    Ok(row.try_get::<_, DateTime<Utc>>(0)?)
}

/// Whether this session can see other users' open transactions (superuser or a member of
/// `pg_read_all_stats`); without that, PostgreSQL hides them and the guard cannot wait for them.
pub async fn sees_other_transactions(client: &Client) -> Result<bool> {
    Ok(client.query_one(ACTIVITY_VISIBILITY, &[]).await?.get(0))
}

/// Checks that every requested table exists with the registry's columns and types, so that a
/// changed source fails clearly before anything is written.
pub async fn check_source_schema(client: &Client, tables: &[&'static TableSpec]) -> Result<()> {
    let names: Vec<&str> = tables.iter().map(|t| t.name).collect();
    let found = utils::catalog::columns(client, &names).await?;
    let mut problems = Vec::new();
    for table in tables {
        let columns = found.get(table.name).map(Vec::as_slice);
        let expected = table
            .columns
            .iter()
            .map(|c| (c, c.name, c.pg_type.sql_name()));
        for (registry, column) in
            utils::catalog::differences(table.name, columns, expected, &mut problems)
        {
            if !registry.nullable && !column.not_null {
                problems.push(format!(
                    "{}.{} is nullable, expected NOT NULL",
                    table.name, registry.name
                ));
            }
        }
        for column in columns.unwrap_or_default() {
            if table.column(&column.name).is_none() {
                warn!(
                    table = table.name,
                    column = column.name.as_str(),
                    "source column is not in the registry and is not copied"
                );
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::SourceSchemaMismatch(problems.join("; ")))
    }
}
