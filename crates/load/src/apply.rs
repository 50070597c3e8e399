//! Applying a file's rows inside its transaction: copied straight into the table (the bulk
//! path, see [`crate::bulk`]), or staged by COPY into a temporary table and applied by one
//! `INSERT ... ON CONFLICT`, dimensions only where the incoming version is not older.

use arrow::array::RecordBatch;
use tokio_postgres::Transaction;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tracing::{debug, info};
use utils::parquet_io::ParquetStream;
use utils::tables::quote_ident;
use utils::warehouse::{Kind, WarehouseTable};

use crate::bulk;
use crate::copy;
use crate::error::{Error, Result};
use crate::file::Loading;

/// Why a COPY into the table itself stopped.
enum CopyFailure {
    /// A row whose key the table holds already (or the file holds twice): the file goes
    /// through the staging table's upsert instead.
    Conflict,
    Other(Error),
}

/// A file's rows still to copy: a batch read ahead (to look at its keys first), then the rest.
pub(crate) struct Rows {
    pub first: Option<RecordBatch>,
    pub rest: ParquetStream,
}

/// Applies the file's rows to the table: rows inserted or updated, and whether its foreign keys
/// were checked set-based. A file of at least
/// `bulk.min_rows` rows (`direct` is `Some`) is first copied straight into the table, inside a
/// savepoint (the temporary table and the `INSERT ... SELECT` cost more than the COPY itself),
/// with its foreign keys checked set-based where `direct` holds the checks (see [`bulk`]);
/// when its first batch's keys are in the table already, or a later key is, the file goes the
/// usual way: staged by COPY into a temporary table, then applied by one `INSERT ... ON
/// CONFLICT`, with every check row by row.
pub(crate) async fn apply(
    tx: &Transaction<'_>,
    loading: Loading<'_>,
    mut opened: ParquetStream,
    direct: Option<Option<bulk::Checks>>,
) -> Result<(u64, bool)> {
    let started = std::time::Instant::now();
    let file = loading.file;
    let table = file.table;
    let mut first = None;
    if let Some(mut checks) = direct {
        first = loading.next_batch(&mut opened).await?;
        let held = match &first {
            Some(batch) => bulk::holds_any_key(tx, table, batch).await?,
            None => false,
        };
        if !held {
            tx.batch_execute("SAVEPOINT direct_copy").await?;
            if checks.is_some() {
                // Undone with the savepoint if the COPY meets a key after all.
                tx.batch_execute("SET LOCAL session_replication_role = replica")
                    .await?;
            }
            let target = quote_ident(table.name);
            let rows = Rows {
                first: first.take(),
                rest: opened,
            };
            match copy_rows(tx, loading, rows, &target, checks.as_mut()).await {
                Ok(rows) => {
                    if let Some(checks) = &checks {
                        if let Some(detail) = checks.run(tx, table.name).await? {
                            return Err(Error::MissingDimension {
                                table: table.name,
                                bucket: loading.store.bucket().to_owned(),
                                key: file.key.clone(),
                                detail,
                            });
                        }
                        tx.batch_execute("SET LOCAL session_replication_role = origin")
                            .await?;
                    }
                    tx.batch_execute("RELEASE SAVEPOINT direct_copy").await?;
                    debug!(
                        table = table.name,
                        key = file.key.as_str(),
                        set_based_checks = checks.as_ref().map_or(0, bulk::Checks::len),
                        seconds = started.elapsed().as_secs_f64(),
                        "copied straight into the table"
                    );
                    return Ok((rows, checks.is_some()));
                }
                Err(CopyFailure::Conflict) => {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT direct_copy")
                        .await?;
                    info!(
                        table = table.name,
                        key = file.key.as_str(),
                        "the table holds some of the file's keys: staged and applied instead"
                    );
                    opened = loading.open().await?;
                }
                Err(CopyFailure::Other(e)) => return Err(e),
            }
        }
    }
    let stage_columns: Vec<String> = table
        .columns
        .iter()
        .map(|c| format!("{} {}", quote_ident(c.name), c.wh_type.sql_name()))
        .collect();
    tx.batch_execute(&format!(
        "DROP TABLE IF EXISTS pg_temp.load_stage;
         CREATE TEMP TABLE load_stage ({}) ON COMMIT DROP",
        stage_columns.join(", ")
    ))
    .await?;
    let rows = Rows {
        first,
        rest: opened,
    };
    copy_rows(tx, loading, rows, "load_stage", None)
        .await
        .map_err(|e| match e {
            CopyFailure::Conflict => loading
                .invalid("a unique violation copying into the staging table, which has no keys"),
            CopyFailure::Other(e) => e,
        })?;
    let staged = started.elapsed();
    let changed = tx
        .execute(&apply_sql(table), &[])
        .await
        .map_err(|e| loading.db_error(e))?;
    debug!(
        table = table.name,
        key = file.key.as_str(),
        staged_seconds = staged.as_secs_f64(),
        applied_seconds = (started.elapsed() - staged).as_secs_f64(),
        "staged and applied"
    );
    Ok((changed, false))
}

/// Streams the file's rows (a batch read ahead, then the rest) through a binary COPY into
/// `target` (the registry's columns of the file's table), gathering each batch's values for
/// `checks`: the rows copied.
async fn copy_rows(
    tx: &Transaction<'_>,
    loading: Loading<'_>,
    Rows { mut first, rest }: Rows,
    target: &str,
    mut checks: Option<&mut bulk::Checks>,
) -> Result<u64, CopyFailure> {
    let mut rest = rest;
    let table = loading.file.table;
    let failed = |e: tokio_postgres::Error| {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            CopyFailure::Conflict
        } else {
            CopyFailure::Other(loading.db_error(e))
        }
    };
    let sink = tx
        .copy_in(&format!(
            "COPY {target} ({}) FROM STDIN (FORMAT binary)",
            column_list(table)
        ))
        .await
        .map_err(failed)?;
    let writer = BinaryCopyInWriter::new(sink, &copy::pg_types(table));
    futures_util::pin_mut!(writer);
    loop {
        let batch = match first.take() {
            Some(batch) => batch,
            None => match loading
                .next_batch(&mut rest)
                .await
                .map_err(CopyFailure::Other)?
            {
                Some(batch) => batch,
                None => break,
            },
        };
        if let Some(checks) = checks.as_deref_mut() {
            checks
                .add(&batch)
                .map_err(|reason| CopyFailure::Other(loading.invalid(reason)))?;
        }
        copy::write_batch(writer.as_mut(), table, &batch)
            .await
            .map_err(|e| match e {
                copy::CopyError::Value(reason) => CopyFailure::Other(loading.invalid(reason)),
                copy::CopyError::Database(e) => failed(e),
            })?;
    }
    writer.finish().await.map_err(failed)
}

fn column_list(table: &WarehouseTable) -> String {
    quoted(table.columns.iter().map(|c| c.name), "")
}

/// `names` quoted as identifiers, each behind `prefix`, as a comma-separated list.
fn quoted<'a>(names: impl IntoIterator<Item = &'a str>, prefix: &str) -> String {
    names
        .into_iter()
        .map(|n| format!("{prefix}{}", quote_ident(n)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The statement that moves the staged rows into the table.
pub(crate) fn apply_sql(table: &WarehouseTable) -> String {
    let columns = column_list(table);
    let key = quoted(table.key.iter().copied(), "");
    let insert = format!(
        "INSERT INTO {name} AS t ({columns}) SELECT {columns} FROM load_stage \
         ON CONFLICT ({key})",
        name = quote_ident(table.name)
    );
    let values: Vec<&str> = table
        .columns
        .iter()
        .map(|c| c.name)
        .filter(|c| !table.key.contains(c))
        .collect();
    if table.kind == Kind::Fact || values.is_empty() {
        return format!("{insert} DO NOTHING");
    }
    let set: Vec<String> = values
        .iter()
        .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
        .collect();
    let changed = format!(
        "({}) IS DISTINCT FROM ({})",
        quoted(values.iter().copied(), "t."),
        quoted(values.iter().copied(), "EXCLUDED.")
    );
    // A row is updated only by a version not older than its own (a version it does not have,
    // from a warehouse older than the versions, is the oldest), so files of a dimension
    // applied in any order leave the newest values: a late file changes nothing newer.
    let version = |prefix: &str| -> Vec<String> {
        table
            .version()
            .map(|c| format!("COALESCE({prefix}{}, '-infinity')", quote_ident(c.name)))
            .collect()
    };
    let newer = match version("") {
        v if v.is_empty() => String::new(),
        _ => format!(
            "({}) >= ({}) AND ",
            version("EXCLUDED.").join(", "),
            version("t.").join(", ")
        ),
    };
    format!(
        "{insert} DO UPDATE SET {} WHERE {newer}{changed}",
        set.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use utils::warehouse::warehouse_table;

    #[test]
    fn dimensions_update_only_what_changed_by_a_version_not_older_and_facts_insert() {
        let sql = apply_sql(warehouse_table("dim_currency").unwrap());
        assert_eq!(
            sql,
            "INSERT INTO \"dim_currency\" AS t (\"currency_id\", \"currency_code\", \
             \"currency_name\", \"last_updated\") SELECT \"currency_id\", \"currency_code\", \
             \"currency_name\", \"last_updated\" FROM load_stage ON CONFLICT (\"currency_id\") \
             DO UPDATE SET \"currency_code\" = EXCLUDED.\"currency_code\", \"currency_name\" = \
             EXCLUDED.\"currency_name\", \"last_updated\" = EXCLUDED.\"last_updated\" WHERE \
             (COALESCE(EXCLUDED.\"last_updated\", '-infinity')) >= \
             (COALESCE(t.\"last_updated\", '-infinity')) AND (t.\"currency_code\", \
             t.\"currency_name\", t.\"last_updated\") IS DISTINCT FROM \
             (EXCLUDED.\"currency_code\", EXCLUDED.\"currency_name\", EXCLUDED.\"last_updated\")"
        );
        let sql = apply_sql(warehouse_table("dim_staff").unwrap());
        assert!(
            sql.contains(
                "WHERE (COALESCE(EXCLUDED.\"last_updated\", '-infinity'), \
                 COALESCE(EXCLUDED.\"department_last_updated\", '-infinity')) >= \
                 (COALESCE(t.\"last_updated\", '-infinity'), \
                 COALESCE(t.\"department_last_updated\", '-infinity')) AND"
            ),
            "{sql}"
        );
        let sql = apply_sql(warehouse_table("dim_date").unwrap());
        assert!(
            sql.contains("DO UPDATE SET") && !sql.contains("infinity"),
            "{sql}"
        );
        let sql = apply_sql(warehouse_table("fact_payment").unwrap());
        assert!(
            sql.ends_with(
                "ON CONFLICT (\"payment_id\", \"last_updated_date\", \"last_updated_time\") \
                 DO NOTHING"
            ),
            "{sql}"
        );
    }
}
