//! The registry of warehouse tables (`sql/warehouse_schema.sql`): what transform writes and
//! load reads. Facts leave out their `*_record_id` serial, which is the warehouse's own.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::keys::parse_file_key;
use crate::tables::{MONEY_PRECISION, MONEY_SCALE};

/// The load ledger: one row per processed file applied, written in the same transaction as
/// the file's rows (the load creates it; `etl status` reads it).
pub const LEDGER: &str = "totesys_load_ledger";

/// The PostgreSQL type of a warehouse column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhType {
    Date,
    Time,
    Int,
    Money,
    Varchar,
    Bool,
    /// A source `last_updated`, in a dimension: the row's version (see
    /// [`WarehouseTable::version`]).
    Timestamp,
}

impl WhType {
    /// The type as PostgreSQL's `format_type` spells it.
    pub fn sql_name(self) -> String {
        match self {
            WhType::Date => "date".into(),
            WhType::Time => "time without time zone".into(),
            WhType::Int => "integer".into(),
            WhType::Money => format!("numeric({MONEY_PRECISION},{MONEY_SCALE})"),
            WhType::Varchar => "character varying".into(),
            WhType::Bool => "boolean".into(),
            WhType::Timestamp => "timestamp(3) without time zone".into(),
        }
    }

    pub fn arrow_type(self) -> DataType {
        match self {
            WhType::Date => DataType::Date32,
            WhType::Time => DataType::Time64(TimeUnit::Microsecond),
            WhType::Int => DataType::Int32,
            WhType::Money => DataType::Decimal128(MONEY_PRECISION, MONEY_SCALE),
            WhType::Varchar => DataType::Utf8,
            WhType::Bool => DataType::Boolean,
            WhType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, None),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WhColumn {
    pub name: &'static str,
    pub wh_type: WhType,
    pub nullable: bool,
}

/// How a table is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Latest version per key: upserted.
    Dimension,
    /// One row per source version: inserted once per version key.
    Fact,
}

#[derive(Debug, PartialEq, Eq)]
pub struct WarehouseTable {
    pub name: &'static str,
    pub kind: Kind,
    /// The primary key of a dimension, the unique version key of a fact.
    pub key: &'static [&'static str],
    pub columns: &'static [WhColumn],
}

impl fmt::Display for WarehouseTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

const fn c(name: &'static str, wh_type: WhType) -> WhColumn {
    WhColumn {
        name,
        wh_type,
        nullable: false,
    }
}

const fn n(name: &'static str, wh_type: WhType) -> WhColumn {
    WhColumn {
        name,
        wh_type,
        nullable: true,
    }
}

use WhType::{Bool, Date, Int, Money, Time, Timestamp, Varchar};

/// Every warehouse table, dimensions before the facts that reference them.
pub static WAREHOUSE_TABLES: &[WarehouseTable] = &[
    WarehouseTable {
        name: "dim_date",
        kind: Kind::Dimension,
        key: &["date_id"],
        columns: &[
            c("date_id", Date),
            c("year", Int),
            c("month", Int),
            c("day", Int),
            c("day_of_week", Int),
            c("day_name", Varchar),
            c("month_name", Varchar),
            c("quarter", Int),
        ],
    },
    WarehouseTable {
        name: "dim_staff",
        kind: Kind::Dimension,
        key: &["staff_id"],
        columns: &[
            c("staff_id", Int),
            c("first_name", Varchar),
            c("last_name", Varchar),
            c("department_name", Varchar),
            c("location", Varchar),
            c("email_address", Varchar),
            n("last_updated", Timestamp),
            n("department_last_updated", Timestamp),
        ],
    },
    WarehouseTable {
        name: "dim_location",
        kind: Kind::Dimension,
        key: &["location_id"],
        columns: &[
            c("location_id", Int),
            c("address_line_1", Varchar),
            n("address_line_2", Varchar),
            n("district", Varchar),
            c("city", Varchar),
            c("postal_code", Varchar),
            c("country", Varchar),
            c("phone", Varchar),
            n("last_updated", Timestamp),
        ],
    },
    WarehouseTable {
        name: "dim_currency",
        kind: Kind::Dimension,
        key: &["currency_id"],
        columns: &[
            c("currency_id", Int),
            c("currency_code", Varchar),
            c("currency_name", Varchar),
            n("last_updated", Timestamp),
        ],
    },
    WarehouseTable {
        name: "dim_design",
        kind: Kind::Dimension,
        key: &["design_id"],
        columns: &[
            c("design_id", Int),
            c("design_name", Varchar),
            c("file_location", Varchar),
            c("file_name", Varchar),
            n("last_updated", Timestamp),
        ],
    },
    WarehouseTable {
        name: "dim_counterparty",
        kind: Kind::Dimension,
        key: &["counterparty_id"],
        columns: &[
            c("counterparty_id", Int),
            c("counterparty_legal_name", Varchar),
            c("counterparty_legal_address_line_1", Varchar),
            n("counterparty_legal_address_line_2", Varchar),
            n("counterparty_legal_district", Varchar),
            c("counterparty_legal_city", Varchar),
            c("counterparty_legal_postal_code", Varchar),
            c("counterparty_legal_country", Varchar),
            c("counterparty_legal_phone_number", Varchar),
            n("last_updated", Timestamp),
            n("legal_address_last_updated", Timestamp),
        ],
    },
    WarehouseTable {
        name: "dim_payment_type",
        kind: Kind::Dimension,
        key: &["payment_type_id"],
        columns: &[
            c("payment_type_id", Int),
            c("payment_type_name", Varchar),
            n("last_updated", Timestamp),
        ],
    },
    WarehouseTable {
        name: "dim_transaction",
        kind: Kind::Dimension,
        key: &["transaction_id"],
        columns: &[
            c("transaction_id", Int),
            c("transaction_type", Varchar),
            n("sales_order_id", Int),
            n("purchase_order_id", Int),
            n("last_updated", Timestamp),
        ],
    },
    WarehouseTable {
        name: "fact_sales_order",
        kind: Kind::Fact,
        key: &["sales_order_id", "last_updated_date", "last_updated_time"],
        columns: &[
            c("sales_order_id", Int),
            c("created_date", Date),
            c("created_time", Time),
            c("last_updated_date", Date),
            c("last_updated_time", Time),
            c("sales_staff_id", Int),
            c("counterparty_id", Int),
            c("units_sold", Int),
            c("unit_price", Money),
            c("currency_id", Int),
            c("design_id", Int),
            c("agreed_payment_date", Date),
            c("agreed_delivery_date", Date),
            c("agreed_delivery_location_id", Int),
        ],
    },
    WarehouseTable {
        name: "fact_purchase_order",
        kind: Kind::Fact,
        key: &[
            "purchase_order_id",
            "last_updated_date",
            "last_updated_time",
        ],
        columns: &[
            c("purchase_order_id", Int),
            c("created_date", Date),
            c("created_time", Time),
            c("last_updated_date", Date),
            c("last_updated_time", Time),
            c("staff_id", Int),
            c("counterparty_id", Int),
            c("item_code", Varchar),
            c("item_quantity", Int),
            c("item_unit_price", Money),
            c("currency_id", Int),
            c("agreed_delivery_date", Date),
            c("agreed_payment_date", Date),
            c("agreed_delivery_location_id", Int),
        ],
    },
    WarehouseTable {
        name: "fact_payment",
        kind: Kind::Fact,
        key: &["payment_id", "last_updated_date", "last_updated_time"],
        columns: &[
            c("payment_id", Int),
            c("created_date", Date),
            c("created_time", Time),
            c("last_updated_date", Date),
            c("last_updated_time", Time),
            c("transaction_id", Int),
            c("counterparty_id", Int),
            c("payment_amount", Money),
            c("currency_id", Int),
            c("payment_type_id", Int),
            c("paid", Bool),
            c("payment_date", Date),
        ],
    },
];

/// Looks a warehouse table up by name.
pub fn warehouse_table(name: &str) -> Result<&'static WarehouseTable> {
    WAREHOUSE_TABLES
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| Error::UnknownTable(name.to_owned()))
}

/// The warehouse table and time of a processed data key (`<table>/YYYY/MM/DD/HHMMSSffffff[-
/// sources].parquet`), or `None` for any other key (quarantine, state, a stray object).
pub fn processed_file(key: &str) -> Option<(&'static WarehouseTable, DateTime<Utc>)> {
    WAREHOUSE_TABLES
        .iter()
        .find_map(|t| parse_file_key(t.name, key, "parquet").map(|at| (t, at)))
}

impl WarehouseTable {
    /// A dimension row's version: the source `last_updated` of the row it copies, then of the
    /// row it joins (dim_staff's department, dim_counterparty's legal address), compared in
    /// that order. The load updates a row only with a version not older than the one it
    /// holds, so files applied in any order leave the newest; the join's own version decides
    /// only between two of the same main row's version, which join the same row. Empty for
    /// dim_date, whose rows are a function of their key, and for the facts.
    pub fn version(&self) -> impl Iterator<Item = &WhColumn> {
        self.columns
            .iter()
            .filter(move |c| self.kind == Kind::Dimension && c.wh_type == Timestamp)
    }

    /// Arrow schema of the processed zone's Parquet; each field records its warehouse type
    /// under the `pg_type` metadata key.
    pub fn arrow_schema(&self) -> Arc<Schema> {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| {
                Field::new(c.name, c.wh_type.arrow_type(), c.nullable).with_metadata(HashMap::from(
                    [("pg_type".to_owned(), c.wh_type.sql_name())],
                ))
            })
            .collect();
        Arc::new(Schema::new(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_dimensions_come_before_three_facts() {
        let names: Vec<&str> = WAREHOUSE_TABLES.iter().map(|t| t.name).collect();
        assert_eq!(
            names,
            [
                "dim_date",
                "dim_staff",
                "dim_location",
                "dim_currency",
                "dim_design",
                "dim_counterparty",
                "dim_payment_type",
                "dim_transaction",
                "fact_sales_order",
                "fact_purchase_order",
                "fact_payment"
            ]
        );
        for t in WAREHOUSE_TABLES {
            for k in t.key {
                assert!(t.columns.iter().any(|c| c.name == *k), "{t}.{k}");
            }
        }
        assert!(warehouse_table("dim_nope").is_err());
    }

    #[test]
    fn warehouse_types_map_to_arrow_types() {
        let schema = warehouse_table("fact_payment").unwrap().arrow_schema();
        let ty = |name: &str| schema.field_with_name(name).unwrap().data_type().clone();
        assert_eq!(ty("created_date"), DataType::Date32);
        assert_eq!(ty("created_time"), DataType::Time64(TimeUnit::Microsecond));
        assert_eq!(ty("payment_amount"), DataType::Decimal128(10, 2));
        assert_eq!(ty("payment_id"), DataType::Int32);
        assert_eq!(ty("paid"), DataType::Boolean);
        let staff = warehouse_table("dim_staff").unwrap().arrow_schema();
        assert_eq!(staff.field(1).data_type(), &DataType::Utf8);
        assert_eq!(staff.field(1).metadata()["pg_type"], "character varying");
        let version: Vec<&str> = warehouse_table("dim_staff")
            .unwrap()
            .version()
            .map(|c| c.name)
            .collect();
        assert_eq!(version, ["last_updated", "department_last_updated"]);
        for t in WAREHOUSE_TABLES {
            let versions = t.version().count();
            // Last, so that a file written before them is the registry's columns less these.
            let last: Vec<&str> = t.columns[t.columns.len() - versions..]
                .iter()
                .map(|c| c.name)
                .collect();
            assert_eq!(last, t.version().map(|c| c.name).collect::<Vec<_>>(), "{t}");
            match (t.kind, t.name) {
                (Kind::Fact, _) | (_, "dim_date") => assert_eq!(versions, 0, "{t}"),
                _ => assert!(versions >= 1, "{t}"),
            }
        }
    }
}
