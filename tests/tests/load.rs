//! The load Lambda against a real PostgreSQL warehouse and a real S3 API, on processed files
//! written by the real transform from raw files of the real ingest.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use tokio_postgres::Client;
use totesys_tests::expected::*;
use totesys_tests::pipeline::Pipeline;
use totesys_tests::*;
use utils::db::{Connector, DbSource};
use utils::warehouse::{WAREHOUSE_TABLES, WarehouseTable, WhType};

/// The whole pipeline: a source, the two buckets and a warehouse.
struct Stack {
    p: Pipeline,
    wh: TestDb,
}

impl Stack {
    async fn new(seed: bool) -> Self {
        Stack {
            p: Pipeline::new(seed).await,
            wh: TestDb::warehouse().await,
        }
    }

    async fn deps(&self) -> load::Deps {
        let warehouse = DbSource::Url(self.wh.url.clone());
        load::Deps {
            db: Connector::new(
                warehouse.clone(),
                aws_sdk_secretsmanager::Client::new(&sdk_config().await),
            ),
            config: load::Config {
                warehouse,
                processed_bucket: self.p.processed.bucket().to_owned(),
                deadline_margin: utils::deadline::DEFAULT_MARGIN,
                bulk_min_rows: load::bulk::DEFAULT_MIN_ROWS,
            },
            store: self.p.processed.clone(),
        }
    }

    async fn load(&self, event: Value) -> Result<load::Output, load::Error> {
        load::handler(
            LambdaEvent::new(event, Context::default()),
            &self.deps().await,
        )
        .await
    }

    /// Ingest, transform: the transform's output as Step Functions passes it on.
    async fn transformed(&self) -> Value {
        serde_json::to_value(self.p.round().await).unwrap()
    }

    /// Ingest, transform, load.
    async fn round(&self) -> load::Output {
        let event = self.transformed().await;
        self.load(event).await.expect("load")
    }

    async fn warehouse(&self) -> Client {
        self.wh.client().await
    }

    /// Every table's rows, rendered as the expectations render them.
    async fn tables(&self) -> BTreeMap<&'static str, Vec<Vec<String>>> {
        let client = self.warehouse().await;
        let mut out = BTreeMap::new();
        for table in WAREHOUSE_TABLES {
            out.insert(table.name, sql_rows(&client, &select_all(table)).await);
        }
        out
    }

    async fn ledger(&self) -> Vec<(String, i64)> {
        self.warehouse()
            .await
            .query(
                "SELECT file_key, rows FROM totesys_load_ledger ORDER BY file_key",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }
}

/// The registry columns of `table` as text: times as microseconds of the day.
fn select_all(table: &WarehouseTable) -> String {
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

/// The whole warehouse against the source: dimensions as the source is now, every fact
/// version seen, and the dates they reference.
async fn assert_matches_source(s: &Stack, facts: &FactVersions, when: &str) {
    assert_star_schema(&s.p.source().await, &s.tables().await, facts, when).await;
}

#[tokio::test]
async fn a_full_load_matches_the_source_row_for_row() {
    let s = Stack::new(true).await;
    let out = s.round().await;
    let mut facts = BTreeMap::new();
    record_versions(&s.p.source().await, &mut facts).await;
    assert_matches_source(&s, &facts, "first load").await;

    // Every row of every file is new to an empty warehouse.
    let counts: BTreeMap<&str, u64> = out.loaded.iter().map(|(t, n)| (t.as_str(), *n)).collect();
    assert_eq!(counts["dim_staff"], 3);
    assert_eq!(counts["fact_payment"], 3);
    assert_eq!(counts.len(), 11);
    assert!(out.skipped_files.is_empty());
    let ledger = s.ledger().await;
    assert_eq!(ledger.len(), 11);
    assert!(
        ledger
            .iter()
            .any(|(k, rows)| k.starts_with("dim_date/") && *rows > 0)
    );
}

#[tokio::test]
async fn an_incremental_round_updates_changed_dimension_rows_and_appends_fact_versions() {
    let s = Stack::new(true).await;
    s.round().await;
    let source = s.p.source().await;
    let mut facts = BTreeMap::new();
    record_versions(&source, &mut facts).await;
    source
        .batch_execute(&format!(
            "UPDATE department SET department_name = 'Procurement', last_updated = {NOW_MS}
               WHERE department_id = 2;
             UPDATE department SET manager = 'Someone Else', last_updated = {NOW_MS}
               WHERE department_id = 1;
             UPDATE payment SET paid = true, last_updated = {NOW_MS} WHERE payment_id = 1;"
        ))
        .await
        .unwrap();
    let out = s.round().await;
    record_versions(&source, &mut facts).await;
    assert_matches_source(&s, &facts, "after the changes").await;
    // Both departments' staff are re-emitted; only the renamed one's row changes (the
    // manager is not in the warehouse).
    assert_eq!(out.loaded["dim_staff"], 1);
    assert_eq!(out.loaded["fact_payment"], 1, "one new version");
    let client = s.warehouse().await;
    let payment_1: Vec<bool> = client
        .query(
            "SELECT paid FROM fact_payment WHERE payment_id = 1 ORDER BY last_updated_date, last_updated_time",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(payment_1, [false, true], "both versions kept, in order");
}

#[tokio::test]
async fn the_same_event_twice_or_a_duplicate_notification_changes_nothing() {
    let s = Stack::new(true).await;
    let event = s.transformed().await;
    s.load(event.clone()).await.unwrap();
    let before = s.tables().await;
    let ledger = s.ledger().await;

    let again = s.load(event.clone()).await.unwrap();
    assert!(again.loaded.is_empty(), "{again:?}");
    assert_eq!(again.skipped_files.len(), 11);

    // S3 notifications for the run's files, one of them twice; and for quarantine and state.
    let key = event["files"]["fact_sales_order"][0].as_str().unwrap();
    let record = |key: &str| {
        json!({"eventName": "ObjectCreated:Put", "s3": {
            "bucket": {"name": s.p.processed.bucket()},
            "object": {"key": key.replace('/', "%2F")}}})
    };
    for notification in [
        json!({"Records": [record(key)]}),
        json!({"Records": [record(key)]}),
        json!({"Records": [record("_state/transform/staff.parquet")]}),
        json!({"Records": [record("quarantine/fact_payment/2024/11/14/093005123456.parquet")]}),
    ] {
        let out = s.load(notification).await.unwrap();
        assert!(out.loaded.is_empty(), "{out:?}");
    }
    assert_eq!(s.tables().await, before);
    assert_eq!(s.ledger().await, ledger);
}

#[tokio::test]
async fn concurrent_invocations_apply_each_file_once() {
    let s = Stack::new(true).await;
    let event = s.transformed().await;
    let (a, b) = tokio::join!(s.load(event.clone()), s.load(event.clone()));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.skipped_files.len() + b.skipped_files.len(), 11);
    let mut facts = BTreeMap::new();
    record_versions(&s.p.source().await, &mut facts).await;
    assert_matches_source(&s, &facts, "after two concurrent loads").await;
}

#[tokio::test]
async fn facts_before_their_dimensions_are_deferred_and_a_notification_loads_its_run() {
    let s = Stack::new(true).await;
    let event = s.transformed().await;
    let facts_only = json!({
        "bucket": event["bucket"],
        "files": {"fact_payment": event["files"]["fact_payment"]},
    });
    let e = s.load(facts_only.clone()).await.unwrap_err();
    assert_eq!(e.error_type(), "MissingDimension", "{e}");
    let message = e.to_string();
    assert!(
        message.contains(event["files"]["fact_payment"][0].as_str().unwrap()),
        "{message}"
    );
    assert!(message.contains("is not present in table"), "{message}");
    assert!(
        s.tables().await.values().all(Vec::is_empty),
        "nothing committed"
    );

    // The fact file's own notification arrives first: the load takes the whole run,
    // dimensions before facts.
    let key = event["files"]["fact_payment"][0].as_str().unwrap();
    let notification = json!({"Records": [{"s3": {
        "bucket": {"name": s.p.processed.bucket()}, "object": {"key": key}}}]});
    let out = s.load(notification).await.unwrap();
    assert_eq!(out.loaded.len(), 11);
    let mut facts = BTreeMap::new();
    record_versions(&s.p.source().await, &mut facts).await;
    assert_matches_source(&s, &facts, "after the run's notification").await;
}

#[tokio::test]
async fn a_late_dimension_file_is_applied_as_if_in_order() {
    let s = Stack::new(true).await;
    s.round().await;
    let source = s.p.source().await;
    source
        .batch_execute(&format!(
            "UPDATE department SET department_name = 'Procurement', last_updated = {NOW_MS}
               WHERE department_id = 2;
             INSERT INTO currency VALUES (4, 'CHF', {NOW_MS}, {NOW_MS});"
        ))
        .await
        .unwrap();
    let second = s.transformed().await;
    source
        .batch_execute(&format!(
            "UPDATE department SET department_name = 'Buying', last_updated = {NOW_MS}
               WHERE department_id = 2;
             UPDATE currency SET currency_code = 'EUR', last_updated = {NOW_MS}
               WHERE currency_id = 4;
             INSERT INTO currency VALUES (5, 'USD', {NOW_MS}, {NOW_MS});"
        ))
        .await
        .unwrap();
    let third = s.transformed().await;
    // The third run's files load first; the second's arrive late.
    s.load(third).await.unwrap();
    let late = s.load(second).await.unwrap();
    assert!(late.loaded.contains_key("dim_currency"), "{late:?}");
    let mut facts = BTreeMap::new();
    record_versions(&source, &mut facts).await;
    assert_matches_source(&s, &facts, "after a late file").await;
}

#[tokio::test]
async fn a_killed_connection_mid_copy_leaves_nothing_half_loaded() {
    let s = Stack::new(true).await;
    // Enough transactions and payments for files of several row groups, so a COPY takes a
    // while.
    s.p.source()
        .await
        .batch_execute(&format!(
            "INSERT INTO \"transaction\"
             SELECT i, 'SALE', NULL, NULL, {NOW_MS}, {NOW_MS} FROM generate_series(10, 200009) i;
             INSERT INTO payment
             SELECT i, {NOW_MS}, {NOW_MS}, i, 1 + i % 2, (i % 100000) / 100.0, 1 + i % 3,
                    1 + i % 4, i % 2 = 0, '2024-11-14', i, i
             FROM generate_series(10, 200009) i"
        ))
        .await
        .unwrap();
    let event = s.transformed().await;

    let watcher = s.warehouse().await;
    let deps = s.deps().await;
    let load = tokio::spawn({
        let event = event.clone();
        async move { load::handler(LambdaEvent::new(event, Context::default()), &deps).await }
    });
    let mut killed = None;
    for _ in 0..20_000 {
        let row = watcher
            .query_opt(
                "SELECT pid, query FROM pg_stat_activity
                 WHERE application_name = 'totesys-load' AND state = 'active'
                   AND datname = current_database() AND query LIKE 'COPY load_stage%'",
                &[],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            let pid: i32 = row.get(0);
            watcher
                .execute("SELECT pg_terminate_backend($1)", &[&pid])
                .await
                .unwrap();
            killed = Some(row.get::<_, String>(1));
            break;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    assert!(killed.is_some(), "the load's COPY was never seen running");
    let e = load.await.unwrap().unwrap_err();
    assert_eq!(e.error_type(), "TransientDatabaseError", "{e}");

    // Every table holds exactly the files the ledger has: all of a file or none of it.
    let ledger: BTreeMap<String, i64> = s.ledger().await.into_iter().collect();
    assert!(
        ledger.len() < 11,
        "the kill came before the last file committed"
    );
    let tables = s.tables().await;
    for table in WAREHOUSE_TABLES {
        let key = event["files"][table.name][0].as_str().unwrap();
        let expected = ledger.get(key).copied().unwrap_or(0);
        assert_eq!(tables[table.name].len() as i64, expected, "{}", table.name);
    }

    let out = s.load(event).await.unwrap();
    assert_eq!(out.skipped_files.len(), ledger.len());
    let mut facts = BTreeMap::new();
    record_versions(&s.p.source().await, &mut facts).await;
    assert_matches_source(&s, &facts, "after the re-run").await;
}

#[tokio::test]
async fn a_warehouse_of_another_shape_is_a_configuration_error_before_any_write() {
    let s = Stack::new(true).await;
    let event = s.transformed().await;
    let client = s.warehouse().await;
    client
        .batch_execute(
            "DROP TABLE dim_design CASCADE;
             ALTER TABLE fact_payment ALTER COLUMN payment_amount TYPE double precision;",
        )
        .await
        .unwrap();
    let e = s.load(event).await.unwrap_err();
    assert_eq!(e.error_type(), "Configuration", "{e}");
    let message = e.to_string();
    assert!(message.contains("table dim_design is missing"), "{message}");
    assert!(
        message.contains("fact_payment.payment_amount is double precision, expected numeric(10,2)"),
        "{message}"
    );
    let ledger = client
        .query_one("SELECT to_regclass('totesys_load_ledger') IS NULL", &[])
        .await
        .unwrap();
    assert!(ledger.get::<_, bool>(0), "not even the ledger was created");
    let rows: i64 = client
        .query_one("SELECT count(*) FROM dim_staff", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn a_corrupt_or_mismatched_file_is_invalid_input_and_commits_nothing() {
    let s = Stack::new(true).await;
    let event = s.transformed().await;
    let staff = event["files"]["dim_staff"][0].as_str().unwrap().to_owned();
    let original = s.p.processed.get(&staff).await.unwrap().unwrap();

    s.p.processed
        .put(
            &staff,
            Bytes::from_static(b"not parquet"),
            "application/octet-stream",
        )
        .await
        .unwrap();
    let e = s.load(event.clone()).await.unwrap_err();
    assert_eq!(e.error_type(), "InvalidInput", "{e}");
    assert!(e.to_string().contains(&staff), "{e}");
    assert!(e.to_string().starts_with("dim_staff: "), "{e}");
    let tables = s.tables().await;
    assert!(tables["dim_staff"].is_empty());
    assert!(
        tables["fact_sales_order"].is_empty(),
        "the run stops at the bad file"
    );

    // Another table's file under dim_staff's key: the schema check names the column.
    let location = event["files"]["dim_location"][0].as_str().unwrap();
    let other = s.p.processed.get(location).await.unwrap().unwrap();
    s.p.processed
        .put(&staff, other, "application/vnd.apache.parquet")
        .await
        .unwrap();
    let e = s.load(event.clone()).await.unwrap_err();
    assert_eq!(e.error_type(), "InvalidInput", "{e}");
    assert!(
        e.to_string().contains(
            "schema does not match the warehouse registry: column 1 is `location_id Int32`, \
             expected `staff_id Int32`"
        ),
        "{e}"
    );
    assert!(s.tables().await["dim_staff"].is_empty());

    // Repaired, the same event completes the load.
    s.p.processed
        .put(&staff, original, "application/vnd.apache.parquet")
        .await
        .unwrap();
    s.load(event).await.unwrap();
    let mut facts = BTreeMap::new();
    record_versions(&s.p.source().await, &mut facts).await;
    assert_matches_source(&s, &facts, "after the repair").await;
}

#[tokio::test]
async fn several_rounds_end_to_end_match_the_source() {
    let s = Stack::new(true).await;
    let source = s.p.source().await;
    let app = s.p.source().await;
    let changes = source_changes();
    let mut facts = BTreeMap::new();
    for round in 0..=changes.len() {
        if round > 0 {
            source.batch_execute(&changes[round - 1]).await.unwrap();
        }
        if round == 3 {
            // The application stamps a payment update but commits only after this round.
            app.batch_execute(&format!(
                "BEGIN;
                 UPDATE payment SET payment_amount = 1.23, last_updated = {NOW_MS}
                   WHERE payment_id = 3;"
            ))
            .await
            .unwrap();
            tick().await;
        }
        s.round().await;
        record_versions(&source, &mut facts).await;
        assert_matches_source(&s, &facts, &format!("round {round}")).await;
        if round == 3 {
            // Committed after the round read the source: the next round must still see it.
            app.batch_execute("COMMIT").await.unwrap();
        }
    }
    assert_eq!(facts["fact_payment"].len(), 3 + 1 + 1 + 1 + 1 + 1);
    let chf: i64 = s
        .warehouse()
        .await
        .query_one(
            "SELECT count(*) FROM fact_purchase_order JOIN dim_currency USING (currency_id)
             WHERE currency_name = 'Swiss Franc'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(chf, 1);
}
