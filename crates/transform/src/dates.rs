//! dim_date: one row per calendar date the batch's facts reference.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{Date32Array, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::Date32Type;
use arrow::error::ArrowError;
use chrono::{Datelike, NaiveDate};
use utils::warehouse::warehouse_table;

use crate::error::Result;

/// dim_date rows for `dates` (days since 1970-01-01), in date order: ISO day of week
/// (1 = Monday), English day and month names, quarter 1-4. Fact rows whose dates chrono cannot
/// name were quarantined, so none should reach here; one that does is an error, not a panic.
pub fn dim_date(dates: &BTreeSet<i32>) -> Result<RecordBatch> {
    let days: Vec<NaiveDate> = dates
        .iter()
        .map(|&d| {
            Date32Type::to_naive_date_opt(d).ok_or_else(|| {
                ArrowError::ComputeError(format!("day {d} since 1970 is not a calendar date"))
            })
        })
        .collect::<Result<_, _>>()
        .map_err(utils::Error::from)?;
    let ints =
        |f: fn(&NaiveDate) -> i32| Arc::new(Int32Array::from_iter_values(days.iter().map(f)));
    let names = |format: &'static str| {
        Arc::new(StringArray::from_iter_values(
            days.iter().map(|d| d.format(format).to_string()),
        ))
    };
    let schema = warehouse_table("dim_date")
        .expect("a registry table")
        .arrow_schema();
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Date32Array::from_iter_values(dates.iter().copied())),
            ints(|d| d.year()),
            ints(|d| d.month() as i32),
            ints(|d| d.day() as i32),
            ints(|d| d.weekday().number_from_monday() as i32),
            names("%A"),
            names("%B"),
            ints(|d| d.month0() as i32 / 3 + 1),
        ],
    )
    .map_err(utils::Error::from)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::parse_date;
    use arrow::array::AsArray;
    use arrow::datatypes::Int32Type;

    #[test]
    fn rows_carry_iso_weekday_names_and_quarter() {
        let dates: BTreeSet<i32> = ["2024-11-14", "2023-01-01", "2024-02-29", "1969-12-31"]
            .iter()
            .map(|d| parse_date(d).unwrap())
            .collect();
        let batch = dim_date(&dates).unwrap();
        let int = |c: usize| -> Vec<i32> {
            batch
                .column(c)
                .as_primitive::<Int32Type>()
                .values()
                .to_vec()
        };
        let text = |c: usize| -> Vec<String> {
            batch
                .column(c)
                .as_string::<i32>()
                .iter()
                .map(|s| s.unwrap().to_owned())
                .collect()
        };
        assert_eq!(int(1), [1969, 2023, 2024, 2024]);
        assert_eq!(int(2), [12, 1, 2, 11]);
        assert_eq!(int(3), [31, 1, 29, 14]);
        // 1969-12-31 Wednesday, 2023-01-01 Sunday, 2024-02-29 Thursday, 2024-11-14 Thursday.
        assert_eq!(int(4), [3, 7, 4, 4]);
        assert_eq!(text(5), ["Wednesday", "Sunday", "Thursday", "Thursday"]);
        assert_eq!(text(6), ["December", "January", "February", "November"]);
        assert_eq!(int(7), [4, 1, 1, 4]);
    }

    #[test]
    fn a_day_chrono_cannot_name_is_an_error_not_a_panic() {
        for day in [i32::MAX, i32::MIN, 100_000_000] {
            let e = dim_date(&BTreeSet::from([0, day])).unwrap_err();
            assert!(
                e.to_string().contains(&format!("day {day} since 1970")),
                "{e}"
            );
        }
    }
}
