//! Arrow batches into a binary `COPY ... FROM STDIN`: each column is converted once per batch
//! into values `tokio_postgres` encodes, then written row by row through
//! [`BinaryCopyInWriter`].

use std::pin::Pin;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    Date32Type, Decimal128Type, Int32Type, Time64MicrosecondType, TimestampMillisecondType,
};
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use rust_decimal::Decimal;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use utils::tables::{MONEY_PRECISION, MONEY_SCALE};
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
        WhType::Timestamp => Type::TIMESTAMP,
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
    Timestamp(Vec<Option<NaiveDateTime>>),
}

/// The values of `array` through `f`, NULLs kept; the first value `f` refuses is an error
/// naming its row.
fn each<T, A: Array, F: Fn(&A, usize) -> Option<T>>(
    array: &A,
    what: &str,
    f: F,
) -> Result<Vec<Option<T>>, String> {
    (0..array.len())
        .map(|i| {
            if array.is_null(i) {
                return Ok(None);
            }
            f(array, i)
                .map(Some)
                .ok_or_else(|| format!("row {}: {what}", i + 1))
        })
        .collect()
}

impl<'a> Values<'a> {
    /// The column's values; the batch was checked against the registry schema, so the
    /// Arrow type is the one `wh_type` maps to. A value PostgreSQL's type cannot hold is an
    /// error naming the row.
    fn of(array: &'a dyn Array, wh_type: WhType, scale: u32) -> Result<Values<'a>, String> {
        Ok(match wh_type {
            WhType::Date => Values::Date(each(
                array.as_primitive::<Date32Type>(),
                "a date outside the calendar",
                |a, i| Date32Type::to_naive_date_opt(a.value(i)),
            )?),
            WhType::Time => Values::Time(each(
                array.as_primitive::<Time64MicrosecondType>(),
                "a time of day outside 00:00:00 to 23:59:59.999999",
                |a, i| {
                    let us = u64::try_from(a.value(i)).ok()?;
                    NaiveTime::from_num_seconds_from_midnight_opt(
                        u32::try_from(us / 1_000_000).ok()?,
                        (us % 1_000_000) as u32 * 1_000,
                    )
                },
            )?),
            WhType::Int => Values::Int(each(array.as_primitive::<Int32Type>(), "", |a, i| {
                Some(a.value(i))
            })?),
            WhType::Money => Values::Money(each(
                array.as_primitive::<Decimal128Type>(),
                &format!("an amount outside numeric({MONEY_PRECISION},{MONEY_SCALE})"),
                |a, i| {
                    // Arrow does not hold a Decimal128 to its precision; numeric(10,2) does.
                    let unscaled = a.value(i);
                    (unscaled.unsigned_abs() < 10u128.pow(MONEY_PRECISION.into()))
                        .then(|| Decimal::try_from_i128_with_scale(unscaled, scale).ok())
                        .flatten()
                },
            )?),
            WhType::Varchar => Values::Text(array.as_string::<i32>().iter().collect()),
            WhType::Bool => Values::Bool(array.as_boolean().iter().collect()),
            WhType::Timestamp => Values::Timestamp(each(
                array.as_primitive::<TimestampMillisecondType>(),
                "a timestamp outside the calendar",
                |a, i| chrono::DateTime::from_timestamp_millis(a.value(i)).map(|t| t.naive_utc()),
            )?),
        })
    }

    fn get(&self, row: usize) -> &(dyn ToSql + Sync) {
        match self {
            Values::Date(v) => &v[row],
            Values::Time(v) => &v[row],
            Values::Int(v) => &v[row],
            Values::Money(v) => &v[row],
            Values::Text(v) => &v[row],
            Values::Bool(v) => &v[row],
            Values::Timestamp(v) => &v[row],
        }
    }
}

/// Why a batch could not be written.
pub enum CopyError {
    /// A value the column's PostgreSQL type cannot hold.
    Value(String),
    Database(tokio_postgres::Error),
}

/// Writes every row of `batch` (in `table`'s registry schema) to the COPY.
pub async fn write_batch(
    mut writer: Pin<&mut BinaryCopyInWriter>,
    table: &WarehouseTable,
    batch: &RecordBatch,
) -> Result<(), CopyError> {
    let columns: Vec<Values> = table
        .columns
        .iter()
        .zip(batch.columns())
        .map(|(c, a)| {
            Values::of(a.as_ref(), c.wh_type, MONEY_SCALE.unsigned_abs().into())
                .map_err(|e| CopyError::Value(format!("column {}, {e}", c.name)))
        })
        .collect::<Result<_, _>>()?;
    let mut row: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(columns.len());
    for r in 0..batch.num_rows() {
        row.clear();
        row.extend(columns.iter().map(|c| c.get(r)));
        writer
            .as_mut()
            .write(&row)
            .await
            .map_err(CopyError::Database)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date32Array, Decimal128Array, Time64MicrosecondArray};

    #[test]
    fn arrow_dates_and_times_become_chrono_values() {
        let dates = Date32Array::from(vec![Some(0), Some(20_041), None]);
        let Ok(Values::Date(d)) = Values::of(&dates, WhType::Date, 0) else {
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
        let Ok(Values::Time(t)) = Values::of(&times, WhType::Time, 0) else {
            panic!("times")
        };
        assert_eq!(t, [NaiveTime::from_hms_micro_opt(9, 30, 5, 123_456)]);
    }

    #[test]
    fn values_postgresql_cannot_hold_name_their_row() {
        let times = Time64MicrosecondArray::from(vec![Some(0), None, Some(86_400_000_000)]);
        let Err(e) = Values::of(&times, WhType::Time, 0) else {
            panic!("24:00 is refused")
        };
        assert_eq!(
            e,
            "row 3: a time of day outside 00:00:00 to 23:59:59.999999"
        );
        let times = Time64MicrosecondArray::from(vec![-1]);
        assert!(Values::of(&times, WhType::Time, 0).is_err());
        let dates = Date32Array::from(vec![i32::MAX]);
        assert!(Values::of(&dates, WhType::Date, 0).is_err());
    }

    #[test]
    fn amounts_numeric_10_2_cannot_hold_name_their_row_and_never_panic() {
        let amounts = |values: Vec<i128>| {
            Decimal128Array::from(values)
                .with_precision_and_scale(38, 2)
                .unwrap()
        };
        let Ok(Values::Money(m)) =
            Values::of(&amounts(vec![-9_999_999_999, 12_345]), WhType::Money, 2)
        else {
            panic!("amounts within numeric(10,2)")
        };
        assert_eq!(
            m,
            [
                Some(Decimal::new(-9_999_999_999, 2)),
                Some(Decimal::new(12_345, 2))
            ]
        );
        // One more digit than numeric(10,2) has; and past rust_decimal's 96 bits, which
        // Decimal::from_i128_with_scale would panic on.
        for too_large in [10_000_000_000, i128::MAX, i128::MIN] {
            let Err(e) = Values::of(&amounts(vec![1, too_large]), WhType::Money, 2) else {
                panic!("{too_large} is refused")
            };
            assert_eq!(e, "row 2: an amount outside numeric(10,2)");
        }
    }
}
