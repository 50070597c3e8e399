//! A dataset in the PostgreSQL warehouse: its table as the declaration types it (with a unique
//! index on the key), its views, the declared write mode as one statement from a staging
//! table, and typed rows as `COPY` binary (or text).

use std::fmt::Write as _;
use std::io::Write as _;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float64Type, Int16Type, Int32Type, Int64Type,
    Time64MicrosecondType, TimestampMicrosecondType,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::decl::{Dataset, Kind, View, WriteMode};

/// The staging table a file is copied into, in its transaction.
pub const STAGE: &str = "dataset_stage";

/// An identifier, quoted (declared names are plain, but may be reserved words).
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The PostgreSQL type a column is stored as.
pub fn pg_type(kind: Kind) -> String {
    match kind {
        Kind::SmallInt => "smallint".into(),
        Kind::Integer => "integer".into(),
        Kind::BigInt => "bigint".into(),
        Kind::Decimal { precision, scale } => format!("numeric({precision},{scale})"),
        Kind::Text => "text".into(),
        Kind::Boolean => "boolean".into(),
        Kind::Date => "date".into(),
        Kind::Timestamp => "timestamp".into(),
        Kind::TimestampTz => "timestamptz".into(),
        Kind::Time => "time".into(),
        Kind::Point => "point".into(),
    }
}

/// The declared columns, quoted, comma-separated.
fn column_list(dataset: &Dataset, prefix: &str) -> String {
    let names: Vec<String> = dataset
        .columns
        .iter()
        .map(|c| format!("{prefix}{}", ident(&c.name)))
        .collect();
    names.join(", ")
}

/// The key as index expressions: a point (which has no equality operator) by its two
/// coordinates.
fn key_exprs(dataset: &Dataset, prefix: &str) -> String {
    let exprs: Vec<String> = dataset
        .key
        .iter()
        .flat_map(|k| {
            let column = format!("{prefix}{}", ident(k));
            match dataset.column(k).map(|c| c.kind) {
                Some(Kind::Point) => vec![format!("({column}[0])"), format!("({column}[1])")],
                _ => vec![column],
            }
        })
        .collect();
    exprs.join(", ")
}

/// Whether rows are matched on the key (and the table needs its unique index); rows that
/// are not can be copied straight into the table.
pub fn keyed(dataset: &Dataset) -> bool {
    dataset.write_mode != WriteMode::Append && !dataset.key.is_empty()
}

/// Creates `table` as declared if it is missing, with a unique index on the key where the
/// write mode matches rows by it (NULLs equal, as the declaration's key means).
pub fn create_table(dataset: &Dataset, table: &str) -> String {
    let columns: Vec<String> = dataset
        .columns
        .iter()
        .map(|c| {
            let null = if c.nullable { "" } else { " NOT NULL" };
            format!("{} {}{null}", ident(&c.name), pg_type(c.kind))
        })
        .collect();
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS {} ({})",
        ident(table),
        columns.join(", ")
    );
    if keyed(dataset) {
        write!(
            sql,
            "; CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({}) NULLS NOT DISTINCT",
            ident(&format!("{table}_key")),
            ident(table),
            key_exprs(dataset, "")
        )
        .unwrap();
    }
    let comment = |text: &str| format!("'{}'", text.replace('\'', "''"));
    write!(
        sql,
        "; COMMENT ON TABLE {} IS {}",
        ident(table),
        comment(&dataset.description)
    )
    .unwrap();
    for c in &dataset.columns {
        let text = match (&c.description, &c.unit) {
            (Some(d), Some(u)) => format!("{d} ({u})"),
            (Some(d), None) => d.clone(),
            (None, Some(u)) => u.clone(),
            (None, None) => continue,
        };
        write!(
            sql,
            "; COMMENT ON COLUMN {}.{} IS {}",
            ident(table),
            ident(&c.name),
            comment(&text)
        )
        .unwrap();
    }
    sql
}

/// Creates the materialized view if it is missing, with its unique index (which lets the
/// load refresh it `CONCURRENTLY`).
pub fn create_view(view: &View) -> String {
    let mut sql = format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {} AS {}",
        ident(&view.name),
        view.sql.trim().trim_end_matches(';')
    );
    if !view.unique.is_empty() {
        let columns: Vec<String> = view.unique.iter().map(|c| ident(c)).collect();
        write!(
            sql,
            "; CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})",
            ident(&format!("{}_unique", view.name)),
            ident(&view.name),
            columns.join(", ")
        )
        .unwrap();
    }
    sql
}

/// Creates the staging table for one file: the table's declared columns.
///
/// Its rows are in file order: a temporary table is filled by one `COPY` into a fresh heap,
/// and its sequential scans start at its first block (PostgreSQL synchronises scans only of
/// tables in shared buffers, and runs no `INSERT` in parallel), so a scan reads the file's
/// order and `ctid` follows it; no row number is kept (a sequence per row, and a sort).
pub fn create_stage(dataset: &Dataset, table: &str) -> String {
    format!(
        "CREATE TEMP TABLE {STAGE} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA",
        column_list(dataset, ""),
        ident(table)
    )
}

/// The `COPY` of [`copy_text`] into `table` (the staging table, or the table itself).
pub fn copy_in(dataset: &Dataset, table: &str) -> String {
    format!(
        "COPY {} ({}) FROM STDIN",
        ident(table),
        column_list(dataset, "")
    )
}

/// The one statement that applies the staged rows under the declared write mode; it returns
/// the rows inserted or updated.
///
/// - `append`: every row is inserted (the load copies such rows straight in instead).
/// - `insert-ignore`: a row whose key is in the table (or earlier in the file) is dropped.
/// - `merge`: a row replaces the one with its key, the file's last for a key winning, and a
///   row equal to the one there is not rewritten (nor counted).
pub fn apply(dataset: &Dataset, table: &str) -> String {
    let columns = column_list(dataset, "");
    let staged = column_list(dataset, "s.");
    let target = ident(table);
    match dataset.write_mode {
        _ if !keyed(dataset) => {
            format!("INSERT INTO {target} ({columns}) SELECT {staged} FROM {STAGE} s")
        }
        WriteMode::Append | WriteMode::InsertIgnore => format!(
            "INSERT INTO {target} ({columns}) SELECT {staged} FROM {STAGE} s \
             ON CONFLICT ({}) DO NOTHING",
            key_exprs(dataset, "")
        ),
        WriteMode::Merge => {
            let rest: Vec<_> = dataset
                .columns
                .iter()
                .filter(|c| !dataset.key.contains(&c.name))
                .collect();
            let conflict = if rest.is_empty() {
                "DO NOTHING".to_owned()
            } else {
                // A point has no equality operator: compared as text.
                let compared = |prefix: &str| -> String {
                    let parts: Vec<String> = rest
                        .iter()
                        .map(|c| match c.kind {
                            Kind::Point => format!("{prefix}{}::text", ident(&c.name)),
                            _ => format!("{prefix}{}", ident(&c.name)),
                        })
                        .collect();
                    parts.join(", ")
                };
                let set: Vec<String> = rest
                    .iter()
                    .map(|c| format!("{0} = EXCLUDED.{0}", ident(&c.name)))
                    .collect();
                format!(
                    "DO UPDATE SET {} WHERE ROW({}) IS DISTINCT FROM ROW({})",
                    set.join(", "),
                    compared("t."),
                    compared("EXCLUDED.")
                )
            };
            format!(
                "INSERT INTO {target} AS t ({columns}) SELECT DISTINCT ON ({key}) {staged} \
                 FROM {STAGE} s ORDER BY {key}, s.ctid DESC ON CONFLICT ({}) {conflict}",
                key_exprs(dataset, ""),
                key = key_exprs(dataset, "s."),
            )
        }
    }
}

/// Appends `batch`'s rows to `out` in `COPY`'s text format, in declared column order.
pub fn copy_text(batch: &RecordBatch, out: &mut Vec<u8>) {
    let options = FormatOptions::new().with_null("\\N");
    let formatters: Vec<Option<ArrayFormatter<'_>>> = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            // Text is escaped, a point and a zoned time (which arrow's formatter would need
            // chrono-tz for, for "UTC") written here.
            DataType::Utf8 | DataType::Struct(_) | DataType::Timestamp(_, Some(_)) => None,
            _ => Some(ArrayFormatter::try_new(c.as_ref(), &options).expect("a declared type")),
        })
        .collect();
    for row in 0..batch.num_rows() {
        for (i, column) in batch.columns().iter().enumerate() {
            if i > 0 {
                out.push(b'\t');
            }
            if column.is_null(row) {
                out.extend_from_slice(b"\\N");
                continue;
            }
            match (&formatters[i], column.data_type()) {
                (Some(f), _) => write!(out, "{}", f.value(row)).expect("writing to memory"),
                (None, DataType::Utf8) => escape(column.as_string::<i32>().value(row), out),
                (None, DataType::Timestamp(_, Some(_))) => {
                    let micros = column.as_primitive::<TimestampMicrosecondType>().value(row);
                    let at = chrono::DateTime::from_timestamp_micros(micros)
                        .expect("a timestamp the reader made");
                    write!(out, "{}", at.format("%Y-%m-%d %H:%M:%S%.6f+00"))
                        .expect("writing to memory");
                }
                (None, _) => {
                    let point = column.as_struct();
                    let lon = point.column(0).as_primitive::<Float64Type>().value(row);
                    let lat = point.column(1).as_primitive::<Float64Type>().value(row);
                    write!(out, "({lon},{lat})").expect("writing to memory");
                }
            }
        }
        out.push(b'\n');
    }
}

/// `COPY ... FROM STDIN (FORMAT binary)` of the declared columns into `table`.
pub fn copy_in_binary(dataset: &Dataset, table: &str) -> String {
    format!("{} (FORMAT binary)", copy_in(dataset, table))
}

/// The binary `COPY` stream's header: what precedes the first row.
pub const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The binary `COPY` stream's trailer: what follows the last row.
pub const BINARY_TRAILER: &[u8] = &[0xff, 0xff];

/// The type names (`regtype`) a table's column may have for the binary `COPY` of a declared
/// column of `kind` to go in as it is: the ones whose binary input is the declared type's.
pub fn binary_types(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::SmallInt => &["smallint"],
        Kind::Integer => &["integer"],
        Kind::BigInt => &["bigint"],
        Kind::Decimal { .. } => &["numeric"],
        Kind::Text => &["text", "character varying"],
        Kind::Boolean => &["boolean"],
        Kind::Date => &["date"],
        Kind::Timestamp => &["timestamp without time zone"],
        Kind::TimestampTz => &["timestamp with time zone"],
        Kind::Time => &["time without time zone"],
        Kind::Point => &["point"],
    }
}

/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's).
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS as i64 * 86_400_000_000;

/// Appends `batch`'s rows to `out` in `COPY`'s binary format (between [`BINARY_HEADER`] and
/// [`BINARY_TRAILER`]), in declared column order: each value as PostgreSQL sends it, so the
/// server parses no text (a point, a timestamp, a numeric are most of a text `COPY`'s cost).
pub fn copy_binary(batch: &RecordBatch, out: &mut Vec<u8>) {
    let fields = batch.num_columns() as i16;
    for row in 0..batch.num_rows() {
        out.extend_from_slice(&fields.to_be_bytes());
        for column in batch.columns() {
            if column.is_null(row) {
                out.extend_from_slice(&(-1i32).to_be_bytes());
                continue;
            }
            let field = |out: &mut Vec<u8>, bytes: &[u8]| {
                out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                out.extend_from_slice(bytes);
            };
            match column.data_type() {
                DataType::Int16 => field(
                    out,
                    &column.as_primitive::<Int16Type>().value(row).to_be_bytes(),
                ),
                DataType::Int32 => field(
                    out,
                    &column.as_primitive::<Int32Type>().value(row).to_be_bytes(),
                ),
                DataType::Int64 => field(
                    out,
                    &column.as_primitive::<Int64Type>().value(row).to_be_bytes(),
                ),
                DataType::Boolean => field(out, &[u8::from(column.as_boolean().value(row))]),
                DataType::Utf8 => field(out, column.as_string::<i32>().value(row).as_bytes()),
                DataType::Date32 => {
                    let days = column.as_primitive::<Date32Type>().value(row) - PG_EPOCH_DAYS;
                    field(out, &days.to_be_bytes());
                }
                DataType::Timestamp(_, _) => {
                    let micros = column.as_primitive::<TimestampMicrosecondType>().value(row);
                    field(out, &(micros - PG_EPOCH_MICROS).to_be_bytes());
                }
                DataType::Time64(_) => {
                    let micros = column.as_primitive::<Time64MicrosecondType>().value(row);
                    field(out, &micros.to_be_bytes());
                }
                DataType::Decimal128(_, scale) => {
                    let unscaled = column.as_primitive::<Decimal128Type>().value(row);
                    let start = out.len();
                    out.extend_from_slice(&[0; 4]);
                    numeric(unscaled, *scale as u16, out);
                    let len = (out.len() - start - 4) as i32;
                    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
                }
                DataType::Struct(_) => {
                    let point = column.as_struct();
                    let lon = point.column(0).as_primitive::<Float64Type>().value(row);
                    let lat = point.column(1).as_primitive::<Float64Type>().value(row);
                    out.extend_from_slice(&16i32.to_be_bytes());
                    out.extend_from_slice(&lon.to_be_bytes());
                    out.extend_from_slice(&lat.to_be_bytes());
                }
                other => {
                    unreachable!("a declared type is written as one of the above, not {other}")
                }
            }
        }
    }
}

/// A numeric's binary form (`numeric_send`): the digit count, the weight of the first base
/// 10,000 digit, the sign, the display scale, then the base 10,000 digits, the decimal point
/// falling between two of them.
fn numeric(unscaled: i128, scale: u16, out: &mut Vec<u8>) {
    let sign: u16 = if unscaled < 0 { 0x4000 } else { 0 };
    let scale_digits = usize::from(scale);
    let mut text = unscaled.unsigned_abs().to_string();
    if text.len() <= scale_digits {
        text.insert_str(0, &"0".repeat(scale_digits + 1 - text.len()));
    }
    let (whole, fraction) = text.split_at(text.len() - scale_digits);
    // Both sides padded to whole base 10,000 digits: the whole part on the left, the fraction
    // on the right.
    let whole = format!("{}{whole}", "0".repeat((4 - whole.len() % 4) % 4));
    let fraction = format!("{fraction}{}", "0".repeat((4 - fraction.len() % 4) % 4));
    let group = |s: &str| -> Vec<u16> {
        s.as_bytes()
            .chunks(4)
            .map(|c| c.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')))
            .collect()
    };
    let mut digits = group(&whole);
    let mut weight = digits.len() as i16 - 1;
    digits.extend(group(&fraction));
    let leading = digits.iter().take_while(|d| **d == 0).count();
    weight -= leading as i16;
    let trailing = digits.iter().rev().take_while(|d| **d == 0).count();
    let kept = if leading == digits.len() {
        &[][..]
    } else {
        &digits[leading..digits.len() - trailing]
    };
    out.extend_from_slice(&(kept.len() as i16).to_be_bytes());
    out.extend_from_slice(&(if kept.is_empty() { 0 } else { weight }).to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&scale.to_be_bytes());
    for d in kept {
        out.extend_from_slice(&d.to_be_bytes());
    }
}

/// Text as `COPY`'s text format wants it: backslash, tab, newline and carriage return escaped.
fn escape(text: &str, out: &mut Vec<u8>) {
    for b in text.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decl::tests::trips;
    use crate::read::{BatchLimits, LandedFile};

    #[test]
    fn trips_table_and_insert_ignore_on_the_points_coordinates() {
        let t = trips();
        let create = create_table(&t, "trips");
        assert!(
            create.contains("\"origin_coord\" point NOT NULL"),
            "{create}"
        );
        assert!(
            create
                .contains("ON \"trips\" (\"region\", (\"origin_coord\"[0]), (\"origin_coord\"[1])"),
            "{create}"
        );
        assert!(create.contains("NULLS NOT DISTINCT"), "{create}");
        let apply = apply(&t, "trips");
        assert!(apply.ends_with("DO NOTHING"), "{apply}");
    }

    #[test]
    fn merge_replaces_by_the_files_last_row_and_skips_equal_ones() {
        let mut t = trips();
        t.write_mode = WriteMode::Merge;
        t.key = vec!["region".into(), "datetime".into()];
        let sql = apply(&t, "trips");
        assert!(
            sql.contains("DISTINCT ON (s.\"region\", s.\"datetime\")"),
            "{sql}"
        );
        assert!(sql.contains("s.ctid DESC"), "{sql}");
        assert!(
            sql.contains("\"origin_coord\" = EXCLUDED.\"origin_coord\""),
            "{sql}"
        );
        assert!(sql.contains("t.\"origin_coord\"::text"), "{sql}");
        t.write_mode = WriteMode::Append;
        assert!(!apply(&t, "trips").contains("ON CONFLICT"));
        assert!(!create_table(&t, "trips").contains("UNIQUE"));
    }

    /// (ndigits, weight, sign, dscale, digits) of a numeric's binary form.
    fn numeric_parts(unscaled: i128, scale: u16) -> (i16, i16, u16, u16, Vec<u16>) {
        let mut out = Vec::new();
        numeric(unscaled, scale, &mut out);
        let word = |i: usize| u16::from_be_bytes([out[2 * i], out[2 * i + 1]]);
        let n = word(0) as usize;
        (
            word(0) as i16,
            word(1) as i16,
            word(2),
            word(3),
            (0..n).map(|i| word(4 + i)).collect(),
        )
    }

    #[test]
    fn numerics_are_sent_as_postgresql_sends_them() {
        assert_eq!(numeric_parts(12345, 2), (2, 0, 0, 2, vec![123, 4500]));
        assert_eq!(numeric_parts(5, 2), (1, -1, 0, 2, vec![500]));
        assert_eq!(numeric_parts(100_000, 0), (1, 1, 0, 0, vec![10]));
        assert_eq!(numeric_parts(0, 3), (0, 0, 0, 3, vec![]));
        assert_eq!(numeric_parts(-1, 5), (1, -2, 0x4000, 5, vec![1000]));
        // 38 digits, the widest a decimal is declared.
        let widest = 10i128.pow(38) - 1;
        let (n, weight, _, _, digits) = numeric_parts(widest, 3);
        assert_eq!((n, weight, digits[0], digits[9]), (10, 8, 999, 9990));
    }

    #[test]
    fn rows_become_copy_text() {
        let t = trips();
        let csv = "region,origin_coord,destination_coord,datetime,datasource\n\
                   Prague,POINT (14.4973794438195 50.00136875782316),POINT (14.43109483523328 50.04052930943246),2018-05-28 09:03:40,tab\there\\\n";
        let mut file = LandedFile::open(csv.as_bytes(), &t, "f.csv").unwrap();
        let batch = file.next_batch(BatchLimits::default()).unwrap().unwrap();
        let mut out = Vec::new();
        copy_text(&batch.rows, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Prague\t(14.4973794438195,50.00136875782316)\t(14.43109483523328,50.04052930943246)\t\
             2018-05-28T09:03:40\ttab\\there\\\\\n"
        );
    }
}
