//! The load Lambda against a real PostgreSQL warehouse and a real S3 API, on processed files
//! written by the real transform from raw files of the real ingest.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use tokio_postgres::Client;
use totesys_tests::expected::*;
use totesys_tests::pipeline::{Pipeline, load_deps};
use totesys_tests::*;
use utils::warehouse::WAREHOUSE_TABLES;

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

    /// A stack whose warehouse holds the project's materialized views.
    async fn with_views() -> Self {
        Stack {
            p: Pipeline::new(true).await,
            wh: TestDb::warehouse_with_views().await,
        }
    }

    async fn deps(&self) -> load::Deps {
        self.deps_for(&self.wh.url, load::bulk::DEFAULT_MIN_ROWS)
            .await
    }

    /// The load's dependencies, connecting to `url` and taking the bulk path from
    /// `bulk_min_rows` rows.
    async fn deps_for(&self, url: &str, bulk_min_rows: u64) -> load::Deps {
        load_deps(&self.p.processed, url, bulk_min_rows).await
    }

    /// A new role that may read and write the star schema but owns none of it, and the load's
    /// dependencies connecting as it, taking the bulk path for every file with rows.
    async fn loader_role(&self) -> (String, load::Deps) {
        let role = unique_name("loader").replace('-', "_");
        self.warehouse()
            .await
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN PASSWORD 'loader-secret';
                 GRANT CREATE, USAGE ON SCHEMA public TO {role};
                 GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {role};
                 GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role};"
            ))
            .await
            .unwrap();
        // The same server and database, as the role: postgres://USER:PASSWORD@HOST...
        let (scheme, rest) = self.wh.url.split_once("://").unwrap();
        let (_, host) = rest.split_once('@').unwrap();
        let deps = self
            .deps_for(&format!("{scheme}://{role}:loader-secret@{host}"), 1)
            .await;
        (role, deps)
    }

    /// Takes the files `event` lists off the load's queue, as if transform had not queued
    /// them: only an event naming them then loads them.
    async fn unqueue(&self, event: &Value) {
        for keys in event["files"].as_object().unwrap().values() {
            for key in keys.as_array().unwrap() {
                let key = key.as_str().unwrap();
                utils::cursor::clear_pending(&self.p.processed, key)
                    .await
                    .unwrap();
            }
        }
    }

    async fn load(&self, event: Value) -> Result<load::Output, load::Error> {
        load::handler(
            LambdaEvent::new(event, Context::default()),
            &self.deps().await,
        )
        .await
    }

    /// A load taking the bulk path for every file with rows.
    async fn bulk_load(&self, event: Value) -> Result<load::Output, load::Error> {
        load::handler(
            LambdaEvent::new(event, Context::default()),
            &self.deps_for(&self.wh.url, 1).await,
        )
        .await
    }

    /// Every constraint of the star schema (the load's own tables' aside): table, name, definition, validated, and its oid
    /// (which changes when a constraint is dropped and added back).
    async fn constraints(&self) -> Vec<(String, String, String, bool, u32)> {
        self.warehouse()
            .await
            .query(
                "SELECT conrelid::regclass::text, conname::text, pg_get_constraintdef(oid),
                        convalidated, oid
                 FROM pg_constraint WHERE connamespace = 'public'::regnamespace
                   AND conrelid::regclass::text
                       NOT IN ('totesys_load_ledger', 'totesys_refresh_pending')
                 ORDER BY 1, 2",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect()
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
        warehouse_rows(&self.warehouse().await).await
    }

    async fn ledger(&self) -> Vec<(String, i64)> {
        pairs(
            &self.warehouse().await,
            "SELECT file_key, rows FROM totesys_load_ledger ORDER BY file_key",
        )
        .await
    }
}

/// The rows of a two-column query.
async fn pairs<A, B>(client: &Client, sql: &str) -> Vec<(A, B)>
where
    A: for<'a> tokio_postgres::types::FromSql<'a>,
    B: for<'a> tokio_postgres::types::FromSql<'a>,
{
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// `e` is the fact_payment file of `event` refused for a dimension row it references, and
/// nothing is committed.
async fn assert_missing_payment_dimension(s: &Stack, e: &load::Error, event: &Value) {
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
}

/// The whole warehouse against the source: dimensions as the source is now, every fact
/// version seen, and the dates they reference.
async fn assert_matches_source(s: &Stack, facts: &FactVersions, when: &str) {
    assert_star_schema(&s.p.source().await, &s.tables().await, facts, when).await;
}

/// The warehouse against the source, every fact in its current version only.
async fn assert_matches_source_now(s: &Stack, when: &str) {
    let mut facts = BTreeMap::new();
    record_versions(&s.p.source().await, &mut facts).await;
    assert_matches_source(s, &facts, when).await;
}

#[tokio::test]
async fn a_full_load_matches_the_source_row_for_row() {
    let s = Stack::new(true).await;
    let out = s.round().await;
    assert_matches_source_now(&s, "first load").await;

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
    // Both departments' staff are re-emitted, and both rows change: the renamed department's
    // name, and the other's version (its manager is not in the warehouse, its last_updated
    // is, and a later file must compare with it).
    assert_eq!(out.loaded["dim_staff"], 2);
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
    assert_matches_source_now(&s, "after two concurrent loads").await;
}

#[tokio::test]
async fn facts_before_their_dimensions_are_deferred_and_a_notification_loads_the_queue() {
    let s = Stack::new(true).await;
    let event = s.transformed().await;
    let facts_only = json!({
        "bucket": event["bucket"],
        "files": {"fact_payment": event["files"]["fact_payment"]},
    });
    // Nothing queued (with the dimension files queued, an event naming the facts alone loads
    // those first).
    s.unqueue(&event).await;
    let e = s.load(facts_only.clone()).await.unwrap_err();
    assert_missing_payment_dimension(&s, &e, &event).await;

    // Queued again (as a re-run of their batch queues them), the fact file's own notification
    // loads the queue, dimensions before facts.
    for keys in event["files"].as_object().unwrap().values() {
        for key in keys.as_array().unwrap() {
            utils::cursor::mark_pending(&s.p.processed, key.as_str().unwrap())
                .await
                .unwrap();
        }
    }
    let key = event["files"]["fact_payment"][0].as_str().unwrap();
    let notification = json!({"Records": [{"s3": {
        "bucket": {"name": s.p.processed.bucket()}, "object": {"key": key}}}]});
    let out = s.load(notification).await.unwrap();
    assert!(
        utils::cursor::pending(&s.p.processed)
            .await
            .unwrap()
            .is_empty(),
        "the queue is empty once every file is in the ledger"
    );
    assert_eq!(out.loaded.len(), 11);
    assert_matches_source_now(&s, "after the run's notification").await;
}

#[tokio::test]
async fn a_late_dimension_file_changes_only_the_rows_it_holds_the_newest_version_of() {
    let s = Stack::new(true).await;
    s.round().await;
    let source = s.p.source().await;
    source
        .batch_execute(&format!(
            "UPDATE department SET department_name = 'Procurement', last_updated = {NOW_MS}
               WHERE department_id = 2;
             INSERT INTO currency VALUES (4, 'CHF', {NOW_MS}, {NOW_MS}),
                                         (6, 'GBP', {NOW_MS}, {NOW_MS});"
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
    // The third run's files load first; the second's arrive late (not queued: named by an
    // event alone).
    s.unqueue(&second).await;
    s.load(third.clone()).await.unwrap();
    // The late file is applied on its own: the newer files it loses to are not read again, so
    // one replaced by hand since (or deleted) does not stop it.
    let newer = third["files"]["dim_currency"][0].as_str().unwrap();
    let mut changed = s.p.processed.get(newer).await.unwrap().unwrap().to_vec();
    changed.extend_from_slice(b"\n");
    s.p.processed
        .put(
            newer,
            bytes::Bytes::from(changed),
            "application/octet-stream",
        )
        .await
        .unwrap();
    let late = s.load(second).await.unwrap();
    assert_eq!(
        late.loaded["dim_currency"], 1,
        "currency 6 only: the late file's currency 4 is older than the one loaded"
    );
    assert_eq!(
        late.loaded["dim_staff"], 0,
        "the late file's staff join an older name of their department"
    );
    let mut facts = BTreeMap::new();
    record_versions(&source, &mut facts).await;
    assert_matches_source(&s, &facts, "after a late file").await;
}

#[tokio::test]
async fn a_dimension_row_takes_the_newest_version_whatever_the_order_of_its_files() {
    // In key order in one invocation, then in reverse key order one file an invocation.
    for reverse in [false, true] {
        newest_version_wins(reverse).await;
    }
}

async fn newest_version_wins(reverse: bool) {
    let s = Stack::new(true).await;
    s.round().await;
    // Four files of staff 1, named so that key order is not version order (two batches of one
    // window end are named after their source tables). Versions: (staff, department).
    let at = |day: u32| {
        chrono::NaiveDate::from_ymd_opt(2030, 1, day)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis()
    };
    let files = [
        ("000000000000-department-staff", "Renamed", at(1), at(3)),
        ("000000000000-staff", "Before the rename", at(1), at(2)),
        // A newer staff row (moved to another department) beats every version of the old
        // department's, even a later one: the staff row says which department it joins.
        ("000000000001-staff", "Moved", at(4), at(1)),
        (
            "000000000002-department-staff",
            "Old department renamed again",
            at(1),
            at(20),
        ),
    ];
    let table = utils::warehouse::warehouse_table("dim_staff").unwrap();
    let mut keys = Vec::new();
    for (name, department, staff_version, department_version) in files {
        let text = |v: &str| -> arrow::array::ArrayRef {
            std::sync::Arc::new(arrow::array::StringArray::from(vec![v]))
        };
        let stamp = |ms: i64| -> arrow::array::ArrayRef {
            std::sync::Arc::new(arrow::array::TimestampMillisecondArray::from(vec![ms]))
        };
        let batch = arrow::array::RecordBatch::try_new(
            table.arrow_schema(),
            vec![
                std::sync::Arc::new(arrow::array::Int32Array::from(vec![1])),
                text("Jeremie"),
                text("Franey"),
                text(department),
                text("Manchester"),
                text("jeremie.franey@terrifictotes.com"),
                stamp(staff_version),
                stamp(department_version),
            ],
        )
        .unwrap();
        let key = format!("dim_staff/2030/01/01/{name}.parquet");
        s.p.processed
            .put(
                &key,
                utils::parquet_io::parquet_bytes(&batch, []).unwrap(),
                "application/vnd.apache.parquet",
            )
            .await
            .unwrap();
        keys.push(key);
    }
    let department = async || -> String {
        s.warehouse()
            .await
            .query_one(
                "SELECT department_name FROM dim_staff WHERE staff_id = 1",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    };
    let bucket = s.p.processed.bucket();
    if reverse {
        for key in keys.iter().rev() {
            s.load(json!({"bucket": bucket, "files": {"dim_staff": [key]}}))
                .await
                .unwrap();
        }
    } else {
        s.load(json!({"bucket": bucket, "files": {"dim_staff": keys}}))
            .await
            .unwrap();
    }
    // The newest version, not the last file applied.
    assert_eq!(department().await, "Moved", "reverse: {reverse}");
}

#[tokio::test]
async fn a_warehouse_without_dimension_versions_gains_them_or_is_told_what_to_run() {
    let s = Stack::new(true).await;
    s.round().await;
    // A warehouse created before the versions, holding rows without them.
    let admin = s.warehouse().await;
    admin
        .batch_execute(
            "ALTER TABLE dim_staff DROP COLUMN last_updated, DROP COLUMN department_last_updated;
             ALTER TABLE dim_currency DROP COLUMN last_updated",
        )
        .await
        .unwrap();
    let source = s.p.source().await;
    source
        .batch_execute(&format!(
            "UPDATE department SET department_name = 'Procurement', last_updated = {NOW_MS}
               WHERE department_id = 2;"
        ))
        .await
        .unwrap();
    let event = s.transformed().await;
    let ledger = s.ledger().await;
    // A role that does not own the tables may not add the columns: told what to run, and
    // nothing is written.
    let (_, deps) = s.loader_role().await;
    let e = load::handler(LambdaEvent::new(event.clone(), Context::default()), &deps)
        .await
        .unwrap_err();
    assert_eq!(e.error_type(), "Configuration", "{e}");
    assert!(
        e.to_string()
            .contains("run sql/migrations/0001_dimension_versions.sql as the tables' owner"),
        "{e}"
    );
    assert_eq!(s.ledger().await, ledger);
    // The owner's load adds them and goes on; a row loaded before them has no version, and
    // the next file of its key gives it one.
    s.load(event).await.unwrap();
    let versions: Vec<(String, Option<String>)> = pairs(
        &admin,
        "SELECT department_name, department_last_updated::text FROM dim_staff
         ORDER BY staff_id",
    )
    .await;
    assert!(!versions.is_empty());
    for (department, version) in versions {
        assert_eq!(
            version.is_some(),
            department == "Procurement",
            "{department}"
        );
    }
    let unversioned: i64 = admin
        .query_one(
            "SELECT count(*) FROM dim_currency WHERE last_updated IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unversioned, 3, "the currencies no file has changed since");
    // A file written before the versions, still queued at the upgrade, loads too: without
    // versions, so older than any.
    source
        .batch_execute(&format!(
            "UPDATE currency SET last_updated = {NOW_MS} WHERE currency_id = 2"
        ))
        .await
        .unwrap();
    s.round().await;
    let table = utils::warehouse::warehouse_table("dim_currency").unwrap();
    let schema = table.arrow_schema();
    let old = arrow::datatypes::Schema::new(schema.fields()[..3].to_vec());
    let batch = arrow::array::RecordBatch::try_new(
        std::sync::Arc::new(old),
        vec![
            std::sync::Arc::new(arrow::array::Int32Array::from(vec![2, 7])),
            std::sync::Arc::new(arrow::array::StringArray::from(vec!["XXX", "JPY"])),
            std::sync::Arc::new(arrow::array::StringArray::from(vec!["Old", "Yen"])),
        ],
    )
    .unwrap();
    let key = "dim_currency/2024/11/14/000000000001.parquet";
    s.p.processed
        .put(
            key,
            utils::parquet_io::parquet_bytes(&batch, []).unwrap(),
            "application/vnd.apache.parquet",
        )
        .await
        .unwrap();
    let old_file = json!({"bucket": s.p.processed.bucket(), "files": {"dim_currency": [key]}});
    let out = s.load(old_file).await.unwrap();
    assert_eq!(
        out.loaded["dim_currency"], 1,
        "currency 7 only: currency 2 has a version, which a row without one never overwrites"
    );
    let code: String = admin
        .query_one(
            "SELECT currency_code FROM dim_currency WHERE currency_id = 2",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(code, "USD");
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
             SELECT i, 'SALE', NULL, NULL, {NOW_MS}, {NOW_MS} FROM generate_series(10, 130009) i;
             INSERT INTO payment
             SELECT i, {NOW_MS}, {NOW_MS}, i, 1 + i % 2, (i % 100000) / 100.0, 1 + i % 3,
                    1 + i % 4, i % 2 = 0, '2024-11-14', i, i
             FROM generate_series(10, 130009) i"
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
    assert_matches_source_now(&s, "after the re-run").await;
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
    assert_matches_source_now(&s, "after the repair").await;
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
            // The changes' stamps (rounded to the millisecond) before the open transaction's
            // start, which holds the window end back: else they belong to the next round.
            tick().await;
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

/// The constraints without their oids, and the fact tables' foreign-key oids.
type Definitions = Vec<(String, String, String, bool)>;

fn definitions(constraints: &[(String, String, String, bool, u32)]) -> Definitions {
    constraints
        .iter()
        .map(|(t, n, d, v, _)| (t.clone(), n.clone(), d.clone(), *v))
        .collect()
}

fn foreign_key_oids(constraints: &[(String, String, String, bool, u32)]) -> Vec<u32> {
    constraints
        .iter()
        .filter(|(_, _, d, _, _)| d.starts_with("FOREIGN KEY"))
        .map(|c| c.4)
        .collect()
}

#[tokio::test]
async fn the_bulk_path_loads_exactly_and_never_touches_the_schema() {
    let s = Stack::new(true).await;
    let before = s.constraints().await;
    assert_eq!(
        foreign_key_oids(&before).len(),
        24,
        "the star schema's foreign keys"
    );
    let out = s.bulk_load(s.transformed().await).await.unwrap();
    assert_eq!(out.loaded.len(), 11);
    let source = s.p.source().await;
    let mut facts = BTreeMap::new();
    record_versions(&source, &mut facts).await;
    assert_matches_source(&s, &facts, "bulk load").await;
    let after = s.constraints().await;
    assert_eq!(
        definitions(&after),
        definitions(&before),
        "the same constraints"
    );
    // The fact tables' keys were checked set-based, and not one constraint was touched.
    assert_eq!(
        out.set_based.keys().collect::<Vec<_>>(),
        ["fact_payment", "fact_purchase_order", "fact_sales_order"],
        "{out:?}"
    );
    assert_eq!(after, before, "the same constraints, oids included");

    // The load's schema check passes on the schema the bulk path left: the next round loads.
    // Its dimension files hold keys the tables hold (dim_staff's renamed department, dim_date's
    // dates), so their straight COPY meets a key and they are upserted instead.
    source
        .batch_execute(&format!(
            "UPDATE payment SET paid = true, last_updated = {NOW_MS} WHERE payment_id = 1;
             UPDATE department SET department_name = 'Procurement', last_updated = {NOW_MS}
               WHERE department_id = 2;"
        ))
        .await
        .unwrap();
    let event = s.transformed().await;
    let out = s.bulk_load(event).await.unwrap();
    assert_eq!(
        out.loaded["dim_staff"], 1,
        "the renamed department's member of staff"
    );
    record_versions(&source, &mut facts).await;
    assert_matches_source(&s, &facts, "second bulk round").await;
    assert_eq!(definitions(&s.constraints().await), definitions(&before));
}

#[tokio::test]
async fn a_missing_dimension_on_the_bulk_path_fails_the_file_and_commits_nothing() {
    let s = Stack::new(true).await;
    let event = s.transformed().await;
    let before = s.constraints().await;
    let facts_only = json!({
        "bucket": event["bucket"],
        "files": {"fact_payment": event["files"]["fact_payment"]},
    });
    s.unqueue(&event).await;
    let e = s.bulk_load(facts_only).await.unwrap_err();
    assert_missing_payment_dimension(&s, &e, &event).await;
    assert!(s.ledger().await.is_empty());
    assert_eq!(s.constraints().await, before, "the constraints untouched");
}

#[tokio::test]
async fn a_role_that_does_not_own_the_tables_or_views_loads_them_and_leaves_the_views_alone() {
    let s = Stack::with_views().await;
    let admin = s.warehouse().await;
    let (role, deps) = s.loader_role().await;
    let before = s.constraints().await;
    let event = s.transformed().await;
    s.unqueue(&event).await;
    // Without the right to set session_replication_role: every check row by row.
    let dims = load::handler(
        LambdaEvent::new(only(&event, &dimension_tables()), Context::default()),
        &deps,
    )
    .await
    .unwrap();
    assert!(dims.set_based.is_empty(), "{dims:?}");
    let out = load::handler(
        LambdaEvent::new(only(&event, &["fact_payment"]), Context::default()),
        &deps,
    )
    .await
    .unwrap();
    assert!(out.set_based.is_empty(), "{out:?}");
    // Granted it (PostgreSQL 15): the bulk path, ownership or not.
    admin
        .batch_execute(&format!(
            "GRANT SET ON PARAMETER session_replication_role TO {role}"
        ))
        .await
        .unwrap();
    let out = load::handler(LambdaEvent::new(event, Context::default()), &deps)
        .await
        .unwrap();
    assert_eq!(
        out.set_based.keys().collect::<Vec<_>>(),
        ["fact_purchase_order", "fact_sales_order"],
        "{out:?}"
    );
    // The views are the admin's: not the role's to refresh, and no failure either.
    assert!(out.refreshed_views.is_empty(), "{out:?}");
    assert!(out.failed_views.is_empty(), "{out:?}");
    assert_matches_source_now(&s, "loaded as another role").await;
    assert_eq!(s.constraints().await, before, "no constraint was touched");

    // Given one view, behind one it may not refresh (first in the order), at a passed
    // deadline: the skipped view does not count as the invocation's one refresh.
    admin
        .batch_execute(&format!(
            "ALTER MATERIALIZED VIEW orders_by_staff OWNER TO {role};
             CREATE MATERIALIZED VIEW a_theirs AS SELECT count(*) AS n FROM fact_sales_order;
             INSERT INTO totesys_refresh_pending (table_name) VALUES ('fact_sales_order');"
        ))
        .await
        .unwrap();
    let mut deps = deps;
    deps.config.deadline_margin = PAST_MARGIN;
    let outputs = load_until_complete(
        &deps,
        json!({"bucket": s.p.processed.bucket(), "files": {}}),
    )
    .await;
    assert_eq!(outputs.len(), 1, "{outputs:#?}");
    assert_eq!(
        outputs[0]["refreshed_views"][0]["view"], "orders_by_staff",
        "{outputs:#?}"
    );
    admin
        .batch_execute(&format!(
            "REVOKE SET ON PARAMETER session_replication_role FROM {role};
             DROP OWNED BY {role}; DROP ROLE {role}"
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn concurrent_bulk_loads_of_one_and_several_fact_tables_queue_without_deadlock() {
    let s = Stack::new(true).await;
    let first = s.transformed().await;
    let source = s.p.source().await;
    let mut facts = BTreeMap::new();
    record_versions(&source, &mut facts).await;
    source
        .batch_execute(&format!(
            "UPDATE payment SET paid = true, last_updated = {NOW_MS} WHERE payment_id = 1;
             UPDATE sales_order SET units_sold = 7, last_updated = {NOW_MS}
               WHERE sales_order_id = 1"
        ))
        .await
        .unwrap();
    let second = s.transformed().await;
    let only = |event: &Value, kind: &str| {
        let files: serde_json::Map<String, Value> = event["files"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(t, _)| t.starts_with(kind))
            .map(|(t, k)| (t.clone(), k.clone()))
            .collect();
        json!({"bucket": event["bucket"], "files": files})
    };
    s.load(only(&first, "dim_")).await.unwrap();
    s.load(only(&second, "dim_")).await.unwrap();
    let file = |event: &Value, table: &str| json!({"bucket": event["bucket"], "files": {table: event["files"][table]}});
    // Two files of fact_payment, and fact_sales_order and fact_purchase_order, which
    // reference the same dimensions, all at once.
    let (a, b, c, d) = tokio::join!(
        s.bulk_load(file(&first, "fact_payment")),
        s.bulk_load(file(&second, "fact_payment")),
        s.bulk_load(file(&first, "fact_sales_order")),
        s.bulk_load(json!({"bucket": first["bucket"], "files": {
            "fact_purchase_order": first["files"]["fact_purchase_order"],
            "fact_sales_order": second["files"]["fact_sales_order"],
        }})),
    );
    for out in [a, b, c, d] {
        out.unwrap();
    }
    record_versions(&source, &mut facts).await;
    assert_matches_source(&s, &facts, "after concurrent bulk loads").await;
}

/// Invokes a stage until it reports complete, each time with what the last one left: the
/// outputs, in order.
async fn until_complete<F, Fut>(mut event: Value, mut invoke: F) -> Vec<Value>
where
    F: FnMut(Value) -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    let mut outputs = Vec::new();
    loop {
        let out = invoke(event).await;
        outputs.push(out.clone());
        if out["complete"] == json!(true) {
            assert!(out["remaining"].is_null(), "{out}");
            return outputs;
        }
        event = out["remaining"].clone();
        assert!(outputs.len() < 100, "no progress");
    }
}

/// Invokes the load with `deps` at a passed deadline until it reports complete: the outputs.
async fn load_until_complete(deps: &load::Deps, event: Value) -> Vec<Value> {
    until_complete(event, |event| async move {
        let out = load::handler(LambdaEvent::new(event, context_at_deadline()), deps)
            .await
            .unwrap();
        serde_json::to_value(out).unwrap()
    })
    .await
}

#[tokio::test]
async fn a_backfill_in_bounded_files_and_invocations_cut_by_their_deadline_loads_exactly() {
    let s = Stack::new(true).await;
    let source = s.p.source().await;
    // More rows than the seed's: 40 sales orders, 10 of them sharing one stamp, by 10 new
    // members of staff stamped among them (staff, a joined dimension, is split too).
    source
        .batch_execute(
            "INSERT INTO staff (staff_id, first_name, last_name, department_id, email_address,
               created_at, last_updated)
             SELECT 10 + i, 'First' || i, 'Last' || i, 1 + i % 3, 'staff' || i || '@t.com',
                    '2024-11-01', '2024-11-14 09:00:00'::timestamp
                      + make_interval(secs => 3 * i / 1000.0)
             FROM generate_series(0, 9) AS i;
             INSERT INTO sales_order (sales_order_id, created_at, last_updated, design_id,
               staff_id, counterparty_id, units_sold, unit_price, currency_id,
               agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id)
             SELECT 100 + i, '2024-11-01', '2024-11-14 09:00:00'::timestamp
                      + make_interval(secs => (CASE WHEN i <= 10 THEN 0 ELSE i END) / 1000.0),
                    1, 10 + i % 10, 1, i, 2.50, 1, '2024-12-01', '2024-12-02', 1
             FROM generate_series(1, 40) AS i",
        )
        .await
        .unwrap();
    tick().await;
    let mut ingest = s.p.ingest_deps().await;
    ingest.config.max_rows_per_file = 4;
    ingest.config.deadline_margin = PAST_MARGIN;
    let mut ingested: Vec<Value> = Vec::new();
    let mut event = json!({});
    loop {
        let out = ingest::handler(LambdaEvent::new(event, context_at_deadline()), &ingest)
            .await
            .unwrap();
        ingested.push(serde_json::to_value(&out).unwrap());
        if ingested.len() == 2 {
            // A member of staff the first invocation read changes: a later file holds the
            // new version, which must win.
            source
                .batch_execute(&format!(
                    "UPDATE staff SET first_name = 'Renamed', last_updated = {NOW_MS}
                     WHERE staff_id = 10"
                ))
                .await
                .unwrap();
            tick().await;
        }
        match out.remaining {
            Some(left) => event = serde_json::to_value(left).unwrap(),
            None => break,
        }
        assert!(ingested.len() < 100, "no progress");
    }
    assert!(ingested.len() > 10, "one file per invocation");
    let mut transform = s.p.deps();
    transform.deadline_margin = PAST_MARGIN;
    let mut load = s.deps().await;
    load.config.deadline_margin = PAST_MARGIN;
    load.config.bulk_min_rows = 3;
    let (mut transforms, mut loads) = (0, 0);
    for out in &ingested {
        if out["has_new_data"] != json!(true) {
            continue;
        }
        let transformed = until_complete(out.clone(), |event| {
            let transform = &transform;
            async move {
                let out =
                    transform::handler(LambdaEvent::new(event, context_at_deadline()), transform)
                        .await
                        .unwrap();
                serde_json::to_value(out).unwrap()
            }
        })
        .await;
        transforms += transformed.len();
        for batch in transformed {
            if batch["has_new_data"] != json!(true) {
                continue;
            }
            let loaded = load_until_complete(&load, batch).await;
            loads += loaded.len();
        }
    }
    assert!(transforms >= ingested.len() - 1, "{transforms}");
    assert!(loads > transforms, "{loads} {transforms}");
    let mut facts = BTreeMap::new();
    record_versions(&source, &mut facts).await;
    assert_matches_source(&s, &facts, "backfill").await;
    // Files of at most 4 rows, but for the one that starts at the stamp 10 rows share: it
    // holds them all, and may hold up to 4 more.
    let files: Vec<(String, i64)> = s
        .ledger()
        .await
        .into_iter()
        .filter(|(k, _)| k.starts_with("fact_sales_order/"))
        .collect();
    let large: Vec<&(String, i64)> = files.iter().filter(|(_, rows)| *rows > 4).collect();
    assert!(
        large.len() == 1 && (10..=14).contains(&large[0].1),
        "{files:?}"
    );
    assert_eq!(files.iter().map(|(_, rows)| rows).sum::<i64>(), 40 + 3);
    let staff_files = s
        .ledger()
        .await
        .iter()
        .filter(|(k, _)| k.starts_with("dim_staff/"))
        .count();
    assert!(staff_files > 3, "{staff_files} dim_staff files");
}

#[tokio::test]
async fn a_window_split_into_many_files_loads_exactly_in_one_invocation_per_stage() {
    split_window_loads_exactly(false).await;
}

#[tokio::test]
async fn a_window_split_into_many_files_loads_exactly_with_transform_and_load_cut_by_deadlines() {
    split_window_loads_exactly(true).await;
}

/// Ingest writes several files for most tables (the seed's facts, stamped in 2022, come before
/// every dimension's last file), then transform and load take them all, in one invocation each
/// or, `at_deadline`, one batch and one file per invocation with each output loaded before the
/// next transform (as the state machine does).
async fn split_window_loads_exactly(at_deadline: bool) {
    let s = Stack::new(true).await;
    let source = s.p.source().await;
    // Staff and departments (joined into dim_staff) stamped apart, so the two tables are cut
    // at different points: one transform takes several files of each.
    source
        .batch_execute(
            "INSERT INTO department (department_id, department_name, location, manager,
               created_at, last_updated)
             SELECT 10 + i, 'Dept' || i, 'Leeds', 'M', '2024-11-01',
                    '2024-11-14 09:00:00'::timestamp + make_interval(secs => 5 * i / 1000.0)
             FROM generate_series(0, 5) AS i;
             INSERT INTO staff (staff_id, first_name, last_name, department_id, email_address,
               created_at, last_updated)
             SELECT 10 + i, 'First' || i, 'Last' || i, 10 + i % 6, 'staff' || i || '@t.com',
                    '2024-11-01', '2024-11-14 09:00:00'::timestamp
                      + make_interval(secs => (2 * i + 1) / 1000.0)
             FROM generate_series(0, 11) AS i",
        )
        .await
        .unwrap();
    tick().await;
    let mut ingest = s.p.ingest_deps().await;
    ingest.config.max_rows_per_file = 2;
    // Ingest until complete (an invocation writes at most 20 files); transform gets the list.
    let mut outputs = Vec::new();
    let mut event = json!({});
    loop {
        let out = ingest::handler(LambdaEvent::new(event, Context::default()), &ingest)
            .await
            .unwrap();
        outputs.push(serde_json::to_value(&out).unwrap());
        match out.remaining {
            Some(left) => event = serde_json::to_value(left).unwrap(),
            None => break,
        }
    }
    let files = |table: &str| -> usize {
        outputs
            .iter()
            .map(|o| o["files"][table].as_array().map_or(0, Vec::len))
            .sum()
    };
    assert!(files("staff") > 3 && files("department") > 2, "{outputs:?}");
    assert!(files("sales_order") > 1, "{outputs:?}");
    let mut transform = s.p.deps();
    let mut load = s.deps().await;
    let context = || {
        if at_deadline {
            context_at_deadline()
        } else {
            Context::default()
        }
    };
    if at_deadline {
        transform.deadline_margin = PAST_MARGIN;
        load.config.deadline_margin = PAST_MARGIN;
    }
    let transformed = until_complete(json!(outputs), |event| {
        let (transform, load) = (&transform, &load);
        async move {
            let out = transform::handler(LambdaEvent::new(event, context()), transform)
                .await
                .unwrap();
            let out = serde_json::to_value(out).unwrap();
            if out["has_new_data"] == json!(true) {
                until_complete(out.clone(), |event| async move {
                    let done = load::handler(LambdaEvent::new(event, context()), load)
                        .await
                        .unwrap();
                    serde_json::to_value(done).unwrap()
                })
                .await;
            }
            out
        }
    })
    .await;
    assert_eq!(transformed.len() > 1, at_deadline, "{transformed:?}");
    let dim_staff: usize = transformed
        .iter()
        .map(|o| o["files"]["dim_staff"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(dim_staff > 3, "{dim_staff}");
    let mut facts = BTreeMap::new();
    record_versions(&source, &mut facts).await;
    assert_matches_source(&s, &facts, "split window").await;
}

/// The project's views and the tables each reads (from `sql/warehouse_views.sql`, by hand):
/// what the catalog walk must find.
const VIEW_TABLES: &[(&str, &[&str])] = &[
    (
        "orders_by_staff",
        &["dim_staff", "fact_sales_order", "fact_purchase_order"],
    ),
    (
        "payments_by_day_currency",
        &["fact_payment", "dim_currency", "dim_payment_type"],
    ),
    (
        "revenue_by_design",
        &["fact_sales_order", "dim_design", "dim_currency"],
    ),
    (
        "sales_by_counterparty_location",
        &["fact_sales_order", "dim_counterparty", "dim_currency"],
    ),
    (
        "sales_by_month_currency",
        &["fact_sales_order", "dim_date", "dim_currency"],
    ),
];

/// The project's views a load that changed `loaded`'s tables must refresh.
fn views_to_refresh(out: &load::Output) -> Vec<String> {
    let changed = |t: &&str| out.loaded.get(*t).is_some_and(|n| *n > 0);
    VIEW_TABLES
        .iter()
        .filter(|(_, tables)| tables.iter().any(changed))
        .map(|(view, _)| view.to_string())
        .collect()
}

/// The views `out` refreshed, in order.
fn refreshed(out: &load::Output) -> Vec<String> {
    out.refreshed_views.iter().map(|r| r.view.clone()).collect()
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

/// Every materialized view of the warehouse holds exactly what its query returns now.
async fn assert_views_fresh(client: &Client, when: &str) {
    let views = client
        .query(
            "SELECT oid::regclass::text, rtrim(pg_get_viewdef(oid), ';') FROM pg_class
             WHERE relkind = 'm' ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    assert!(!views.is_empty());
    for row in views {
        let (view, query): (String, String) = (row.get(0), row.get(1));
        let differ: i64 = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM (
                       (TABLE {view} EXCEPT ALL ({query}))
                       UNION ALL (({query}) EXCEPT ALL TABLE {view})) d"
                ),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("{view}: {e}"))
            .get(0);
        assert_eq!(differ, 0, "{when}: {view} differs from its query");
    }
}

/// The views' answers against the source database's, computed from the OLTP tables (the
/// current row of each order and payment): revenue and payments per currency code, orders
/// per member of staff with their department, revenue per counterparty city.
async fn assert_views_answer_the_source(s: &Stack, when: &str) {
    let pairs = [
        (
            "SELECT currency_code, sum(revenue)::text FROM sales_by_month_currency GROUP BY 1",
            "SELECT currency_code, sum(units_sold * unit_price)::text FROM sales_order
             JOIN currency USING (currency_id) GROUP BY 1",
        ),
        (
            "SELECT design_id::text, currency_code, sum(units_sold)::text FROM revenue_by_design
             GROUP BY 1, 2",
            "SELECT design_id::text, currency_code, sum(units_sold)::text FROM sales_order
             JOIN currency USING (currency_id) GROUP BY 1, 2",
        ),
        (
            "SELECT country, city, currency_code, revenue::text, counterparties::text
             FROM sales_by_counterparty_location",
            "SELECT a.country, a.city, currency_code, sum(units_sold * unit_price)::text,
                    count(DISTINCT counterparty_id)::text
             FROM sales_order JOIN counterparty USING (counterparty_id)
             JOIN currency USING (currency_id)
             JOIN address a ON a.address_id = legal_address_id GROUP BY 1, 2, 3",
        ),
        (
            "SELECT currency_code, payment_type_name, sum(amount_due)::text,
                    sum(amount_settled)::text, sum(payments_due + payments_settled)::text
             FROM payments_by_day_currency GROUP BY 1, 2",
            "SELECT currency_code, payment_type_name::text,
                    coalesce(sum(payment_amount) FILTER (WHERE NOT paid), 0)::text,
                    coalesce(sum(payment_amount) FILTER (WHERE paid), 0)::text, count(*)::text
             FROM payment JOIN currency USING (currency_id)
             JOIN payment_type USING (payment_type_id) GROUP BY 1, 2",
        ),
        (
            "SELECT staff_id::text, last_name, department_name, sales_orders::text,
                    purchase_orders::text
             FROM orders_by_staff",
            "SELECT staff_id::text, last_name, department_name,
                    (SELECT count(*) FROM sales_order o WHERE o.staff_id = s.staff_id)::text,
                    (SELECT count(*) FROM purchase_order o WHERE o.staff_id = s.staff_id)::text
             FROM staff s JOIN department USING (department_id)",
        ),
    ];
    let warehouse = s.warehouse().await;
    let source = s.p.source().await;
    for (view, oltp) in pairs {
        let mut a = sql_rows(&warehouse, view).await;
        let mut b = sql_rows(&source, oltp).await;
        a.sort();
        b.sort();
        assert!(!a.is_empty(), "{when}: {view}");
        assert_eq!(a, b, "{when}: {view}");
    }
}

#[tokio::test]
async fn the_views_answer_as_their_queries_and_the_source_after_every_round() {
    let s = Stack::with_views().await;
    let source = s.p.source().await;
    let mut changes = source_changes();
    // An order in the new currency, so the sales views gain a CHF row.
    changes.push(format!(
        "INSERT INTO sales_order VALUES
           (5, {NOW_MS}, {NOW_MS}, 2, 3, 1, 40, 3.25, 4, '2025-01-05', '2025-01-20', 1);"
    ));
    for round in 0..=changes.len() {
        if round > 0 {
            source.batch_execute(&changes[round - 1]).await.unwrap();
        }
        let out = s.round().await;
        let when = format!("round {round}");
        assert_eq!(
            sorted(refreshed(&out)),
            views_to_refresh(&out),
            "{when}: {out:?}"
        );
        assert!(
            out.refreshed_views.iter().all(|r| r.concurrently),
            "{out:?}"
        );
        assert_views_fresh(&s.warehouse().await, &when).await;
        assert_views_answer_the_source(&s, &when).await;
    }
    let chf: i64 = s
        .warehouse()
        .await
        .query_one(
            "SELECT sales_orders FROM sales_by_month_currency WHERE currency_code = 'CHF'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(chf, 1);

    // Nothing new: nothing loaded, nothing refreshed.
    let out = s.round().await;
    assert!(out.loaded.values().all(|n| *n == 0), "{out:?}");
    assert!(out.refreshed_views.is_empty(), "{out:?}");
}

#[tokio::test]
async fn views_users_add_are_refreshed_in_order_and_a_failed_refresh_is_reported_and_done_by_the_next_load()
 {
    let s = Stack::with_views().await;
    let warehouse = s.warehouse().await;
    // A view over a view (no unique index: refreshed plainly), one over one of the project's
    // views, in another schema, and one whose refresh fails on one staff surname.
    warehouse
        .batch_execute(
            "CREATE VIEW staff_names AS SELECT staff_id, first_name, last_name FROM dim_staff;
             CREATE MATERIALIZED VIEW staff_name_list AS SELECT * FROM staff_names;
             CREATE SCHEMA reporting;
             CREATE MATERIALIZED VIEW reporting.top_design AS
               SELECT design_id, revenue FROM revenue_by_design ORDER BY revenue DESC, design_id
               LIMIT 1;
             CREATE UNIQUE INDEX ON reporting.top_design (design_id);
             CREATE MATERIALIZED VIEW fragile AS
               SELECT staff_id, 1 / (last_name <> 'Unrefreshable')::int AS ok FROM dim_staff;",
        )
        .await
        .unwrap();
    let out = s.round().await;
    let names = refreshed(&out);
    let position = |v: &str| {
        names
            .iter()
            .position(|n| n == v)
            .unwrap_or_else(|| panic!("{v}: {names:?}"))
    };
    assert!(
        position("revenue_by_design") < position("reporting.top_design"),
        "{names:?}"
    );
    assert_eq!(names.len(), 5 + 3, "{names:?}");
    for r in &out.refreshed_views {
        let plain = ["staff_name_list", "fragile"].contains(&r.view.as_str());
        assert_eq!(r.concurrently, !plain, "{r:?}");
    }
    assert_views_fresh(&warehouse, "first round").await;

    // The surname the fragile view divides by zero on: the files commit, the refresh fails.
    let source = s.p.source().await;
    source
        .batch_execute(&format!(
            "UPDATE staff SET last_name = 'Unrefreshable', last_updated = {NOW_MS}
               WHERE staff_id = 2;
             INSERT INTO sales_order VALUES
               (4, {NOW_MS}, {NOW_MS}, 2, 1, 2, 5, 12.50, 1, '2024-12-01', '2024-12-15', 2);"
        ))
        .await
        .unwrap();
    let event = s.transformed().await;
    let out = s.load(event.clone()).await.unwrap();
    assert!(out.complete, "{out:?}");
    assert_eq!(out.failed_views.len(), 1, "{out:?}");
    assert_eq!(out.failed_views[0].view, "fragile");
    assert!(
        out.failed_views[0].error.contains("division by zero"),
        "{out:?}"
    );
    // The other views over the changed tables are refreshed all the same.
    assert!(
        refreshed(&out).contains(&"staff_name_list".to_owned()),
        "{out:?}"
    );
    let mut facts = BTreeMap::new();
    record_versions(&source, &mut facts).await;
    assert_matches_source(&s, &facts, "after the failed refresh").await;
    // Still pending: the next load, with nothing to load, tries it again and fails again.
    let again = s.load(event.clone()).await.unwrap();
    assert!(again.loaded.is_empty(), "{again:?}");
    assert_eq!(refreshed(&again), Vec::<String>::new(), "{again:?}");
    assert_eq!(again.failed_views.len(), 1, "{again:?}");

    // Mended: the next load refreshes it, and only it.
    warehouse
        .batch_execute(
            "UPDATE dim_staff SET last_name = 'Mended' WHERE last_name = 'Unrefreshable'",
        )
        .await
        .unwrap();
    let mended = s.load(event.clone()).await.unwrap();
    assert_eq!(refreshed(&mended), ["fragile"], "{mended:?}");
    assert!(mended.failed_views.is_empty(), "{mended:?}");
    warehouse
        .batch_execute(
            "DROP MATERIALIZED VIEW fragile;
             UPDATE dim_staff SET last_name = 'Unrefreshable' WHERE last_name = 'Mended'",
        )
        .await
        .unwrap();
    assert_views_fresh(&warehouse, "after the retry").await;
    let last = s.load(event).await.unwrap();
    assert!(last.refreshed_views.is_empty(), "{last:?}");
}

#[tokio::test]
async fn invocations_cut_by_the_deadline_leave_the_views_to_one_more_invocation() {
    let s = Stack::with_views().await;
    let mut load = s.deps().await;
    load.config.deadline_margin = PAST_MARGIN;
    let outputs = load_until_complete(&load, s.transformed().await).await;
    // One file per invocation, then the five views, one per invocation: the deadline is
    // checked between views, and each invocation refreshes at least one.
    assert_eq!(outputs.len(), 11 + 5, "{outputs:#?}");
    assert!(
        outputs[..11]
            .iter()
            .all(|o| o["refreshed_views"] == json!([])),
        "{outputs:#?}"
    );
    assert_eq!(
        outputs[10]["remaining"]["files"],
        json!({}),
        "{:#}",
        outputs[10]
    );
    let mut views = Vec::new();
    for o in &outputs[11..] {
        let refreshed = o["refreshed_views"].as_array().unwrap();
        assert_eq!(refreshed.len(), 1, "{o}");
        views.push(refreshed[0]["view"].as_str().unwrap().to_owned());
    }
    let mut distinct = views.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 5, "each view once: {views:?}");
    assert_views_fresh(
        &s.warehouse().await,
        "after the deadline's extra invocation",
    )
    .await;

    // Nothing left to refresh: a list of no files refreshes nothing.
    let empty = json!({"bucket": s.p.processed.bucket(), "files": {}});
    let out = load::handler(LambdaEvent::new(empty, context_at_deadline()), &load)
        .await
        .unwrap();
    assert!(out.complete && out.refreshed_views.is_empty(), "{out:?}");
}

/// `event` with only the files of `tables`.
fn only(event: &Value, tables: &[&str]) -> Value {
    let files: serde_json::Map<String, Value> = event["files"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(t, _)| tables.contains(&t.as_str()))
        .map(|(t, f)| (t.clone(), f.clone()))
        .collect();
    json!({"bucket": event["bucket"], "files": files})
}

/// The dimension tables of the registry.
fn dimension_tables() -> Vec<&'static str> {
    WAREHOUSE_TABLES
        .iter()
        .filter(|t| t.kind == utils::warehouse::Kind::Dimension)
        .map(|t| t.name)
        .collect()
}

/// Waits until some session of the warehouse's database waits for a lock; panics after 20 s.
async fn until_a_lock_wait(client: &Client) {
    for _ in 0..200 {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no session ever waited for a lock");
}

/// A session holding one dim_design row that the sales orders reference `FOR UPDATE`, as a
/// transaction changing its key would: a bulk load of fact_sales_order waits for it at the
/// set-based check, having copied its rows.
async fn hold_a_design_row(s: &Stack) -> Client {
    let design: i32 =
        s.p.source()
            .await
            .query_one("SELECT min(design_id) FROM sales_order", &[])
            .await
            .unwrap()
            .get(0);
    let blocker = s.warehouse().await;
    blocker
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM dim_design WHERE design_id = {design} FOR UPDATE"
        ))
        .await
        .unwrap();
    blocker
}

#[tokio::test]
async fn a_bulk_load_blocks_no_reader_refresh_or_other_load_and_commits_exactly() {
    let s = Stack::with_views().await;
    let event = s.transformed().await;
    s.unqueue(&event).await;
    s.load(only(&event, &dimension_tables())).await.unwrap();
    // (a) An analyst's long query holds dim_date (and the fact table) for the whole test.
    let analyst = s.warehouse().await;
    analyst
        .batch_execute(
            "BEGIN; SELECT count(*) FROM dim_date; SELECT count(*) FROM fact_sales_order",
        )
        .await
        .unwrap();
    // The bulk load of fact_sales_order, held mid-transaction (rows copied, checks waiting).
    let blocker = hold_a_design_row(&s).await;
    let mut bulk = s.deps_for(&s.wh.url, 1).await;
    // Held for as long as the test takes, on a slow machine too.
    bulk.config.lock_timeout = Duration::from_secs(120);
    let sales = only(&event, &["fact_sales_order"]);
    let loading = tokio::spawn(async move {
        load::handler(LambdaEvent::new(sales, Context::default()), &bulk).await
    });
    let watcher = s.warehouse().await;
    until_a_lock_wait(&watcher).await;

    // (d) A BI query joining the fact table to its dimensions waits for no lock.
    let reader = s.warehouse().await;
    reader
        .batch_execute("SET lock_timeout = '500ms'")
        .await
        .unwrap();
    reader
        .query_one(
            "SELECT count(*) FROM fact_sales_order f
             JOIN dim_date d ON d.date_id = f.created_date
             JOIN dim_design g ON g.design_id = f.design_id
             JOIN dim_staff st ON st.staff_id = f.sales_staff_id",
            &[],
        )
        .await
        .expect("a reader of the fact table and its dimensions during a bulk load");
    // (b) A refresh of a view over the fact table and its dimensions.
    reader
        .batch_execute("REFRESH MATERIALIZED VIEW CONCURRENTLY revenue_by_design")
        .await
        .expect("a refresh during a bulk load");
    // (c) A row-by-row load of another fact table, referencing the same dimensions.
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        s.load(only(&event, &["fact_payment"])),
    )
    .await
    .expect("a row-by-row load during a bulk load waits for nothing")
    .unwrap();
    assert!(out.loaded.contains_key("fact_payment"), "{out:?}");
    assert!(
        !loading.is_finished(),
        "the bulk load still waits for the row"
    );

    blocker.batch_execute("COMMIT").await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), loading)
        .await
        .expect("the bulk load finishes once the row is free")
        .unwrap()
        .expect("the bulk load");
    assert_eq!(
        out.set_based.keys().collect::<Vec<_>>(),
        ["fact_sales_order"]
    );
    analyst.batch_execute("COMMIT").await.unwrap();
    s.load(event).await.unwrap();
    assert_matches_source_now(&s, "after the concurrent loads").await;
    assert_views_fresh(&s.warehouse().await, "after the concurrent loads").await;
}

#[tokio::test]
async fn a_load_waits_for_a_lock_no_longer_than_its_lock_timeout_and_a_retry_loads_exactly() {
    let s = Stack::new(true).await;
    let event = s.transformed().await;
    s.unqueue(&event).await;
    s.load(only(&event, &dimension_tables())).await.unwrap();
    let blocker = hold_a_design_row(&s).await;
    let mut bulk = s.deps_for(&s.wh.url, 1).await;
    bulk.config.lock_timeout = Duration::from_millis(300);
    let sales = only(&event, &["fact_sales_order"]);
    let started = std::time::Instant::now();
    let e = load::handler(LambdaEvent::new(sales.clone(), Context::default()), &bulk)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{e}");
    assert_eq!(e.error_type(), "TransientDatabaseError", "{e}");
    assert!(e.is_lock_wait(), "{e}");
    assert!(e.to_string().contains("fact_sales_order"), "{e}");
    assert!(
        !s.ledger()
            .await
            .iter()
            .any(|(k, _)| k.starts_with("fact_sales_order/")),
        "nothing of the file committed"
    );
    let held: i64 = s
        .warehouse()
        .await
        .query_one("SELECT count(*) FROM fact_sales_order", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 0);

    blocker.batch_execute("COMMIT").await.unwrap();
    let out = load::handler(LambdaEvent::new(sales, Context::default()), &bulk)
        .await
        .unwrap();
    assert_eq!(
        out.set_based.keys().collect::<Vec<_>>(),
        ["fact_sales_order"]
    );
    s.load(event).await.unwrap();
    assert_matches_source_now(&s, "after the retry").await;
}

#[tokio::test]
async fn constraints_of_every_kind_are_kept_as_defined_and_a_not_valid_key_still_checks_new_rows() {
    let s = Stack::new(true).await;
    let admin = s.warehouse().await;
    // fact_payment's keys redefined: NOT VALID, deferrable, with a delete action, commented.
    let keys: Vec<(String, String)> = pairs(
        &admin,
        "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint
         WHERE conrelid = 'fact_payment'::regclass AND contype = 'f' ORDER BY 1",
    )
    .await;
    assert!(keys.len() >= 3, "{keys:?}");
    let suffixes = [
        "NOT VALID",
        "DEFERRABLE INITIALLY DEFERRED",
        "ON DELETE RESTRICT",
    ];
    for (i, (name, definition)) in keys.iter().enumerate() {
        let suffix = suffixes[i % suffixes.len()];
        admin
            .batch_execute(&format!(
                "ALTER TABLE fact_payment DROP CONSTRAINT \"{name}\",
                   ADD CONSTRAINT \"{name}\" {definition} {suffix};
                 COMMENT ON CONSTRAINT \"{name}\" ON fact_payment IS 'kept: {suffix}'"
            ))
            .await
            .unwrap();
    }
    let before = s.constraints().await;
    let comments = || async {
        s.warehouse()
            .await
            .query(
                "SELECT conname::text, obj_description(oid, 'pg_constraint')
                 FROM pg_constraint WHERE conrelid = 'fact_payment'::regclass ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, Option<String>>(1)))
            .collect::<Vec<_>>()
    };
    let commented = comments().await;
    let event = s.transformed().await;
    s.unqueue(&event).await;
    // Facts before their dimensions: every key checks the file's rows, NOT VALID ones too.
    let e = s
        .bulk_load(only(&event, &["fact_payment"]))
        .await
        .unwrap_err();
    assert_missing_payment_dimension(&s, &e, &event).await;
    assert_eq!(s.constraints().await, before);
    let out = s.bulk_load(event).await.unwrap();
    assert!(out.set_based.contains_key("fact_payment"), "{out:?}");
    assert_matches_source_now(&s, "bulk load under redefined keys").await;
    assert_eq!(s.constraints().await, before, "definitions, validity, oids");
    assert_eq!(comments().await, commented);
}

#[tokio::test]
async fn a_trigger_on_a_fact_table_keeps_its_file_on_the_row_by_row_checks() {
    let s = Stack::new(true).await;
    s.warehouse()
        .await
        .batch_execute(
            "CREATE TABLE audit (n int);
             CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS
               $$BEGIN INSERT INTO audit VALUES (1); RETURN NEW; END$$;
             CREATE TRIGGER audited AFTER INSERT ON fact_payment
               FOR EACH ROW EXECUTE FUNCTION audit_row();",
        )
        .await
        .unwrap();
    let out = s.bulk_load(s.transformed().await).await.unwrap();
    assert!(!out.set_based.contains_key("fact_payment"), "{out:?}");
    assert!(out.set_based.contains_key("fact_sales_order"), "{out:?}");
    let audited: i64 = s
        .warehouse()
        .await
        .query_one(
            "SELECT (SELECT count(*) FROM audit) - (SELECT count(*) FROM fact_payment)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(audited, 0, "the trigger fired for every row");
}

#[tokio::test]
async fn keys_wider_than_the_row_lock_bound_are_checked_under_a_share_lock() {
    let s = Stack::new(true).await;
    let event = s.transformed().await;
    s.unqueue(&event).await;
    let run = |event: Value| {
        let store = s.p.processed.clone();
        let url = s.wh.url.clone();
        async move {
            let mut bulk = load::bulk::Bulk::new(1);
            // Every key past the bound: the referenced tables locked SHARE, no row locks.
            bulk.row_locks_max = 0;
            let settings = load::Settings {
                deadline: utils::deadline::Deadline::NONE,
                bulk,
                lock_timeout: load::config::DEFAULT_LOCK_TIMEOUT,
                datasets: &[],
            };
            let mut client = connect(&url).await;
            let request = load::event::parse_event(&event).unwrap();
            load::run(&mut client, &store, request, settings).await
        }
    };
    let e = run(only(&event, &["fact_payment"])).await.unwrap_err();
    assert_missing_payment_dimension(&s, &e, &event).await;
    let out = run(event).await.unwrap();
    assert_eq!(
        out.set_based.keys().collect::<Vec<_>>(),
        ["fact_payment", "fact_purchase_order", "fact_sales_order"],
        "{out:?}"
    );
    assert_matches_source_now(&s, "checked under SHARE locks").await;
}
