//! Arrow batches into a binary `COPY ... FROM STDIN`: each column is converted once per batch
//! into values `tokio_postgres` encodes, then written row by row through
//! [`BinaryCopyInWriter`].

use std::pin::Pin;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, Decimal128Type, Int32Type, Time64MicrosecondType};
use chrono::{NaiveDate, NaiveTime};
use rust_decimal::Decimal;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use utils::warehouse::{WarehouseTable, WhType};

/// The PostgreSQL type a column is sent as.
pub fn pg_type(t: WhType) -> Type {
    match t {
        WhType::Date => Type::DATE,
        WhType::Time => Type::TIME,
        WhType::Int => Type::INT4,
        WhType::Money => Type::NUMERIC,
        WhType::Varchar => Type::VARCHAR,
        WhType::Bool => Type::BOOL,
    }
}

/// The warehouse table's column types, in its column order.
pub fn pg_types(table: &WarehouseTable) -> Vec<Type> {
    table.columns.iter().map(|c| pg_type(c.wh_type)).collect()
}

/// One batch column as values ready to encode.
enum Values<'a> {
    Date(Vec<Option<NaiveDate>>),
    Time(Vec<Option<NaiveTime>>),
    Int(Vec<Option<i32>>),
    Money(Vec<Option<Decimal>>),
    Text(Vec<Option<&'a str>>),
    Bool(Vec<Option<bool>>),
}

/// Days from 0001-01-01 (chrono's day 1) to 1970-01-01 (Arrow's day 0).
const UNIX_EPOCH_FROM_CE: i32 = 719_163;

fn each<T, A: Array, F: Fn(&A, usize) -> T>(array: &A, f: F) -> Vec<Option<T>> {
    (0..array.len())
        .map(|i| (!array.is_null(i)).then(|| f(array, i)))
        .collect()
}

impl<'a> Values<'a> {
    /// The column's values; the batch was checked against the registry schema, so the
    /// Arrow type is the one `wh_type` maps to.
    fn of(array: &'a dyn Array, wh_type: WhType, scale: u32) -> Values<'a> {
        match wh_type {
            WhType::Date => Values::Date(each(array.as_primitive::<Date32Type>(), |a, i| {
                NaiveDate::from_num_days_from_ce_opt(a.value(i) + UNIX_EPOCH_FROM_CE)
                    .expect("Date32 within chrono's range")
            })),
            WhType::Time => Values::Time(each(
                array.as_primitive::<Time64MicrosecondType>(),
                |a, i| {
                    let us = a.value(i);
                    NaiveTime::from_num_seconds_from_midnight_opt(
                        (us / 1_000_000) as u32,
                        (us % 1_000_000) as u32 * 1_000,
                    )
                    .unwrap_or(NaiveTime::MIN)
                },
            )),
            WhType::Int => Values::Int(each(array.as_primitive::<Int32Type>(), |a, i| a.value(i))),
            WhType::Money => Values::Money(each(array.as_primitive::<Decimal128Type>(), |a, i| {
                Decimal::from_i128_with_scale(a.value(i), scale)
            })),
            WhType::Varchar => {
                let a = array.as_string::<i32>();
                Values::Text(a.iter().collect())
            }
            WhType::Bool => Values::Bool(array.as_boolean().iter().collect()),
        }
    }

    fn get(&self, row: usize) -> &(dyn ToSql + Sync) {
        match self {
            Values::Date(v) => &v[row],
            Values::Time(v) => &v[row],
            Values::Int(v) => &v[row],
            Values::Money(v) => &v[row],
            Values::Text(v) => &v[row],
            Values::Bool(v) => &v[row],
        }
    }
}

/// Writes every row of `batch` (in `table`'s registry schema) to the COPY.
pub async fn write_batch(
    mut writer: Pin<&mut BinaryCopyInWriter>,
    table: &WarehouseTable,
    batch: &RecordBatch,
) -> Result<(), tokio_postgres::Error> {
    let columns: Vec<Values> = table
        .columns
        .iter()
        .zip(batch.columns())
        .map(|(c, a)| Values::of(a.as_ref(), c.wh_type, utils::tables::MONEY_SCALE as u32))
        .collect();
    let mut row: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(columns.len());
    for r in 0..batch.num_rows() {
        row.clear();
        row.extend(columns.iter().map(|c| c.get(r)));
        writer.as_mut().write(&row).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date32Array, Time64MicrosecondArray};

    #[test]
    fn arrow_dates_and_times_become_chrono_values() {
        let dates = Date32Array::from(vec![Some(0), Some(20_041), None]);
        let Values::Date(d) = Values::of(&dates, WhType::Date, 0) else {
            panic!("dates")
        };
        assert_eq!(
            d,
            [
                NaiveDate::from_ymd_opt(1970, 1, 1),
                NaiveDate::from_ymd_opt(2024, 11, 14),
                None
            ]
        );
        let times = Time64MicrosecondArray::from(vec![34_205_123_456]);
        let Values::Time(t) = Values::of(&times, WhType::Time, 0) else {
            panic!("times")
        };
        assert_eq!(t, [NaiveTime::from_hms_micro_opt(9, 30, 5, 123_456)]);
    }
}
