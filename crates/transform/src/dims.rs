//! Dimension rows. Values come from the latest version of each source row; the joined ones
//! (dim_staff, dim_counterparty) from the current-state snapshots, so that a change to a
//! department or an address re-emits the rows built from it.
//!
//! Dimension rows are never dropped, because facts reference them. A NULL (or a missing
//! joined row) where the warehouse column is NOT NULL becomes [`PLACEHOLDER`], with a note
//! that the caller logs as a warning.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray, TimestampMillisecondArray};
use utils::warehouse::{WarehouseTable, warehouse_table};

use crate::currency::{UNKNOWN, currency_name};
use crate::error::Result;
use crate::raw::{ints, opt, texts, timestamps};

/// What a NOT NULL dimension column holds when its source value is missing: department
/// location is nullable in ToteSys, and a row must still be kept.
pub const PLACEHOLDER: &str = "Unknown";

/// A dimension's rows for this batch, and the placeholders used in them.
#[derive(Debug)]
pub struct Dim {
    pub table: &'static WarehouseTable,
    pub batch: RecordBatch,
    pub notes: Vec<String>,
}

/// Builds one dimension batch column by column, in the warehouse table's column order.
struct Builder {
    table: &'static WarehouseTable,
    columns: Vec<ArrayRef>,
    notes: Vec<String>,
    ids: Vec<i32>,
}

impl Builder {
    fn new(name: &str, ids: Vec<i32>) -> Builder {
        let table = warehouse_table(name).expect("a registry table");
        Builder {
            table,
            columns: vec![Arc::new(Int32Array::from(ids.clone()))],
            notes: Vec::new(),
            ids,
        }
    }

    fn ints(mut self, values: Vec<Option<i32>>) -> Self {
        self.columns.push(Arc::new(Int32Array::from(values)));
        self
    }

    /// A text column; a NULL in a NOT NULL column becomes the placeholder, with a note.
    fn texts(self, values: Vec<Option<&str>>) -> Self {
        self.joined_texts(values, &[])
    }

    /// A text column from a joined row; where `unjoined[i]`, row `i` has no joined row, which
    /// has its own note, so its placeholders add none.
    fn joined_texts(mut self, values: Vec<Option<&str>>, unjoined: &[bool]) -> Self {
        let column = &self.table.columns[self.columns.len()];
        let values: Vec<Option<&str>> = values
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                None if !column.nullable => {
                    if unjoined.get(i) == Some(&true) {
                        return Some(PLACEHOLDER);
                    }
                    let id = self.ids[i];
                    self.notes.push(format!(
                        "{} {id}: {} is missing; set to {PLACEHOLDER:?}",
                        self.table.name, column.name
                    ));
                    Some(PLACEHOLDER)
                }
                v => v,
            })
            .collect();
        self.columns.push(Arc::new(StringArray::from(values)));
        self
    }

    /// A version column (see [`WarehouseTable::version`]): the `last_updated` of `rows` of
    /// `batch`, NULL where a row has none (an unknown joined row).
    fn version(mut self, batch: &RecordBatch, rows: &[Option<usize>]) -> Self {
        let values = timestamps(batch, utils::tables::LAST_UPDATED);
        let versions: Vec<Option<i64>> = rows
            .iter()
            .map(|r| r.and_then(|r| opt(values, r)))
            .collect();
        self.columns
            .push(Arc::new(TimestampMillisecondArray::from(versions)));
        self
    }

    fn build(self) -> Result<Dim> {
        let batch = RecordBatch::try_new(self.table.arrow_schema(), self.columns)
            .map_err(utils::Error::from)?;
        Ok(Dim {
            table: self.table,
            batch,
            notes: self.notes,
        })
    }
}

/// Rows of `current` (sorted by `key`) whose key is in `wanted`.
fn select(current: &RecordBatch, key: &str, wanted: &BTreeSet<i32>) -> Vec<usize> {
    let ids = ints(current, key);
    (0..current.num_rows())
        .filter(|&r| wanted.contains(&ids.value(r)))
        .collect()
}

fn index(current: &RecordBatch, key: &str) -> HashMap<i32, usize> {
    let ids = ints(current, key);
    (0..current.num_rows()).map(|r| (ids.value(r), r)).collect()
}

fn text_of<'a>(
    batch: &'a RecordBatch,
    column: &str,
    rows: &[Option<usize>],
) -> Vec<Option<&'a str>> {
    let values = texts(batch, column);
    rows.iter()
        .map(|r| r.and_then(|r| opt(values, r)))
        .collect()
}

fn ids_of(batch: &RecordBatch, key: &str, rows: &[usize]) -> Vec<i32> {
    let ids = ints(batch, key);
    rows.iter().map(|&r| ids.value(r)).collect()
}

/// The rows of a dimension's main table to emit, joined to the table it references.
struct Join {
    /// Rows of the main table, in key order.
    rows: Vec<Option<usize>>,
    ids: Vec<i32>,
    /// The referenced row of each, `None` when the reference is NULL or unknown.
    joined: Vec<Option<usize>>,
    unjoined: Vec<bool>,
    /// One note per unknown reference.
    missing: Vec<String>,
}

/// A table of a join: its rows, the key column, and the keys whose rows are wanted (for the
/// referenced table: the keys whose referencing rows are wanted).
struct Side<'a> {
    rows: &'a RecordBatch,
    key: &'a str,
    ids: &'a BTreeSet<i32>,
}

/// Joins the rows of `main` whose key is in its `ids`, or whose reference `foreign` is in
/// `other`'s `ids`, to the rows of `other`.
fn join(dim: &str, main: Side<'_>, foreign: &str, other: Side<'_>) -> Join {
    let Side {
        rows: main,
        key,
        ids,
    } = main;
    let Side {
        rows: other,
        key: other_key,
        ids: joined_ids,
    } = other;
    let keys = ints(main, key);
    let refs = ints(main, foreign);
    let rows: Vec<usize> = (0..main.num_rows())
        .filter(|&r| {
            ids.contains(&keys.value(r)) || opt(refs, r).is_some_and(|d| joined_ids.contains(&d))
        })
        .collect();
    let by_id = index(other, other_key);
    let ids = ids_of(main, key, &rows);
    let mut missing = Vec::new();
    let joined: Vec<Option<usize>> = rows
        .iter()
        .zip(&ids)
        .map(|(&r, id)| {
            let found = opt(refs, r).and_then(|d| by_id.get(&d).copied());
            if found.is_none() {
                missing.push(format!(
                    "{dim} {id}: {foreign} {} is not known; the columns taken from it are set \
                     to {PLACEHOLDER:?} where NOT NULL",
                    opt(refs, r).map_or("NULL".to_owned(), |d| d.to_string())
                ));
            }
            found
        })
        .collect();
    Join {
        rows: rows.into_iter().map(Some).collect(),
        ids,
        unjoined: joined.iter().map(Option::is_none).collect(),
        joined,
        missing,
    }
}

/// dim_staff for every member of staff in `staff_ids` or in a department in `department_ids`,
/// from the current staff and department tables.
pub fn dim_staff(
    staff: &RecordBatch,
    departments: &RecordBatch,
    staff_ids: &BTreeSet<i32>,
    department_ids: &BTreeSet<i32>,
) -> Result<Dim> {
    let j = join(
        "dim_staff",
        Side {
            rows: staff,
            key: "staff_id",
            ids: staff_ids,
        },
        "department_id",
        Side {
            rows: departments,
            key: "department_id",
            ids: department_ids,
        },
    );
    let mut builder = Builder::new("dim_staff", j.ids)
        .texts(text_of(staff, "first_name", &j.rows))
        .texts(text_of(staff, "last_name", &j.rows))
        .joined_texts(
            text_of(departments, "department_name", &j.joined),
            &j.unjoined,
        )
        .joined_texts(text_of(departments, "location", &j.joined), &j.unjoined)
        .texts(text_of(staff, "email_address", &j.rows))
        .version(staff, &j.rows)
        .version(departments, &j.joined);
    builder.notes.extend(j.missing);
    builder.build()
}

/// The address columns dim_location and dim_counterparty copy, in the warehouse's order.
const ADDRESS_COLUMNS: [&str; 7] = [
    "address_line_1",
    "address_line_2",
    "district",
    "city",
    "postal_code",
    "country",
    "phone",
];

/// dim_location for the addresses in `address_ids`, from the current address table.
pub fn dim_location(addresses: &RecordBatch, address_ids: &BTreeSet<i32>) -> Result<Dim> {
    let selected = select(addresses, "address_id", address_ids);
    let rows: Vec<Option<usize>> = selected.iter().map(|&r| Some(r)).collect();
    let mut b = Builder::new("dim_location", ids_of(addresses, "address_id", &selected));
    for column in ADDRESS_COLUMNS {
        b = b.texts(text_of(addresses, column, &rows));
    }
    b.version(addresses, &rows).build()
}

/// dim_counterparty for every counterparty in `counterparty_ids` or whose legal address is in
/// `address_ids`, from the current counterparty and address tables.
pub fn dim_counterparty(
    counterparties: &RecordBatch,
    addresses: &RecordBatch,
    counterparty_ids: &BTreeSet<i32>,
    address_ids: &BTreeSet<i32>,
) -> Result<Dim> {
    let j = join(
        "dim_counterparty",
        Side {
            rows: counterparties,
            key: "counterparty_id",
            ids: counterparty_ids,
        },
        "legal_address_id",
        Side {
            rows: addresses,
            key: "address_id",
            ids: address_ids,
        },
    );
    let mut b = Builder::new("dim_counterparty", j.ids).texts(text_of(
        counterparties,
        "counterparty_legal_name",
        &j.rows,
    ));
    for column in ADDRESS_COLUMNS {
        b = b.joined_texts(text_of(addresses, column, &j.joined), &j.unjoined);
    }
    b = b
        .version(counterparties, &j.rows)
        .version(addresses, &j.joined);
    b.notes.extend(j.missing);
    b.build()
}

/// dim_currency from the latest currency rows, named from ISO 4217.
pub fn dim_currency(currencies: &RecordBatch) -> Result<Dim> {
    let ids = ints(currencies, "currency_id");
    let codes = texts(currencies, "currency_code");
    let mut unknown = Vec::new();
    let names: Vec<Option<&str>> = (0..currencies.num_rows())
        .map(|r| {
            let code = opt(codes, r);
            Some(code.and_then(currency_name).unwrap_or_else(|| {
                unknown.push(format!(
                    "dim_currency {}: code {code:?} is not in ISO 4217; its name is set to \
                     {UNKNOWN:?}",
                    ids.value(r)
                ));
                UNKNOWN
            }))
        })
        .collect();
    let mut b = copied(
        "dim_currency",
        currencies,
        "currency_id",
        &["currency_code"],
    )
    .texts(names)
    .version(currencies, &every_row(currencies));
    b.notes.extend(unknown);
    b.build()
}

fn every_row(batch: &RecordBatch) -> Vec<Option<usize>> {
    (0..batch.num_rows()).map(Some).collect()
}

/// A dimension that copies text columns of one source table, row for row (its version is
/// for the caller to add, after any columns of its own).
fn copied(name: &str, source: &RecordBatch, key: &str, columns: &[&str]) -> Builder {
    let all: Vec<usize> = (0..source.num_rows()).collect();
    let rows = every_row(source);
    columns
        .iter()
        .fold(Builder::new(name, ids_of(source, key, &all)), |b, c| {
            b.texts(text_of(source, c, &rows))
        })
}

pub fn dim_design(designs: &RecordBatch) -> Result<Dim> {
    copied(
        "dim_design",
        designs,
        "design_id",
        &["design_name", "file_location", "file_name"],
    )
    .version(designs, &every_row(designs))
    .build()
}

pub fn dim_payment_type(payment_types: &RecordBatch) -> Result<Dim> {
    copied(
        "dim_payment_type",
        payment_types,
        "payment_type_id",
        &["payment_type_name"],
    )
    .version(payment_types, &every_row(payment_types))
    .build()
}

pub fn dim_transaction(transactions: &RecordBatch) -> Result<Dim> {
    let sales = ints(transactions, "sales_order_id");
    let purchases = ints(transactions, "purchase_order_id");
    let rows = 0..transactions.num_rows();
    copied(
        "dim_transaction",
        transactions,
        "transaction_id",
        &["transaction_type"],
    )
    .ints(rows.clone().map(|r| opt(sales, r)).collect())
    .ints(rows.map(|r| opt(purchases, r)).collect())
    .version(transactions, &every_row(transactions))
    .build()
}
