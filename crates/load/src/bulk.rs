//! The bulk path for large files. Their rows are copied straight into the table (see
//! `apply`), and, where the file is large next to its table, the rows go in as `pg_restore`
//! loads data: inside the file's transaction the target's foreign keys are dropped, the rows
//! go in without a per-row check, and the same constraints are added back, which PostgreSQL
//! validates with one set-based query per constraint over the whole table. A violation fails
//! the statement that adds the constraint back (SQLSTATE 23503, the file's
//! `MissingDimension`) and the transaction with it, so nothing is committed and the schema is
//! as it was; after a commit it is as it was too (same names, same definitions, validated).
//!
//! Locks: the target is locked `ACCESS EXCLUSIVE` for the transaction (readers of the fact
//! table wait for it) and the tables its keys reference `SHARE ROW EXCLUSIVE` (writers of those
//! dimensions wait), taken in one order (target, then the referenced tables by name) so that
//! concurrent loads queue rather than deadlock. `LOAD_BULK_MIN_ROWS=0` turns the path off.

use std::collections::BTreeSet;

use tokio_postgres::Transaction;
use tracing::{debug, info, warn};
use utils::tables::quote_ident;
use utils::warehouse::WarehouseTable;

use crate::error::Result;

/// The default `LOAD_BULK_MIN_ROWS`: the files of a steady run (hundreds of rows) stay on the
/// row-by-row path and its shorter locks; a backfill's files are far larger.
pub const DEFAULT_MIN_ROWS: u64 = 10_000;

/// The foreign keys are dropped only for a file of at least 1/`TABLE_RATIO` of the table's
/// rows. `make bench` measured, per fact row, about 27 µs of row-by-row checks against
/// 3 µs to insert without them plus about 0.9 µs per row of the table to validate its keys
/// again: validating pays for itself once the file holds about a 25th of the table.
pub const TABLE_RATIO: u64 = 25;

/// One foreign key of the target, as `pg_get_constraintdef` spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    pub name: String,
    pub definition: String,
    /// The referenced table, as `regclass` text (quoted and qualified as needed).
    pub references: String,
}

/// When to take the bulk path, and which tables were already reported as not eligible in this
/// invocation (the log says why once).
#[derive(Debug, Clone)]
pub struct Bulk {
    pub min_rows: u64,
    reported: BTreeSet<&'static str>,
}

impl Bulk {
    pub fn new(min_rows: u64) -> Self {
        Bulk {
            min_rows,
            reported: BTreeSet::new(),
        }
    }

    /// Whether a file of `rows` rows is copied straight into its table.
    pub fn direct(&self, rows: u64) -> bool {
        self.min_rows > 0 && rows >= self.min_rows
    }

    /// Prepares the bulk path for a file of `rows` rows into `table` inside `tx`: the foreign
    /// keys dropped, to be added back by [`restore_sql`] after the rows, or `None` for the
    /// row-by-row checks (a small file, or one small next to its table, the path turned off, a
    /// table without foreign keys, or one the load's role does not own).
    pub async fn prepare(
        &mut self,
        tx: &Transaction<'_>,
        table: &'static WarehouseTable,
        rows: u64,
    ) -> Result<Option<Vec<ForeignKey>>> {
        if !self.direct(rows) {
            return Ok(None);
        }
        let name = quote_ident(table.name);
        // The statistics' row count, or the live rows counted since (a table filled by this
        // backfill may not be analysed yet); no scan.
        let table_rows: i64 = tx
            .query_one(
                "SELECT GREATEST(c.reltuples, coalesce(s.n_live_tup, 0))::int8
                 FROM pg_class c LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
                 WHERE c.oid = $1::text::regclass",
                &[&name],
            )
            .await?
            .get(0);
        let table_rows = u64::try_from(table_rows).unwrap_or(0);
        if rows.saturating_mul(TABLE_RATIO) < table_rows {
            debug!(
                table = table.name,
                rows,
                table_rows,
                "the file is small next to its table: its rows are checked one by one"
            );
            return Ok(None);
        }
        let refused = tx
            .query_one(
                "SELECT CASE
                   WHEN NOT pg_has_role(c.relowner, 'USAGE')
                     THEN format('the role %I does not own it (its owner is %I)',
                                 current_user, c.relowner::regrole)
                   ELSE (SELECT format('the role %I may not reference %s', current_user,
                                       k.confrelid::regclass)
                         FROM pg_constraint k
                         WHERE k.conrelid = c.oid AND k.contype = 'f'
                           AND NOT has_table_privilege(k.confrelid, 'REFERENCES')
                         LIMIT 1)
                 END
                 FROM pg_class c WHERE c.oid = $1::text::regclass",
                &[&name],
            )
            .await?
            .get::<_, Option<String>>(0);
        if let Some(reason) = refused {
            if self.reported.insert(table.name) {
                warn!(
                    table = table.name,
                    rows,
                    reason = reason.as_str(),
                    "foreign keys checked row by row, not by the bulk path"
                );
            }
            return Ok(None);
        }
        // The target first, so the constraints read below are the ones committed last.
        tx.batch_execute(&format!("LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE"))
            .await?;
        let keys: Vec<ForeignKey> = tx
            .query(
                "SELECT conname::text, pg_get_constraintdef(oid), confrelid::regclass::text
                 FROM pg_constraint WHERE conrelid = $1::text::regclass AND contype = 'f'
                 ORDER BY conname",
                &[&name],
            )
            .await?
            .iter()
            .map(|row| ForeignKey {
                name: row.get(0),
                definition: row.get(1),
                references: row.get(2),
            })
            .collect();
        if keys.is_empty() {
            return Ok(None);
        }
        let referenced: BTreeSet<&str> = keys.iter().map(|k| k.references.as_str()).collect();
        let referenced: Vec<&str> = referenced.into_iter().collect();
        tx.batch_execute(&format!(
            "LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
            referenced.join(", ")
        ))
        .await?;
        let drops: Vec<String> = keys
            .iter()
            .map(|k| format!("DROP CONSTRAINT {}", quote_ident(&k.name)))
            .collect();
        tx.batch_execute(&format!("ALTER TABLE {name} {}", drops.join(", ")))
            .await?;
        info!(
            table = table.name,
            rows,
            constraints = keys.len(),
            "bulk path: foreign keys dropped for the file's transaction"
        );
        Ok(Some(keys))
    }
}

/// The statement that adds `keys` back to `table`: one `ALTER TABLE`, each constraint checked
/// with one query over the table.
pub fn restore_sql(table: &WarehouseTable, keys: &[ForeignKey]) -> String {
    let adds: Vec<String> = keys
        .iter()
        .map(|k| format!("ADD CONSTRAINT {} {}", quote_ident(&k.name), k.definition))
        .collect();
    format!(
        "ALTER TABLE {} {}",
        quote_ident(table.name),
        adds.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use utils::warehouse::warehouse_table;

    #[test]
    fn keys_are_added_back_as_they_were_defined() {
        let keys = [
            ForeignKey {
                name: "fact_payment_created_date_fkey".into(),
                definition: "FOREIGN KEY (created_date) REFERENCES dim_date(date_id)".into(),
                references: "dim_date".into(),
            },
            ForeignKey {
                name: "odd \"name\"".into(),
                definition: "FOREIGN KEY (transaction_id) REFERENCES dim_transaction(transaction_id) NOT VALID".into(),
                references: "dim_transaction".into(),
            },
        ];
        assert_eq!(
            restore_sql(warehouse_table("fact_payment").unwrap(), &keys),
            "ALTER TABLE \"fact_payment\" ADD CONSTRAINT \"fact_payment_created_date_fkey\" \
             FOREIGN KEY (created_date) REFERENCES dim_date(date_id), ADD CONSTRAINT \
             \"odd \"\"name\"\"\" FOREIGN KEY (transaction_id) REFERENCES \
             dim_transaction(transaction_id) NOT VALID"
        );
    }
}
