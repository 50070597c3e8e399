//! What PostgreSQL's catalog says of a set of tables, and where it differs from the columns a
//! registry expects: the check behind both ingest's source check and load's warehouse check,
//! each adding its own rules (nullability, defaults, keys) on top.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::error::Result;

/// One column as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `format_type`'s spelling: `character varying(3)`, `numeric(10,2)`, ...
    pub sql_type: String,
    pub not_null: bool,
    pub has_default: bool,
}

const COLUMNS: &str = "\
SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       a.atthasdef
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
WHERE c.relnamespace = to_regnamespace(current_schema())
  AND c.relname = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum";

/// The columns, in order, of each of `tables` that exists in the current schema.
pub async fn columns(client: &Client, tables: &[&str]) -> Result<HashMap<String, Vec<Column>>> {
    let mut found: HashMap<String, Vec<Column>> = HashMap::new();
    for row in client.query(COLUMNS, &[&tables]).await? {
        found.entry(row.get(0)).or_default().push(Column {
            name: row.get(1),
            sql_type: row.get(2),
            not_null: row.get(3),
            has_default: row.get(4),
        });
    }
    Ok(found)
}

/// How `found` (the table's columns, `None` if it does not exist) differs from the `expected`
/// columns (each a caller's registry column `T`, its name and its type): a missing table, a
/// missing column, a column of another type. Each expected column that is there comes back with
/// what the catalog says of it, for the caller's own checks.
pub fn differences<'f, T>(
    table: &str,
    found: Option<&'f [Column]>,
    expected: impl IntoIterator<Item = (T, &'static str, String)>,
    problems: &mut Vec<String>,
) -> Vec<(T, &'f Column)> {
    let Some(found) = found else {
        problems.push(format!("table {table} is missing"));
        return Vec::new();
    };
    let mut present = Vec::new();
    for (registry, name, sql_type) in expected {
        match found.iter().find(|c| c.name == name) {
            None => problems.push(format!("{table}.{name} is missing (expected {sql_type})")),
            Some(c) if c.sql_type != sql_type => problems.push(format!(
                "{table}.{name} is {}, expected {sql_type}",
                c.sql_type
            )),
            Some(c) => present.push((registry, c)),
        }
    }
    present
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, sql_type: &str) -> Column {
        Column {
            name: name.into(),
            sql_type: sql_type.into(),
            not_null: true,
            has_default: false,
        }
    }

    #[test]
    fn differences_name_the_table_column_and_types() {
        let found = [column("id", "integer"), column("code", "text")];
        let mut problems = Vec::new();
        let present = differences(
            "currency",
            Some(&found),
            [
                (1, "id", "integer".to_owned()),
                (2, "code", "character varying(3)".to_owned()),
                (3, "name", "text".to_owned()),
            ],
            &mut problems,
        );
        assert_eq!(
            problems,
            [
                "currency.code is text, expected character varying(3)",
                "currency.name is missing (expected text)"
            ]
        );
        assert_eq!(present, [(1, &found[0])]);
        let present = differences("staff", None, [(1, "id", "integer".into())], &mut problems);
        assert!(present.is_empty());
        assert_eq!(problems.last().unwrap(), "table staff is missing");
    }
}
