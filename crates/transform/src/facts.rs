//! Fact rows: one per source version, streamed batch by batch. A row that cannot become a
//! valid warehouse row (an unparseable date text, a NULL where the warehouse column is NOT
//! NULL) is set aside with its original values and the reason, and the rest go on.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, RecordBatch, StringArray, Time64MicrosecondArray,
};
use arrow::compute::kernels::arity::{try_unary, unary};
use arrow::compute::{filter, filter_record_batch, not};
use arrow::datatypes::{DataType, Date32Type, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use chrono::NaiveDate;
use utils::tables::TableSpec;
use utils::warehouse::WarehouseTable;

use crate::error::Result;
use crate::raw::{relaxed_schema, texts, timestamps};

const MS_PER_DAY: i64 = 86_400_000;

/// Where a fact column's values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    /// The source column as it is.
    Same(&'static str),
    /// The date part of a `timestamp(3)` column.
    DateOf(&'static str),
    /// The time-of-day part of a `timestamp(3)` column.
    TimeOf(&'static str),
    /// A 'YYYY-MM-DD' text column parsed to a date.
    ParsedDate(&'static str),
}

impl Col {
    pub fn source(self) -> &'static str {
        match self {
            Col::Same(c) | Col::DateOf(c) | Col::TimeOf(c) | Col::ParsedDate(c) => c,
        }
    }
}

/// How one source table becomes one fact table: its columns, in the warehouse's order.
#[derive(Debug, PartialEq, Eq)]
pub struct FactSpec {
    pub source: &'static str,
    pub target: &'static str,
    pub columns: &'static [Col],
}

use Col::{DateOf, ParsedDate, Same, TimeOf};

/// The three facts, as shared/totesys/README.md maps them.
pub static FACTS: &[FactSpec] = &[
    FactSpec {
        source: "sales_order",
        target: "fact_sales_order",
        columns: &[
            Same("sales_order_id"),
            DateOf("created_at"),
            TimeOf("created_at"),
            DateOf("last_updated"),
            TimeOf("last_updated"),
            Same("staff_id"),
            Same("counterparty_id"),
            Same("units_sold"),
            Same("unit_price"),
            Same("currency_id"),
            Same("design_id"),
            ParsedDate("agreed_payment_date"),
            ParsedDate("agreed_delivery_date"),
            Same("agreed_delivery_location_id"),
        ],
    },
    FactSpec {
        source: "purchase_order",
        target: "fact_purchase_order",
        columns: &[
            Same("purchase_order_id"),
            DateOf("created_at"),
            TimeOf("created_at"),
            DateOf("last_updated"),
            TimeOf("last_updated"),
            Same("staff_id"),
            Same("counterparty_id"),
            Same("item_code"),
            Same("item_quantity"),
            Same("item_unit_price"),
            Same("currency_id"),
            ParsedDate("agreed_delivery_date"),
            ParsedDate("agreed_payment_date"),
            Same("agreed_delivery_location_id"),
        ],
    },
    FactSpec {
        source: "payment",
        target: "fact_payment",
        columns: &[
            Same("payment_id"),
            DateOf("created_at"),
            TimeOf("created_at"),
            DateOf("last_updated"),
            TimeOf("last_updated"),
            Same("transaction_id"),
            Same("counterparty_id"),
            Same("payment_amount"),
            Same("currency_id"),
            Same("payment_type_id"),
            Same("paid"),
            ParsedDate("payment_date"),
        ],
    },
];

/// The schema of a quarantine file: the source row as it arrived, and why it was set aside.
pub fn quarantine_schema(table: &TableSpec) -> SchemaRef {
    let mut fields: Vec<Field> = relaxed_schema(table)
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("reason", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// What one batch of source rows became.
#[derive(Debug)]
pub struct FactBatch {
    /// Valid rows, in the warehouse table's schema.
    pub rows: RecordBatch,
    /// Rows set aside, in [`quarantine_schema`]; `None` when every row was valid.
    pub quarantined: Option<RecordBatch>,
}

/// A strict 'YYYY-MM-DD' (exactly that shape, a real calendar date) as days since 1970-01-01.
pub fn parse_date(text: &str) -> Option<i32> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(number(0..4)?).ok()?,
        number(5..7)?,
        number(8..10)?,
    )?;
    Some(days_since_epoch(date))
}

pub fn days_since_epoch(date: NaiveDate) -> i32 {
    Date32Type::from_naive_date(date)
}

/// The day (since 1970-01-01) of a timestamp in milliseconds, if it is one the calendar can
/// name: PostgreSQL's timestamps reach the year 294276, chrono's dates (and dim_date's names)
/// the year 262143.
fn day_of(ms: i64) -> Option<i32> {
    i32::try_from(ms.div_euclid(MS_PER_DAY))
        .ok()
        .filter(|&day| Date32Type::to_naive_date_opt(day).is_some())
}

/// Turns one batch of `spec.source` rows (relaxed schema) into fact rows and quarantined rows,
/// and adds every date the fact rows reference to `dates`.
pub fn transform_batch(
    spec: &FactSpec,
    target: &WarehouseTable,
    batch: &RecordBatch,
    dates: &mut BTreeSet<i32>,
) -> Result<FactBatch> {
    let n = batch.num_rows();
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); n];
    let mut checked: Vec<&str> = Vec::new();
    let mut parsed: Vec<(&str, Vec<i32>)> = Vec::new();
    for from in spec.columns {
        let name = from.source();
        if !checked.contains(&name) {
            checked.push(name);
            let column = batch
                .column_by_name(name)
                .expect("checked against the registry");
            if column.null_count() > 0 {
                for (row, reason) in reasons.iter_mut().enumerate() {
                    if column.is_null(row) {
                        reason.push(format!(
                            "{name}: NULL where the warehouse column is NOT NULL"
                        ));
                    }
                }
            }
            if let DateOf(_) | TimeOf(_) = *from {
                let stamps = timestamps(batch, name);
                for (row, reason) in reasons.iter_mut().enumerate() {
                    if stamps.is_valid(row) && day_of(stamps.value(row)).is_none() {
                        reason.push(format!(
                            "{name}: {} ms after 1970 is past the dates the warehouse's calendar \
                             can name (years -262143 to 262143)",
                            stamps.value(row)
                        ));
                    }
                }
            }
        }
        if let ParsedDate(name) = *from {
            let text = texts(batch, name);
            let days = (0..n)
                .map(|row| {
                    if text.is_null(row) {
                        return 0;
                    }
                    parse_date(text.value(row)).unwrap_or_else(|| {
                        reasons[row].push(format!(
                            "{name}: {:?} is not a date in the form YYYY-MM-DD",
                            text.value(row)
                        ));
                        0
                    })
                })
                .collect();
            parsed.push((name, days));
        }
    }
    let valid = BooleanArray::from_iter(reasons.iter().map(|r| Some(r.is_empty())));
    let all_valid = valid.true_count() == n;
    let source = if all_valid {
        batch.clone()
    } else {
        filter_record_batch(batch, &valid).map_err(utils::Error::from)?
    };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(spec.columns.len());
    for from in spec.columns {
        let column: ArrayRef = match *from {
            Same(c) => source.column_by_name(c).expect("checked").clone(),
            DateOf(c) => {
                // Rows whose day is out of range were set aside above.
                let days: Date32Array = try_unary(timestamps(&source, c), |ms| {
                    day_of(ms).ok_or_else(|| {
                        ArrowError::ComputeError(format!("{c}: {ms} ms is not a calendar day"))
                    })
                })
                .map_err(utils::Error::from)?;
                dates.extend(days.values().iter().copied());
                Arc::new(days)
            }
            TimeOf(c) => {
                let micros: Time64MicrosecondArray = unary(timestamps(&source, c), |ms| {
                    ms.rem_euclid(MS_PER_DAY) * 1000
                });
                Arc::new(micros)
            }
            ParsedDate(c) => {
                let (_, days) = parsed.iter().find(|(name, _)| *name == c).expect("parsed");
                let all = Date32Array::from(days.clone());
                let days = if all_valid {
                    all
                } else {
                    filter(&all, &valid)
                        .map_err(utils::Error::from)?
                        .as_any()
                        .downcast_ref::<Date32Array>()
                        .expect("a date array")
                        .clone()
                };
                dates.extend(days.values().iter().copied());
                Arc::new(days)
            }
        };
        columns.push(column);
    }
    let rows = RecordBatch::try_new(target.arrow_schema(), columns).map_err(utils::Error::from)?;
    let quarantined = if all_valid {
        None
    } else {
        let invalid = not(&valid).map_err(utils::Error::from)?;
        let set_aside = filter_record_batch(batch, &invalid).map_err(utils::Error::from)?;
        let reason: StringArray = reasons
            .iter()
            .filter(|r| !r.is_empty())
            .map(|r| Some(r.join("; ")))
            .collect();
        let mut columns = set_aside.columns().to_vec();
        columns.push(Arc::new(reason));
        let table = utils::tables::table(spec.source)?;
        Some(RecordBatch::try_new(quarantine_schema(table), columns).map_err(utils::Error::from)?)
    };
    Ok(FactBatch { rows, quarantined })
}

#[cfg(test)]
mod tests {
    use super::*;
    use utils::warehouse::warehouse_table;

    #[test]
    fn every_fact_column_is_the_warehouse_column_in_order() {
        for spec in FACTS {
            let warehouse = warehouse_table(spec.target).unwrap();
            assert_eq!(
                spec.columns.len(),
                warehouse.columns.len(),
                "{}",
                spec.target
            );
            let source = utils::tables::table(spec.source).unwrap();
            for (from, column) in spec.columns.iter().zip(warehouse.columns) {
                assert!(source.column(from.source()).is_some(), "{from:?}");
                let direct = matches!(from, Same(c) if *c == column.name
                    || (*c == "staff_id" && column.name == "sales_staff_id"));
                let derived = !matches!(from, Same(_));
                assert!(direct || derived, "{} <- {from:?}", column.name);
            }
        }
    }

    #[test]
    fn dates_parse_strictly() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2024-11-14"), Some(20_041));
        assert_eq!(parse_date("2024-02-29"), Some(19_782));
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-1-05",
            "2024/01/05",
            "24-01-05",
            "2024-01-05 ",
            " 2024-01-05",
            "2024-01-0x",
            "",
            "+024-01-05",
            "2024-00-10",
        ] {
            assert_eq!(parse_date(bad), None, "{bad:?}");
        }
    }
}
