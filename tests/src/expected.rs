//! The star schema computed independently from the source database, in SQL: what the
//! warehouse must hold. Written without the transform's code.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::Client;

use crate::NOW_MS;
use utils::warehouse::{WAREHOUSE_TABLES, WarehouseTable, WhType, warehouse_table};

/// Rows of a query whose columns are all cast to text, sorted.
pub async fn sql_rows(client: &Client, sql: &str) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| {
                    r.get::<_, Option<String>>(i)
                        .unwrap_or_else(|| "NULL".into())
                })
                .collect()
        })
        .collect();
    rows.sort();
    rows
}

/// The star schema's dimensions computed from the source's current state, in SQL, with their
/// versions (the source rows' `last_updated`).
pub const EXPECTED_DIMENSIONS: &[(&str, &str)] = &[
    (
        "dim_staff",
        "SELECT staff_id::text, first_name, last_name, department_name,
                COALESCE(location, 'Unknown'), email_address, s.last_updated::text,
                d.last_updated::text
         FROM staff s JOIN department d USING (department_id)",
    ),
    (
        "dim_location",
        "SELECT address_id::text, address_line_1, address_line_2, district, city, postal_code,
                country, phone, last_updated::text FROM address",
    ),
    (
        "dim_counterparty",
        "SELECT counterparty_id::text, counterparty_legal_name, address_line_1, address_line_2,
                district, city, postal_code, country, phone, c.last_updated::text,
                a.last_updated::text
         FROM counterparty c JOIN address a ON address_id = legal_address_id",
    ),
    (
        "dim_currency",
        "SELECT currency_id::text, currency_code,
                CASE currency_code WHEN 'GBP' THEN 'Pound Sterling' WHEN 'USD' THEN 'US Dollar'
                     WHEN 'EUR' THEN 'Euro' WHEN 'CHF' THEN 'Swiss Franc' ELSE 'Unknown' END,
                last_updated::text
         FROM currency",
    ),
    (
        "dim_design",
        "SELECT design_id::text, design_name, file_location, file_name, last_updated::text
         FROM design",
    ),
    (
        "dim_payment_type",
        "SELECT payment_type_id::text, payment_type_name::text, last_updated::text
         FROM payment_type",
    ),
    (
        "dim_transaction",
        "SELECT transaction_id::text, transaction_type::text, sales_order_id::text,
                purchase_order_id::text, last_updated::text FROM transaction",
    ),
];

pub const DATE: &str = "::date::text";
pub fn time(column: &str) -> String {
    format!("(extract(epoch FROM {column}::time) * 1000000)::int8::text")
}

/// The registry columns of a warehouse table as text, as the expectations render them: times
/// as microseconds of the day.
pub fn select_all(table: &WarehouseTable) -> String {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|c| match c.wh_type {
            WhType::Time => time(c.name),
            _ => format!("{}::text", c.name),
        })
        .collect();
    format!("SELECT {} FROM {}", columns.join(", "), table.name)
}

/// Every warehouse table's rows in the warehouse behind `client`, rendered by [`select_all`].
pub async fn warehouse_rows(client: &Client) -> BTreeMap<&'static str, Vec<Vec<String>>> {
    let mut out = BTreeMap::new();
    for table in WAREHOUSE_TABLES {
        out.insert(table.name, sql_rows(client, &select_all(table)).await);
    }
    out
}

/// The current version of each fact row, in SQL.
pub fn fact_queries() -> Vec<(&'static str, String)> {
    vec![
        (
            "fact_sales_order",
            format!(
                "SELECT sales_order_id::text, created_at{DATE}, {}, last_updated{DATE}, {},
                        staff_id::text, counterparty_id::text, units_sold::text,
                        unit_price::text, currency_id::text, design_id::text,
                        agreed_payment_date{DATE}, agreed_delivery_date{DATE},
                        agreed_delivery_location_id::text
                 FROM sales_order",
                time("created_at"),
                time("last_updated")
            ),
        ),
        (
            "fact_purchase_order",
            format!(
                "SELECT purchase_order_id::text, created_at{DATE}, {}, last_updated{DATE}, {},
                        staff_id::text, counterparty_id::text, item_code, item_quantity::text,
                        item_unit_price::text, currency_id::text, agreed_delivery_date{DATE},
                        agreed_payment_date{DATE}, agreed_delivery_location_id::text
                 FROM purchase_order",
                time("created_at"),
                time("last_updated")
            ),
        ),
        (
            "fact_payment",
            format!(
                "SELECT payment_id::text, created_at{DATE}, {}, last_updated{DATE}, {},
                        transaction_id::text, counterparty_id::text, payment_amount::text,
                        currency_id::text, payment_type_id::text, paid::text, payment_date{DATE}
                 FROM payment",
                time("created_at"),
                time("last_updated")
            ),
        ),
    ]
}

/// dim_date for a set of dates, in SQL.
pub async fn expected_dates(client: &Client, dates: &BTreeSet<String>) -> Vec<Vec<String>> {
    let list: Vec<&str> = dates.iter().map(String::as_str).collect();
    let rows = client
        .query(
            "SELECT d::text, extract(year FROM d)::text, extract(month FROM d)::text,
                    extract(day FROM d)::text, extract(isodow FROM d)::text,
                    to_char(d, 'FMDay'), to_char(d, 'FMMonth'), extract(quarter FROM d)::text
             FROM unnest($1::text[]) AS t(s), LATERAL (SELECT s::date AS d) AS x ORDER BY d",
            &[&list],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| (0..r.len()).map(|i| r.get::<_, String>(i)).collect())
        .collect()
}

/// Fact date columns, by position, of each fact table.
pub fn date_columns(table: &str) -> Vec<usize> {
    warehouse_table(table)
        .unwrap()
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.wh_type == utils::warehouse::WhType::Date)
        .map(|(i, _)| i)
        .collect()
}

/// Rounds of ordinary business on top of the seed, each a SQL script stamped as the
/// application stamps rows: new orders with their transactions and a payment, a payment made;
/// a department rename, a changed address, a new currency (CHF) used by a new order; the same
/// payment changed twice more and a staff surname.
pub fn source_changes() -> Vec<String> {
    vec![
        format!(
            "INSERT INTO sales_order VALUES
               (4, {NOW_MS}, {NOW_MS}, 2, 1, 2, 5, 12.50, 1, '2024-12-01', '2024-12-15', 2);
             INSERT INTO \"transaction\" VALUES (5, 'SALE', 4, NULL, {NOW_MS}, {NOW_MS});
             INSERT INTO payment VALUES
               (4, {NOW_MS}, {NOW_MS}, 5, 2, 62.50, 1, 1, false, '2024-12-15', 1, 2);
             UPDATE payment SET paid = true, last_updated = {NOW_MS} WHERE payment_id = 1;"
        ),
        format!(
            "UPDATE department SET department_name = 'Procurement', last_updated = {NOW_MS}
               WHERE department_id = 2;
             UPDATE address SET address_line_2 = 'Flat 2', district = 'Kent',
               last_updated = {NOW_MS} WHERE address_id = 1;
             INSERT INTO currency VALUES (4, 'CHF', {NOW_MS}, {NOW_MS});
             INSERT INTO purchase_order VALUES
               (3, {NOW_MS}, {NOW_MS}, 2, 1, 'CHF0001', 7, 1000.00, 4, '2025-01-02', '2025-01-31', 1);
             INSERT INTO \"transaction\" VALUES (6, 'PURCHASE', NULL, 3, {NOW_MS}, {NOW_MS});"
        ),
        format!(
            "UPDATE payment SET payment_amount = 70.00, last_updated = {NOW_MS} WHERE payment_id = 4;
             UPDATE staff SET last_name = 'Franey-Smith', last_updated = {NOW_MS} WHERE staff_id = 1;"
        ),
        format!("UPDATE payment SET paid = true, last_updated = {NOW_MS} WHERE payment_id = 4;"),
    ]
}

/// A new sales order (id 4) whose agreed delivery date is `'soon'`: transform quarantines it.
pub fn order_with_a_bad_date() -> String {
    format!(
        "INSERT INTO sales_order VALUES
           (4, {NOW_MS}, {NOW_MS}, 2, 1, 2, 5, 12.50, 1, 'soon', '2024-12-15', 2);"
    )
}

/// Every fact version seen so far, per fact table: the rows that must stay in the warehouse.
pub type FactVersions = BTreeMap<&'static str, BTreeSet<Vec<String>>>;

/// Adds the source's current fact versions to `facts`.
pub async fn record_versions(source: &Client, facts: &mut FactVersions) {
    for (table, sql) in fact_queries() {
        facts
            .entry(table)
            .or_default()
            .extend(sql_rows(source, &sql).await);
    }
}

/// A warehouse (`actual`: rows per table, fact rows in sorted order) against the source:
/// dimensions as the source is now, every fact version in `facts`, and the dates they
/// reference. `when` names the moment in a failure.
pub async fn assert_star_schema(
    source: &Client,
    actual: &BTreeMap<&'static str, Vec<Vec<String>>>,
    facts: &FactVersions,
    when: &str,
) {
    for (table, sql) in EXPECTED_DIMENSIONS {
        assert_eq!(
            actual[table],
            sql_rows(source, sql).await,
            "{when}: {table}"
        );
    }
    let mut dates = BTreeSet::new();
    for (table, rows) in facts {
        let expected: Vec<Vec<String>> = rows.iter().cloned().collect();
        assert_eq!(actual[table], expected, "{when}: {table}");
        for row in rows {
            for i in date_columns(table) {
                dates.insert(row[i].clone());
            }
        }
    }
    assert_eq!(
        actual["dim_date"],
        expected_dates(source, &dates).await,
        "{when}: dim_date"
    );
}
