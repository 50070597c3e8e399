//! The bulk path for large files: their rows are copied straight into the table (see `apply`)
//! and, where the table has foreign keys, checked set-based instead of row by row.
//!
//! A foreign key is checked by PostgreSQL with one query per inserted row (its `RI_FKey_check`
//! trigger: about 27 µs a fact row against 3 µs for the row itself, `make bench`). On the bulk
//! path the file's transaction sets `session_replication_role = replica` around the `COPY`,
//! which leaves those triggers unfired, gathers the distinct values of each key's columns as
//! the batches stream by (a file's dates, staff, currencies: hundreds of values where it has
//! tens of thousands of rows), and then checks each key with one statement that locks the
//! referenced rows `FOR KEY SHARE`, exactly as the trigger would have, and counts them (past
//! [`ROW_LOCKS_MAX`] values, a key as wide as a file, the referenced table is locked `SHARE`
//! instead). A value without its row fails the file with `MissingDimension` and nothing
//! commits.
//!
//! Nothing in the schema changes and no lock a reader waits for is taken: the table is held
//! `ROW EXCLUSIVE` by the `COPY` and the referenced tables `ROW SHARE` by the row locks (or
//! `SHARE`, which only their writers wait for), so no reader, `REFRESH ... CONCURRENTLY` or
//! load of another fact table waits for it. Every constraint stays as its owner defined it (`NOT VALID`, deferrable, `ON
//! DELETE` actions, comments, inherited keys): the bulk path checks every foreign key of the
//! table, validated or not, as the triggers would for new rows.
//!
//! Where `replica` would change more than the foreign keys' checks, the file keeps them: a
//! trigger or rule on the table that fires on `INSERT` (a user's audit trigger, a deferrable
//! unique constraint's recheck). Setting `session_replication_role` takes superuser or, on
//! PostgreSQL 15 and later, `GRANT SET ON PARAMETER session_replication_role TO <load role>`;
//! without it the file is copied straight into the table with its checks row by row (logged
//! once). `LOAD_BULK_MIN_ROWS=0` turns the path off.

use std::collections::{BTreeSet, HashSet};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::Schema;
use arrow::row::{RowConverter, SortField};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;
use tracing::{debug, info, warn};
use utils::tables::quote_ident;
use utils::warehouse::WarehouseTable;

use crate::error::Result;

/// The default `LOAD_BULK_MIN_ROWS`: the files of a steady run (hundreds of rows) stay on the
/// row-by-row path; a backfill's files are far larger.
pub const DEFAULT_MIN_ROWS: u64 = 10_000;

/// Up to this many distinct values a key's referenced rows are locked one by one `FOR KEY
/// SHARE`, as the triggers would; past it (a fact file referencing a million transactions) the
/// referenced table is locked `SHARE` instead: readers still read it, its writers wait for the
/// file's commit. `make bench` measured 1.66M row locks on dim_transaction at about 60% of the
/// 5M-row load.
pub const ROW_LOCKS_MAX: usize = 10_000;

/// A foreign key of the table loaded, as the catalog defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    pub name: String,
    /// The referencing columns, as indices into the registry's columns of the table.
    columns: Vec<usize>,
    /// Their SQL types (`format_type`), which the gathered text values are cast to.
    types: Vec<String>,
    /// The referenced table, as `regclass` text (quoted and qualified as needed).
    pub references: String,
    /// The referenced columns, quoted.
    referenced: Vec<String>,
    /// `ONLY` for a plain table, as the trigger reads it; nothing for a partitioned one.
    only: bool,
    /// `MATCH FULL`: a value with some columns null and some not is a violation.
    match_full: bool,
}

/// When and how to take the bulk path, and what this invocation found out once: whether the
/// role may set `session_replication_role`, and which tables were reported as checked row by
/// row (the log says why once).
#[derive(Debug, Clone)]
pub struct Bulk {
    pub min_rows: u64,
    /// [`ROW_LOCKS_MAX`], but in tests.
    pub row_locks_max: usize,
    replica: Option<bool>,
    reported: BTreeSet<&'static str>,
    /// Declared datasets' tables whose copy straight in met a key twice (in its file, or one
    /// the table held): their later files in this invocation are staged without trying.
    keys_met: BTreeSet<&'static str>,
}

/// The set-based checks of one file on the bulk path: its table's foreign keys and the values
/// gathered for each.
#[derive(Debug)]
pub struct Checks {
    keys: Vec<(ForeignKey, Tuples)>,
    row_locks_max: usize,
}

impl Bulk {
    pub fn new(min_rows: u64) -> Self {
        Bulk {
            min_rows,
            row_locks_max: ROW_LOCKS_MAX,
            replica: None,
            reported: BTreeSet::new(),
            keys_met: BTreeSet::new(),
        }
    }

    /// Whether a file of `rows` rows is copied straight into its table.
    pub fn direct(&self, rows: u64) -> bool {
        self.min_rows > 0 && rows >= self.min_rows
    }

    /// Whether a declared dataset's file of `rows` rows into `table` is first copied straight
    /// in: a large file, unless an earlier one this invocation met a key twice.
    pub fn dataset_direct(&self, table: &str, rows: u64) -> bool {
        self.direct(rows) && !self.keys_met.contains(table)
    }

    /// Notes that a file copied straight into `table` met a key twice: the table's later
    /// files this invocation are staged without trying.
    pub fn key_met(&mut self, table: &'static str) {
        self.keys_met.insert(table);
    }

    /// For a file of `rows` rows into `table` inside `tx`: the set-based checks that replace
    /// the foreign keys' row-by-row ones, or `None` where those stay (a file below the bulk
    /// threshold, a table without foreign keys, a trigger or rule `replica` would change, a
    /// role that may not set it). Takes no lock.
    pub async fn prepare(
        &mut self,
        tx: &Transaction<'_>,
        table: &'static WarehouseTable,
        rows: u64,
    ) -> Result<Option<Checks>> {
        if !self.direct(rows) {
            return Ok(None);
        }
        let name = quote_ident(table.name);
        let keys = foreign_keys(tx, table).await?;
        if keys.is_empty() {
            return Ok(None);
        }
        let refused = match blocking_triggers(tx, &name).await? {
            Some(found) => Some(format!(
                "{found} on the table fire on INSERT, and would not with the foreign keys' \
                 triggers off"
            )),
            None if !self.replica_allowed(tx).await? => Some(
                "the load's role may not set session_replication_role (GRANT SET ON PARAMETER \
                 session_replication_role TO it, PostgreSQL 15 and later)"
                    .to_owned(),
            ),
            None => None,
        };
        if let Some(reason) = refused {
            if self.reported.insert(table.name) {
                warn!(
                    table = table.name,
                    rows,
                    reason = reason.as_str(),
                    "foreign keys checked row by row, not set-based by the bulk path"
                );
            }
            return Ok(None);
        }
        let schema = table.arrow_schema();
        let keys = keys
            .into_iter()
            .map(|k| {
                let tuples = Tuples::new(&schema, k.columns.clone(), k.match_full)?;
                Ok((k, tuples))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Checks {
            keys,
            row_locks_max: self.row_locks_max,
        }))
    }

    /// Whether the role may set `session_replication_role`: tried once, inside a savepoint.
    async fn replica_allowed(&mut self, tx: &Transaction<'_>) -> Result<bool> {
        if let Some(allowed) = self.replica {
            return Ok(allowed);
        }
        tx.batch_execute("SAVEPOINT bulk_probe").await?;
        let allowed = match tx
            .batch_execute("SET LOCAL session_replication_role = replica")
            .await
        {
            Ok(()) => true,
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
            {
                false
            }
            Err(e) => return Err(e.into()),
        };
        tx.batch_execute("ROLLBACK TO SAVEPOINT bulk_probe; RELEASE SAVEPOINT bulk_probe")
            .await?;
        self.replica = Some(allowed);
        Ok(allowed)
    }
}

/// The foreign keys of `table`, by name.
async fn foreign_keys(
    tx: &Transaction<'_>,
    table: &'static WarehouseTable,
) -> Result<Vec<ForeignKey>> {
    let rows = tx
        .query(
            "SELECT k.conname::text,
                    array(SELECT a.attname::text
                          FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
                          JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n
                          ORDER BY u.i),
                    array(SELECT format_type(a.atttypid, a.atttypmod)
                          FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
                          JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n
                          ORDER BY u.i),
                    k.confrelid::regclass::text,
                    array(SELECT quote_ident(a.attname)
                          FROM unnest(k.confkey) WITH ORDINALITY u(n, i)
                          JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n
                          ORDER BY u.i),
                    r.relkind <> 'p',
                    k.confmatchtype = 'f'
             FROM pg_constraint k JOIN pg_class r ON r.oid = k.confrelid
             WHERE k.conrelid = $1::text::regclass AND k.contype = 'f'
             ORDER BY k.conname",
            &[&quote_ident(table.name)],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let names: Vec<String> = row.get(1);
            let columns =
                names
                    .iter()
                    .map(|n| {
                        table.columns.iter().position(|c| c.name == n).ok_or_else(|| {
                        crate::Error::WarehouseSchema(format!(
                            "{}: the foreign key {} is on the column {n}, which the registry \
                             does not know",
                            table.name,
                            row.get::<_, String>(0)
                        ))
                    })
                    })
                    .collect::<Result<Vec<_>>>()?;
            Ok(ForeignKey {
                name: row.get(0),
                columns,
                types: row.get(2),
                references: row.get(3),
                referenced: row.get(4),
                only: row.get(5),
                match_full: row.get(6),
            })
        })
        .collect()
}

/// What on `table` fires on `INSERT` and would change with `session_replication_role =
/// replica`, besides its own foreign keys' checks: triggers and rules enabled for origin or
/// replica only (`ENABLE ALWAYS` ones fire either way), as a phrase naming them.
async fn blocking_triggers(tx: &Transaction<'_>, name: &str) -> Result<Option<String>> {
    let found: Vec<String> = tx
        .query(
            "SELECT format('trigger %I', t.tgname)
             FROM pg_trigger t
             WHERE t.tgrelid = $1::text::regclass AND t.tgenabled IN ('O', 'R')
               AND t.tgtype & 4 <> 0
               AND NOT EXISTS (SELECT 1 FROM pg_constraint k
                               WHERE k.oid = t.tgconstraint AND k.contype = 'f'
                                 AND k.conrelid = t.tgrelid)
             UNION ALL
             SELECT format('rule %I', r.rulename)
             FROM pg_rewrite r
             WHERE r.ev_class = $1::text::regclass AND r.ev_type = '3'
               AND r.ev_enabled IN ('O', 'R')
             ORDER BY 1",
            &[&name],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok((!found.is_empty()).then(|| found.join(", ")))
}

impl Checks {
    /// Gathers the values of `batch` for every key; a `MATCH FULL` value with some columns
    /// null is refused (naming the key).
    pub fn add(&mut self, batch: &RecordBatch) -> std::result::Result<(), String> {
        for (key, tuples) in &mut self.keys {
            tuples
                .add(batch)
                .map_err(|e| format!("foreign key {}: {e}", key.name))?;
        }
        Ok(())
    }

    /// Checks every key against its referenced table, locking the rows found `FOR KEY SHARE`:
    /// `Some(what is missing)` when a value has no row.
    pub async fn run(&self, tx: &Transaction<'_>, table: &str) -> Result<Option<String>> {
        for (key, tuples) in &self.keys {
            let started = std::time::Instant::now();
            let values = tuples.text_columns()?;
            if values.first().is_none_or(Vec::is_empty) {
                continue;
            }
            let params: Vec<&(dyn ToSql + Sync)> =
                values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            // The values are distinct already: Arrow's text of a value is canonical.
            let distinct = tuples.len() as i64;
            let row_locks = tuples.len() <= self.row_locks_max;
            let missing = if row_locks {
                let locked: i64 = tx.query_one(&check_sql(key), &params).await?.get(0);
                distinct - locked
            } else {
                // A hash anti-join over a file's worth of values, in memory (a 1M-value hash
                // is about 50 MB).
                tx.batch_execute(&format!(
                    "LOCK TABLE {} IN SHARE MODE; SET LOCAL work_mem = '128MB'",
                    key.references
                ))
                .await?;
                tx.query_one(&count_missing_sql(key), &params).await?.get(0)
            };
            debug!(
                table,
                key = key.name.as_str(),
                values = distinct,
                row_locks,
                seconds = started.elapsed().as_secs_f64(),
                "foreign key checked set-based"
            );
            if missing > 0 {
                let shown: Vec<String> = tx
                    .query(&missing_sql(key), &params)
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                return Ok(Some(format!(
                    "the file's rows violate the foreign key {}: key ({})=({}) is not present \
                     in table {} ({} of the file's {} distinct values are missing)",
                    key.name,
                    key.referenced.join(", "),
                    shown.join("), ("),
                    key.references,
                    missing,
                    distinct
                )));
            }
        }
        Ok(None)
    }

    /// How many keys are checked.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// `unnest($1::text[], ...) AS v(c0, ...)` and the typed values `v.c0::type, ...`.
fn values_sql(key: &ForeignKey) -> (String, String) {
    let arrays: Vec<String> = (1..=key.types.len())
        .map(|i| format!("${i}::text[]"))
        .collect();
    let names: Vec<String> = (0..key.types.len()).map(|i| format!("c{i}")).collect();
    let typed: Vec<String> = key
        .types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("v.c{i}::{t}"))
        .collect();
    (
        format!("unnest({}) AS v({})", arrays.join(", "), names.join(", ")),
        typed.join(", "),
    )
}

fn referenced_sql(key: &ForeignKey) -> (String, String) {
    let only = if key.only { "ONLY " } else { "" };
    let columns: Vec<String> = key.referenced.iter().map(|c| format!("r.{c}")).collect();
    (
        format!("{only}{} r", key.references),
        format!("({})", columns.join(", ")),
    )
}

/// Locks the referenced rows of the gathered values `FOR KEY SHARE` (as the trigger does for
/// each row) and counts them.
fn check_sql(key: &ForeignKey) -> String {
    let (values, typed) = values_sql(key);
    let (from, columns) = referenced_sql(key);
    format!(
        "SELECT count(*) FROM (SELECT 1 FROM {from} WHERE {columns} IN \
         (SELECT {typed} FROM {values}) FOR KEY SHARE OF r) l"
    )
}

/// Counts the gathered values without their referenced row (the table locked `SHARE`).
fn count_missing_sql(key: &ForeignKey) -> String {
    let (values, typed) = values_sql(key);
    let (from, columns) = referenced_sql(key);
    format!(
        "SELECT count(*) FROM {values} WHERE NOT EXISTS (SELECT 1 FROM {from} WHERE {columns} = ({typed}))"
    )
}

/// Up to five gathered values without their referenced row, as text.
fn missing_sql(key: &ForeignKey) -> String {
    let (values, typed) = values_sql(key);
    let (from, columns) = referenced_sql(key);
    let shown: Vec<String> = (0..key.types.len()).map(|i| format!("v.c{i}")).collect();
    format!(
        "SELECT concat_ws(', ', {}) FROM {values} \
         WHERE NOT EXISTS (SELECT 1 FROM {from} WHERE {columns} = ({typed})) \
         ORDER BY 1 LIMIT 5",
        shown.join(", ")
    )
}

/// The distinct values of some columns of a file, gathered batch by batch: a tuple with a null
/// is left out (`MATCH SIMPLE`: it references nothing), or under `MATCH FULL` refused unless
/// every column is null. Memory grows with the distinct values, not the rows.
#[derive(Debug)]
pub struct Tuples {
    columns: Vec<usize>,
    converter: RowConverter,
    seen: HashSet<Box<[u8]>>,
    match_full: bool,
}

impl Tuples {
    /// Gathers `columns` of batches of `schema`.
    pub fn new(schema: &Schema, columns: Vec<usize>, match_full: bool) -> Result<Self> {
        let fields = columns
            .iter()
            .map(|&i| SortField::new(schema.field(i).data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields).map_err(utils::Error::Arrow)?;
        Ok(Tuples {
            columns,
            converter,
            seen: HashSet::new(),
            match_full,
        })
    }

    pub fn add(&mut self, batch: &RecordBatch) -> std::result::Result<(), String> {
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let rows = self
            .converter
            .convert_columns(&arrays)
            .map_err(|e| e.to_string())?;
        for i in 0..batch.num_rows() {
            let nulls = arrays.iter().filter(|a| a.is_null(i)).count();
            if nulls > 0 {
                if self.match_full && nulls < arrays.len() {
                    return Err(format!(
                        "row {}: MATCH FULL allows no mix of null and non-null values",
                        i + 1
                    ));
                }
                continue;
            }
            let row = rows.row(i);
            if !self.seen.contains(row.data()) {
                self.seen.insert(row.data().into());
            }
        }
        Ok(())
    }

    /// The values gathered, column by column, as PostgreSQL's text input reads them.
    pub fn text_columns(&self) -> Result<Vec<Vec<String>>> {
        let parser = self.converter.parser();
        let arrays = self
            .converter
            .convert_rows(self.seen.iter().map(|b| parser.parse(b)))
            .map_err(utils::Error::Arrow)?;
        let options = FormatOptions::default();
        arrays
            .iter()
            .map(|array| {
                let f = ArrayFormatter::try_new(array.as_ref(), &options)
                    .map_err(utils::Error::Arrow)?;
                Ok((0..array.len()).map(|i| f.value(i).to_string()).collect())
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Whether the table holds any key of `batch` already (the unique version key of a fact, the
/// primary key of a dimension): read before a file is copied straight in, so that a file
/// loaded before (a replay) goes to the staging table's upsert at once instead of streaming
/// whole into a unique violation first.
pub async fn holds_any_key(
    tx: &Transaction<'_>,
    table: &'static WarehouseTable,
    batch: &RecordBatch,
) -> Result<bool> {
    let columns: Vec<usize> = table
        .key
        .iter()
        .filter_map(|k| table.columns.iter().position(|c| c.name == *k))
        .collect();
    let types: Vec<String> = columns
        .iter()
        .map(|&i| table.columns[i].wh_type.sql_name())
        .collect();
    let mut tuples = Tuples::new(&table.arrow_schema(), columns.clone(), false)?;
    tuples.add(batch).map_err(|e| {
        utils::Error::Configuration(format!("{}: reading its key: {e}", table.name))
    })?;
    let values = tuples.text_columns()?;
    if values.first().is_none_or(Vec::is_empty) {
        return Ok(false);
    }
    let on: Vec<String> = columns
        .iter()
        .zip(&types)
        .enumerate()
        .map(|(i, (&c, t))| format!("t.{} = v.c{i}::{t}", quote_ident(table.columns[c].name)))
        .collect();
    let arrays: Vec<String> = (1..=columns.len())
        .map(|i| format!("${i}::text[]"))
        .collect();
    let names: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM unnest({}) AS v({}) JOIN {} t ON {})",
        arrays.join(", "),
        names.join(", "),
        quote_ident(table.name),
        on.join(" AND ")
    );
    let params: Vec<&(dyn ToSql + Sync)> =
        values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
    let held: bool = tx.query_one(&sql, &params).await?.get(0);
    if held {
        info!(
            table = table.name,
            "the table holds keys of the file's first batch: staged and applied instead"
        );
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date32Array, Int32Array};
    use arrow::datatypes::{DataType, Field};
    use std::sync::Arc;

    fn key(types: &[&str], only: bool) -> ForeignKey {
        ForeignKey {
            name: "k".into(),
            columns: (0..types.len()).collect(),
            types: types.iter().map(|t| (*t).to_owned()).collect(),
            references: "dim_date".into(),
            referenced: (0..types.len()).map(|i| format!("\"p{i}\"")).collect(),
            only,
            match_full: false,
        }
    }

    #[test]
    fn the_check_locks_the_referenced_rows_as_the_trigger_does_and_counts_them() {
        assert_eq!(
            check_sql(&key(&["date"], true)),
            "SELECT count(*) FROM (SELECT 1 FROM ONLY dim_date r WHERE (r.\"p0\") IN \
             (SELECT v.c0::date FROM unnest($1::text[]) AS v(c0)) FOR KEY SHARE OF r) l"
        );
        assert_eq!(
            count_missing_sql(&key(&["date"], false)),
            "SELECT count(*) FROM unnest($1::text[]) AS v(c0) WHERE NOT EXISTS (SELECT 1 FROM \
             dim_date r WHERE (r.\"p0\") = (v.c0::date))"
        );
        assert_eq!(
            missing_sql(&key(&["integer", "text"], false)),
            "SELECT concat_ws(', ', v.c0, v.c1) FROM unnest($1::text[], $2::text[]) AS v(c0, \
             c1) WHERE NOT EXISTS (SELECT 1 FROM dim_date r WHERE (r.\"p0\", r.\"p1\") = \
             (v.c0::integer, v.c1::text)) ORDER BY 1 LIMIT 5"
        );
    }

    #[test]
    fn distinct_values_are_gathered_without_nulls_and_read_back_as_text() {
        let schema = Schema::new(vec![
            Field::new("d", DataType::Date32, true),
            Field::new("i", DataType::Int32, true),
        ]);
        // 2024-11-14, 2024-11-14, null, 1970-01-02
        let batch = RecordBatch::try_new(
            Arc::new(schema.clone()),
            vec![
                Arc::new(Date32Array::from(vec![
                    Some(20041),
                    Some(20041),
                    None,
                    Some(1),
                ])),
                Arc::new(Int32Array::from(vec![Some(7), Some(8), Some(7), None])),
            ],
        )
        .unwrap();
        let mut single = Tuples::new(&schema, vec![0], false).unwrap();
        single.add(&batch).unwrap();
        single.add(&batch).unwrap();
        let mut got = single.text_columns().unwrap().remove(0);
        got.sort();
        assert_eq!(got, ["1970-01-02", "2024-11-14"]);
        let mut pair = Tuples::new(&schema, vec![0, 1], false).unwrap();
        pair.add(&batch).unwrap();
        let mut got = pair.text_columns().unwrap();
        let mut tuples: Vec<(String, String)> =
            got.remove(0).into_iter().zip(got.remove(0)).collect();
        tuples.sort();
        assert_eq!(
            tuples,
            [
                ("2024-11-14".into(), "7".into()),
                ("2024-11-14".into(), "8".into())
            ]
        );
        let mut full = Tuples::new(&schema, vec![0, 1], true).unwrap();
        assert!(
            full.add(&batch).unwrap_err().contains("row 3"),
            "a mix refused"
        );
    }
}
