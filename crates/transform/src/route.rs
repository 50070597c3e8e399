//! Where each raw table's file goes, resolved once, when the event is parsed, and carried in
//! its [`crate::event::RawFile`]: every registry table has exactly one route, and a table
//! without one is refused by name instead of being read and dropped.

use arrow::array::RecordBatch;
use utils::tables::TableSpec;
use utils::warehouse::{WarehouseTable, warehouse_table};

use crate::dims::{self, Dim};
use crate::error::{Error, Result};
use crate::facts::{FACTS, FactSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Streamed row group by row group into its outputs.
    Stream(Streamed),
    /// Read whole and merged into its snapshot, for the dimensions that join it.
    Joined(Joined),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streamed {
    /// A fact's source: into the fact table, and its quarantine.
    Fact {
        spec: &'static FactSpec,
        target: &'static WarehouseTable,
    },
    /// The one source of a dimension that copies it.
    Direct {
        dim: Direct,
        target: &'static WarehouseTable,
    },
}

/// The dimensions that copy one source table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direct {
    Currency,
    Design,
    PaymentType,
    Transaction,
}

impl Direct {
    const ALL: [Direct; 4] = [
        Direct::Currency,
        Direct::Design,
        Direct::PaymentType,
        Direct::Transaction,
    ];

    /// The source table and the dimension.
    fn tables(self) -> (&'static str, &'static str) {
        match self {
            Direct::Currency => ("currency", "dim_currency"),
            Direct::Design => ("design", "dim_design"),
            Direct::PaymentType => ("payment_type", "dim_payment_type"),
            Direct::Transaction => ("transaction", "dim_transaction"),
        }
    }

    /// The dimension rows of a batch of the source's rows (the latest version of each).
    pub fn build(self, rows: &RecordBatch) -> Result<Dim> {
        match self {
            Direct::Currency => dims::dim_currency(rows),
            Direct::Design => dims::dim_design(rows),
            Direct::PaymentType => dims::dim_payment_type(rows),
            Direct::Transaction => dims::dim_transaction(rows),
        }
    }
}

/// The tables whose current state transform keeps in snapshots, as the dimensions built from
/// them join them: dim_staff from staff and department; dim_counterparty from counterparty and
/// address, which alone also makes dim_location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Joined {
    Staff,
    Department,
    Counterparty,
    Address,
}

impl Joined {
    pub const ALL: [Joined; 4] = [
        Joined::Staff,
        Joined::Department,
        Joined::Counterparty,
        Joined::Address,
    ];

    pub fn source(self) -> &'static str {
        match self {
            Joined::Staff => "staff",
            Joined::Department => "department",
            Joined::Counterparty => "counterparty",
            Joined::Address => "address",
        }
    }
}

impl Route {
    /// The route of `table`'s files: an error naming the table if it has none, or more than one.
    pub fn of(table: &TableSpec) -> Result<Route> {
        let mut routes = Vec::new();
        for spec in FACTS.iter().filter(|f| f.source == table.name) {
            let target = warehouse_table(spec.target)?;
            routes.push(Route::Stream(Streamed::Fact { spec, target }));
        }
        for dim in Direct::ALL
            .into_iter()
            .filter(|d| d.tables().0 == table.name)
        {
            let target = warehouse_table(dim.tables().1)?;
            routes.push(Route::Stream(Streamed::Direct { dim, target }));
        }
        for joined in Joined::ALL.into_iter().filter(|j| j.source() == table.name) {
            routes.push(Route::Joined(joined));
        }
        match routes[..] {
            [route] => Ok(route),
            _ => Err(Error::Shared(utils::Error::Configuration(format!(
                "table {} has {} routes in transform, expected exactly one",
                table.name,
                routes.len()
            )))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use utils::tables::TABLES;
    use utils::warehouse::{Kind, WAREHOUSE_TABLES};

    #[test]
    fn every_registry_table_has_exactly_one_route() {
        for table in TABLES {
            Route::of(table).unwrap();
        }
        let unknown = TableSpec {
            name: "returns",
            ..TABLES[0]
        };
        let e = Route::of(&unknown).unwrap_err();
        assert_eq!(e.error_type(), "Configuration");
        assert!(e.to_string().contains("table returns has 0 routes"), "{e}");
    }

    #[test]
    fn every_warehouse_table_is_some_route_s_output() {
        let mut written: Vec<&str> =
            vec!["dim_date", "dim_staff", "dim_location", "dim_counterparty"];
        for table in TABLES {
            match Route::of(table).unwrap() {
                Route::Stream(Streamed::Fact { target, .. } | Streamed::Direct { target, .. }) => {
                    written.push(target.name)
                }
                Route::Joined(_) => {}
            }
        }
        written.sort_unstable();
        let mut expected: Vec<&str> = WAREHOUSE_TABLES.iter().map(|t| t.name).collect();
        expected.sort_unstable();
        assert_eq!(written, expected);
        assert!(
            WAREHOUSE_TABLES
                .iter()
                .filter(|t| t.kind == Kind::Fact)
                .all(|t| FACTS.iter().any(|f| f.target == t.name))
        );
    }
}
