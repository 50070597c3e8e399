//! The registry of ToteSys source tables: the only place SQL identifiers come from.
//!
//! Column order is the order in the real tables (see `tests/fixtures/oltp_schema.sql`).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use crate::error::{Error, Result};

/// Precision and scale of every `numeric` column in ToteSys (`numeric(10,2)`).
pub const MONEY_PRECISION: u8 = 10;
pub const MONEY_SCALE: i8 = 2;

/// The PostgreSQL type of a source column, as the registry expects it to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgType {
    /// `integer`
    Int4,
    /// `numeric(10,2)`
    Money,
    /// `timestamp(3) without time zone`, holding UTC wall time
    Timestamp3,
    /// `text`
    Text,
    /// `varchar(n)`
    Varchar(u16),
    /// `boolean`
    Bool,
    /// A user-defined enum type, read as its label
    Enum(&'static str),
}

impl PgType {
    /// The type as PostgreSQL spells it (`format_type`), recorded in Parquet metadata.
    pub fn sql_name(self) -> String {
        match self {
            PgType::Int4 => "integer".into(),
            PgType::Money => format!("numeric({MONEY_PRECISION},{MONEY_SCALE})"),
            PgType::Timestamp3 => "timestamp(3) without time zone".into(),
            PgType::Text => "text".into(),
            PgType::Varchar(n) => format!("character varying({n})"),
            PgType::Bool => "boolean".into(),
            PgType::Enum(name) => format!("\"{name}\""),
        }
    }

    /// The Arrow type the raw zone stores this column as.
    pub fn arrow_type(self) -> DataType {
        match self {
            PgType::Int4 => DataType::Int32,
            PgType::Money => DataType::Decimal128(MONEY_PRECISION, MONEY_SCALE),
            PgType::Timestamp3 => DataType::Timestamp(TimeUnit::Millisecond, None),
            PgType::Text | PgType::Varchar(_) | PgType::Enum(_) => DataType::Utf8,
            PgType::Bool => DataType::Boolean,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub pg_type: PgType,
    pub nullable: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct TableSpec {
    pub name: &'static str,
    pub primary_key: &'static str,
    pub columns: &'static [Column],
}

impl fmt::Display for TableSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Column that every table carries and that incremental windows are cut on.
pub const LAST_UPDATED: &str = "last_updated";

const fn col(name: &'static str, pg_type: PgType) -> Column {
    Column {
        name,
        pg_type,
        nullable: false,
    }
}

const fn null(name: &'static str, pg_type: PgType) -> Column {
    Column {
        name,
        pg_type,
        nullable: true,
    }
}

use PgType::{Bool, Enum, Int4, Money, Text, Timestamp3, Varchar};

const CREATED_AT: Column = col("created_at", Timestamp3);
const LAST_UPDATED_COL: Column = col(LAST_UPDATED, Timestamp3);

/// Every table name the database pipeline uses, source and warehouse: no declared dataset
/// may take one (its raw and processed prefixes, its warehouse table).
pub fn reserved_names() -> Vec<&'static str> {
    TABLES
        .iter()
        .map(|t| t.name)
        .chain(crate::warehouse::WAREHOUSE_TABLES.iter().map(|t| t.name))
        .chain([crate::warehouse::LEDGER])
        .collect()
}

/// All eleven ToteSys business tables, parents before children.
pub static TABLES: &[TableSpec] = &[
    TableSpec {
        name: "address",
        primary_key: "address_id",
        columns: &[
            col("address_id", Int4),
            col("address_line_1", Text),
            null("address_line_2", Text),
            null("district", Text),
            col("city", Text),
            col("postal_code", Text),
            col("country", Text),
            col("phone", Text),
            CREATED_AT,
            LAST_UPDATED_COL,
        ],
    },
    TableSpec {
        name: "counterparty",
        primary_key: "counterparty_id",
        columns: &[
            col("counterparty_id", Int4),
            col("counterparty_legal_name", Text),
            col("legal_address_id", Int4),
            null("commercial_contact", Text),
            null("delivery_contact", Text),
            CREATED_AT,
            LAST_UPDATED_COL,
        ],
    },
    TableSpec {
        name: "currency",
        primary_key: "currency_id",
        columns: &[
            col("currency_id", Int4),
            col("currency_code", Varchar(3)),
            CREATED_AT,
            LAST_UPDATED_COL,
        ],
    },
    TableSpec {
        name: "department",
        primary_key: "department_id",
        columns: &[
            col("department_id", Int4),
            col("department_name", Text),
            null("location", Text),
            null("manager", Text),
            CREATED_AT,
            LAST_UPDATED_COL,
        ],
    },
    TableSpec {
        name: "design",
        primary_key: "design_id",
        columns: &[
            col("design_id", Int4),
            CREATED_AT,
            col("design_name", Text),
            col("file_location", Text),
            col("file_name", Text),
            LAST_UPDATED_COL,
        ],
    },
    TableSpec {
        name: "staff",
        primary_key: "staff_id",
        columns: &[
            col("staff_id", Int4),
            col("first_name", Text),
            col("last_name", Text),
            col("department_id", Int4),
            col("email_address", Text),
            CREATED_AT,
            LAST_UPDATED_COL,
        ],
    },
    TableSpec {
        name: "payment_type",
        primary_key: "payment_type_id",
        columns: &[
            col("payment_type_id", Int4),
            col("payment_type_name", Enum("PaymentTypeName")),
            CREATED_AT,
            LAST_UPDATED_COL,
        ],
    },
    TableSpec {
        name: "sales_order",
        primary_key: "sales_order_id",
        columns: &[
            col("sales_order_id", Int4),
            CREATED_AT,
            LAST_UPDATED_COL,
            col("design_id", Int4),
            col("staff_id", Int4),
            col("counterparty_id", Int4),
            col("units_sold", Int4),
            col("unit_price", Money),
            col("currency_id", Int4),
            col("agreed_delivery_date", Text),
            col("agreed_payment_date", Text),
            col("agreed_delivery_location_id", Int4),
        ],
    },
    TableSpec {
        name: "purchase_order",
        primary_key: "purchase_order_id",
        columns: &[
            col("purchase_order_id", Int4),
            CREATED_AT,
            LAST_UPDATED_COL,
            col("staff_id", Int4),
            col("counterparty_id", Int4),
            col("item_code", Text),
            col("item_quantity", Int4),
            col("item_unit_price", Money),
            col("currency_id", Int4),
            col("agreed_delivery_date", Text),
            col("agreed_payment_date", Text),
            col("agreed_delivery_location_id", Int4),
        ],
    },
    TableSpec {
        name: "transaction",
        primary_key: "transaction_id",
        columns: &[
            col("transaction_id", Int4),
            col("transaction_type", Enum("TransactionType")),
            null("sales_order_id", Int4),
            null("purchase_order_id", Int4),
            CREATED_AT,
            LAST_UPDATED_COL,
        ],
    },
    TableSpec {
        name: "payment",
        primary_key: "payment_id",
        columns: &[
            col("payment_id", Int4),
            CREATED_AT,
            LAST_UPDATED_COL,
            col("transaction_id", Int4),
            col("counterparty_id", Int4),
            col("payment_amount", Money),
            col("currency_id", Int4),
            col("payment_type_id", Int4),
            col("paid", Bool),
            col("payment_date", Text),
            col("company_ac_number", Int4),
            col("counterparty_ac_number", Int4),
        ],
    },
];

/// The source tables that become fact tables. Their rows reference rows of every other table
/// (through the warehouse's foreign keys): ingest never reads them past the other tables, and
/// transform takes their files after those the other tables have at the time.
pub const FACT_TABLES: [&str; 3] = ["sales_order", "purchase_order", "payment"];

/// Looks a table up by name. A name that is not in the registry is an error; it is never
/// interpolated anywhere.
pub fn table(name: &str) -> Result<&'static TableSpec> {
    TABLES
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| Error::UnknownTable(name.to_owned()))
}

/// Quotes an identifier for PostgreSQL. Only ever called with registry names.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl TableSpec {
    /// Arrow schema of the raw zone's Parquet for this table; each field records its source type
    /// under the `pg_type` metadata key.
    pub fn arrow_schema(&self) -> Arc<Schema> {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| {
                Field::new(c.name, c.pg_type.arrow_type(), c.nullable).with_metadata(HashMap::from(
                    [("pg_type".to_owned(), c.pg_type.sql_name())],
                ))
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// Columns whose values rarely repeat: the key, timestamps and amounts.
    pub fn high_cardinality_columns(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.columns
            .iter()
            .filter(|c| {
                c.name == self.primary_key
                    || matches!(c.pg_type, PgType::Timestamp3 | PgType::Money)
            })
            .map(|c| c.name)
    }

    /// Whether this is one of the [`FACT_TABLES`].
    pub fn is_fact(&self) -> bool {
        FACT_TABLES.contains(&self.name)
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_holds_the_eleven_totesys_tables_in_dependency_order() {
        let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
        assert_eq!(
            names,
            [
                "address",
                "counterparty",
                "currency",
                "department",
                "design",
                "staff",
                "payment_type",
                "sales_order",
                "purchase_order",
                "transaction",
                "payment"
            ]
        );
        for t in TABLES {
            assert_eq!(t.columns[0].name, t.primary_key, "{t}: key first");
            assert!(t.column(LAST_UPDATED).is_some(), "{t}: last_updated");
            assert!(t.column("created_at").is_some(), "{t}: created_at");
        }
    }

    #[test]
    fn unknown_and_injection_shaped_names_are_rejected() {
        assert_eq!(table("staff").unwrap().name, "staff");
        for bad in [
            "staffs",
            "staff; DROP TABLE staff",
            "\"staff\"",
            "",
            "STAFF",
        ] {
            match table(bad) {
                Err(Error::UnknownTable(name)) => assert_eq!(name, bad),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("transaction"), "\"transaction\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn postgres_types_map_to_arrow_types() {
        assert_eq!(Int4.arrow_type(), DataType::Int32);
        assert_eq!(Money.arrow_type(), DataType::Decimal128(10, 2));
        assert_eq!(
            Timestamp3.arrow_type(),
            DataType::Timestamp(TimeUnit::Millisecond, None)
        );
        assert_eq!(Text.arrow_type(), DataType::Utf8);
        assert_eq!(Varchar(3).arrow_type(), DataType::Utf8);
        assert_eq!(Enum("TransactionType").arrow_type(), DataType::Utf8);
        assert_eq!(Bool.arrow_type(), DataType::Boolean);
        assert_eq!(Money.sql_name(), "numeric(10,2)");
        assert_eq!(Varchar(3).sql_name(), "character varying(3)");
        assert_eq!(Enum("TransactionType").sql_name(), "\"TransactionType\"");
    }

    #[test]
    fn arrow_schema_keeps_order_nullability_and_source_type() {
        let schema = table("transaction").unwrap().arrow_schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "transaction_id",
                "transaction_type",
                "sales_order_id",
                "purchase_order_id",
                "created_at",
                "last_updated"
            ]
        );
        let f = schema.field_with_name("sales_order_id").unwrap();
        assert!(f.is_nullable());
        assert_eq!(f.metadata()["pg_type"], "integer");
        assert!(
            !schema
                .field_with_name("transaction_id")
                .unwrap()
                .is_nullable()
        );
    }
}
