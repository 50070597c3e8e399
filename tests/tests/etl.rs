//! The `etl` command's operations against a real pipeline: a source database, the two buckets
//! on the S3 API, a warehouse, and the real Lambdas between them.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::array::Array;
use chrono::{TimeZone, Utc};
use lambda_runtime::LambdaEvent;
use serde_json::{Value, json};
use totesys_tests::expected::*;
use totesys_tests::pipeline::Setup;
use totesys_tests::*;
use utils::watermark::read_state;

/// Ingest, transform and load; ingest's output.
async fn round(s: &Setup) -> Value {
    let ingested = s.p.ingest().await;
    let transformed = s.p.transform(ingested.clone()).await.expect("transform");
    s.load(serde_json::to_value(transformed).unwrap()).await;
    ingested
}

/// The warehouse against the source as it is now.
async fn assert_exact(s: &Setup, when: &str) {
    s.assert_exact(&mut BTreeMap::new(), when).await;
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn status_follows_each_stage_and_says_which_tables_are_behind() {
    let s = Setup::new().await;
    let etl = s.etl(true, None).await;

    // Nothing ingested yet: every table is behind, nothing is processed.
    let status = etl::status::status(&etl, HOUR).await.unwrap();
    assert_eq!(status.behind.len(), 11, "{status:?}");
    assert!(status.tables.iter().all(|t| t.watermark.is_none()));
    assert!(status.render().contains("never ingested"));

    // Ingested and transformed, not loaded: every processed file waits for the load.
    let ingested = s.p.ingest().await;
    let transformed = s.p.transform(ingested).await.unwrap();
    let status = etl::status::status(&etl, HOUR).await.unwrap();
    assert!(status.behind.is_empty(), "{:?}", status.behind);
    let staff = status.tables.iter().find(|t| t.table == "staff").unwrap();
    assert_eq!(staff.last_file_rows, Some(3));
    assert_eq!(
        staff.lag_seconds,
        Some(0.0),
        "the source holds nothing newer"
    );
    for t in &status.warehouse_tables {
        assert_eq!(t.processed_files, 1, "{t:?}");
        assert_eq!(t.not_loaded.as_ref().unwrap().len(), 1, "{t:?}");
        assert!(t.last_loaded_file.is_none());
    }

    s.load(serde_json::to_value(&transformed).unwrap()).await;
    let status = etl::status::status(&etl, HOUR).await.unwrap();
    for t in &status.warehouse_tables {
        assert_eq!(t.not_loaded.as_deref(), Some(&[][..]), "{t:?}");
        assert_eq!(
            t.last_loaded_file.as_deref(),
            transformed.files[t.table].last().map(String::as_str)
        );
    }

    // A change the pipeline has not read: that table is behind, by the change's age.
    s.p.source()
        .await
        .batch_execute(&format!(
            "UPDATE staff SET last_name = 'Later', last_updated = {NOW_MS} WHERE staff_id = 1"
        ))
        .await
        .unwrap();
    let status = etl::status::status(&etl, Duration::ZERO).await.unwrap();
    assert_eq!(status.behind, ["staff"]);
    assert!(
        status
            .tables
            .iter()
            .find(|t| t.table == "staff")
            .unwrap()
            .lag_seconds
            .unwrap()
            > 0.0
    );
    assert!(status.render().contains("BEHIND"), "{}", status.render());
    assert!(
        etl::status::status(&etl, HOUR)
            .await
            .unwrap()
            .behind
            .is_empty()
    );
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["behind"], json!(["staff"]));
    assert!(json["tables"][0]["watermark"].is_string());

    // Without the databases: the watermarks' age stands in for the lag.
    let blind = s.etl(false, None).await;
    let status = etl::status::status(&blind, HOUR).await.unwrap();
    assert!(
        status
            .source_error
            .as_deref()
            .unwrap()
            .contains("SOURCE_DB_URL"),
        "{status:?}"
    );
    assert!(status.behind.is_empty() && status.tables.iter().all(|t| t.lag_seconds.is_none()));
    assert!(
        status
            .warehouse_tables
            .iter()
            .all(|t| t.not_loaded.is_none())
    );
    tick().await;
    assert_eq!(
        etl::status::status(&blind, Duration::ZERO)
            .await
            .unwrap()
            .behind
            .len(),
        11
    );
}

#[tokio::test]
async fn a_replay_reads_the_window_again_and_the_warehouse_stays_exact() {
    let s = Setup::new().await;
    round(&s).await;
    let etl = s.etl(true, None).await;
    let sales_order = etl::source_tables(&["sales_order".into()]).unwrap();
    let since = Utc.with_ymd_and_hms(2023, 1, 1, 0, 0, 0).unwrap();
    let before = read_state(&s.p.raw, "sales_order").await.unwrap().unwrap();

    // A dry run says what the next run reads again, and writes nothing.
    let plans = etl::replay::replay(&etl, &sales_order, since, true)
        .await
        .unwrap();
    let replay = plans[0].replay.as_ref().unwrap();
    assert_eq!(replay.files_passed_over, 1);
    assert_eq!(replay.before, before);
    assert_eq!(
        plans[0].rows_to_read,
        Some(1),
        "the seed's one order updated since 2023"
    );
    assert_eq!(
        read_state(&s.p.raw, "sales_order").await.unwrap().unwrap(),
        before
    );
    assert!(etl::replay::render(&plans, since, false).contains("nothing is written"));

    let done = etl::replay::replay(&etl, &sales_order, since, false)
        .await
        .unwrap();
    let state = read_state(&s.p.raw, "sales_order").await.unwrap().unwrap();
    assert_eq!(state.window_end, since);
    assert_eq!(
        state.replayed_over, before.key,
        "the file written before the replay"
    );

    // The next run reads from there, though a later file exists; the warehouse is unchanged.
    let ingested = round(&s).await;
    assert_eq!(ingested["row_counts"]["sales_order"], 1, "{ingested}");
    assert_eq!(ingested["row_counts"]["staff"], 0, "other tables untouched");
    assert_exact(&s, "after the replay").await;
    let after = read_state(&s.p.raw, "sales_order").await.unwrap().unwrap();
    assert_eq!(after.replayed_over, None, "the replay is over");
    let next = round(&s).await;
    assert_eq!(next["row_counts"]["sales_order"], 0, "{next}");
    assert!(etl::replay::render(&done, since, true).contains("moved back"));

    // Nothing to do: a time after every watermark, or a table never ingested.
    let all = etl::source_tables(&[]).unwrap();
    let later = Utc::now() + chrono::TimeDelta::days(1);
    let plans = etl::replay::replay(&etl, &all, later, false).await.unwrap();
    assert!(plans.iter().all(|p| p.replay.is_none()));
    let fresh = Setup::new().await;
    let plans = etl::replay::replay(&fresh.etl(true, None).await, &sales_order, since, false)
        .await
        .unwrap();
    assert!(plans[0].replay.is_none());
}

#[tokio::test]
async fn a_replay_in_bounded_files_goes_through_every_file_it_passes_over() {
    // Split windows: the replay's own files are named before the file it passes over, so its
    // state must keep skipping that file until the window passes it.
    let s = Setup::new().await;
    round(&s).await;
    let source = s.p.source().await;
    source
        .batch_execute(
            "INSERT INTO sales_order (sales_order_id, created_at, last_updated, design_id,
               staff_id, counterparty_id, units_sold, unit_price, currency_id,
               agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id)
             SELECT 100 + i, '2024-11-01', '2024-11-14 09:00:00'::timestamp
                      + make_interval(secs => i), 1, 1, 1, i, 2.50, 1, '2024-12-01',
                    '2024-12-02', 1
             FROM generate_series(1, 12) AS i",
        )
        .await
        .unwrap();
    round(&s).await;
    let etl = s.etl(true, None).await;
    let sales_order = etl::source_tables(&["sales_order".into()]).unwrap();
    let since = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    etl::replay::replay(&etl, &sales_order, since, false)
        .await
        .unwrap();

    // One file per invocation (the deadline is past), so each starts from the state.
    let mut ingest = s.p.ingest_deps().await;
    ingest.config.max_rows_per_file = 5;
    ingest.config.deadline_margin = PAST_MARGIN;
    let (mut read, mut files) = (0, 0);
    for _ in 0..10 {
        tick().await;
        let event = json!({"tables_to_query": ["sales_order"]});
        let out = ingest::handler(LambdaEvent::new(event, context_at_deadline()), &ingest)
            .await
            .unwrap();
        let out = serde_json::to_value(out).unwrap();
        read += out["row_counts"]["sales_order"].as_u64().unwrap();
        files += out["files"]["sales_order"].as_array().map_or(0, Vec::len);
        let transformed = s.p.transform(out.clone()).await.unwrap();
        s.load(serde_json::to_value(transformed).unwrap()).await;
        let state = read_state(&s.p.raw, "sales_order").await.unwrap().unwrap();
        if state.replayed_over.is_none() {
            break;
        }
    }
    assert_eq!(read, 12, "every row since the replay's start, once");
    assert!(files > 2, "{files} files");
    assert_exact(&s, "after a replay in bounded files").await;
}

#[tokio::test]
async fn rebuilt_snapshots_equal_transforms_and_replace_a_lost_or_damaged_one() {
    let s = Setup::new().await;
    round(&s).await;
    let source = s.p.source().await;
    source.batch_execute(&source_changes()[1]).await.unwrap();
    round(&s).await;
    let etl = s.etl(true, None).await;
    let tables = etl::snapshots::snapshot_tables();
    let comparisons = |rebuilt: &[etl::snapshots::Rebuilt]| {
        rebuilt
            .iter()
            .map(|r| (r.table, r.comparison.clone(), r.written))
            .collect::<Vec<_>>()
    };
    let equal = |t| (t, etl::snapshots::Comparison::Equal, false);

    let rebuilt = etl::snapshots::rebuild(&etl, &tables, false, false)
        .await
        .unwrap();
    assert_eq!(
        comparisons(&rebuilt),
        [
            equal("staff"),
            equal("department"),
            equal("counterparty"),
            equal("address")
        ]
    );
    assert_eq!(rebuilt[3].raw_files, 2, "the address table's two raw files");

    // Lost: rebuilt and written, equal to what transform had made.
    let staff = utils::tables::table("staff").unwrap();
    let original = transform::snapshot::load(&s.p.processed, staff)
        .await
        .unwrap()
        .batch;
    s.p.processed
        .delete("_state/transform/staff.parquet")
        .await
        .unwrap();
    let rebuilt = etl::snapshots::rebuild(&etl, &[staff], false, false)
        .await
        .unwrap();
    assert_eq!(rebuilt[0].comparison, etl::snapshots::Comparison::Missing);
    assert!(rebuilt[0].written);
    assert_eq!(
        transform::snapshot::load(&s.p.processed, staff)
            .await
            .unwrap()
            .batch,
        original
    );

    // Damaged: one department renamed in the snapshot only. Shown, kept; replaced with --force.
    let department = utils::tables::table("department").unwrap();
    let current = transform::snapshot::load(&s.p.processed, department)
        .await
        .unwrap();
    let mut columns = current.batch.columns().to_vec();
    let names = transform::raw::texts(&current.batch, "department_name");
    let renamed: arrow::array::StringArray = (0..names.len())
        .map(|i| Some(if i == 0 { "Wrong" } else { names.value(i) }))
        .collect();
    columns[1] = std::sync::Arc::new(renamed);
    let damaged = arrow::array::RecordBatch::try_new(current.batch.schema(), columns).unwrap();
    assert!(
        transform::snapshot::replace(
            &s.p.processed,
            department,
            &damaged,
            current.etag.as_deref()
        )
        .await
        .unwrap()
    );
    let rebuilt = etl::snapshots::rebuild(&etl, &[department], false, false)
        .await
        .unwrap();
    assert_eq!(
        rebuilt[0].comparison,
        etl::snapshots::Comparison::Differs {
            newer_in_raw: 0,
            not_in_raw: 0,
            newer_in_snapshot: 0,
            same_version_other_values: 1
        }
    );
    assert!(!rebuilt[0].written);
    assert!(etl::snapshots::render(&rebuilt).contains("DIFFERS"));
    let forced = etl::snapshots::rebuild(&etl, &[department], true, false)
        .await
        .unwrap();
    assert!(forced[0].written);
    let again = etl::snapshots::rebuild(&etl, &[department], false, true)
        .await
        .unwrap();
    assert_eq!(again[0].comparison, etl::snapshots::Comparison::Equal);

    // Raw files transform has not merged yet: the snapshot is behind, not wrong.
    source
        .batch_execute(&format!(
            "UPDATE staff SET last_name = 'Newer', last_updated = {NOW_MS} WHERE staff_id = 2"
        ))
        .await
        .unwrap();
    s.p.ingest().await;
    let rebuilt = etl::snapshots::rebuild(&etl, &[staff], false, true)
        .await
        .unwrap();
    assert_eq!(
        rebuilt[0].comparison,
        etl::snapshots::Comparison::Behind { newer_in_raw: 1 }
    );

    let e = etl::snapshots::rebuild(
        &etl,
        &[utils::tables::table("payment").unwrap()],
        false,
        true,
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("transform keeps no snapshot of payment"),
        "{e}"
    );
}

#[tokio::test]
async fn quarantined_rows_are_listed_and_shown_with_their_reasons() {
    let s = Setup::new().await;
    s.p.source()
        .await
        .batch_execute(&order_with_a_bad_date())
        .await
        .unwrap();
    round(&s).await;
    let etl = s.etl(true, None).await;
    let files = etl::quarantine::list(&etl.processed, &etl.raw)
        .await
        .unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].table, "fact_sales_order");
    assert_eq!(files[0].rows, 1);
    let reason = "agreed_delivery_date: \"soon\" is not a date in the form YYYY-MM-DD";
    assert_eq!(files[0].reasons, BTreeMap::from([(reason.to_owned(), 1)]));
    assert!(etl::quarantine::render_list(&files).contains("1 x agreed_delivery_date"));

    let rows = etl::quarantine::read(&etl.processed, &etl.raw, &files[0].key)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["sales_order_id"], "4");
    assert_eq!(rows[0]["agreed_delivery_date"], "soon");
    assert_eq!(rows[0]["reason"], reason);
    assert!(etl::quarantine::render_rows(&rows).contains("soon"));

    let status = etl::status::status(&etl, HOUR).await.unwrap();
    let facts = status
        .warehouse_tables
        .iter()
        .find(|t| t.table == "fact_sales_order")
        .unwrap();
    assert_eq!((facts.quarantined_rows, facts.quarantine_files), (1, 1));

    let e = etl::quarantine::read(
        &etl.processed,
        &etl.raw,
        "fact_sales_order/2024/11/14/093005123456.parquet",
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("is not a quarantine file"), "{e}");
}

/// A lock table as Terraform creates it (`aws_dynamodb_table.lock`), on the local DynamoDB API.
async fn lock_table() -> (aws_sdk_dynamodb::Client, String) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let client = aws_sdk_dynamodb::Client::new(&sdk_config().await);
    let name = unique_name("lock");
    client
        .create_table()
        .table_name(&name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("lock_id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("lock_id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create the lock table");
    (client, name)
}

#[tokio::test]
async fn replays_and_rebuilds_take_the_pipelines_lock_and_refuse_while_a_run_holds_it() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let s = Setup::new().await;
    round(&s).await;
    let (client, table) = lock_table().await;
    let etl = s.etl(true, Some(&table)).await;
    let sales_order = etl::source_tables(&["sales_order".into()]).unwrap();
    let since = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    let before = read_state(&s.p.raw, "sales_order").await.unwrap();

    // An execution holds the lock, as the state machine's AcquireLock writes it.
    let execution = "arn:aws:states:eu-west-2:123456789012:execution:totesys-pipeline:run";
    client
        .put_item()
        .table_name(&table)
        .item("lock_id", AttributeValue::S("pipeline".into()))
        .item("owner", AttributeValue::S(execution.into()))
        .send()
        .await
        .unwrap();
    let e = etl::replay::replay(&etl, &sales_order, since, false)
        .await
        .unwrap_err();
    assert!(matches!(e, etl::Error::Locked { .. }), "{e}");
    assert!(e.to_string().contains(execution), "{e}");
    assert_eq!(read_state(&s.p.raw, "sales_order").await.unwrap(), before);
    let tables = etl::snapshots::snapshot_tables();
    let e = etl::snapshots::rebuild(&etl, &tables, true, false)
        .await
        .unwrap_err();
    assert!(matches!(e, etl::Error::Locked { .. }), "{e}");
    // A dry run needs no lock.
    etl::replay::replay(&etl, &sales_order, since, true)
        .await
        .unwrap();

    // Released: the replay takes the lock, moves the watermark and releases it.
    client
        .delete_item()
        .table_name(&table)
        .key("lock_id", AttributeValue::S("pipeline".into()))
        .send()
        .await
        .unwrap();
    etl::replay::replay(&etl, &sales_order, since, false)
        .await
        .unwrap();
    let after = read_state(&s.p.raw, "sales_order").await.unwrap().unwrap();
    assert_eq!(after.window_end, since);
    let lock_item = || async {
        client
            .get_item()
            .table_name(&table)
            .key("lock_id", AttributeValue::S("pipeline".into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
    };
    let item = lock_item().await;
    assert!(item.item().is_none(), "released: {item:?}");

    // A command holding it: its item says so and when it expires, for the state machine.
    let held = etl::lock::Lock::new(&sdk_config().await, &table)
        .acquire("replay", Utc::now())
        .await
        .unwrap();
    let item = lock_item().await;
    let item = item.item().unwrap();
    let owner = item["owner"].as_s().unwrap();
    assert!(owner.starts_with(etl::lock::OWNER_PREFIX), "{owner}");
    let expires = chrono::DateTime::parse_from_rfc3339(item["expires_at"].as_s().unwrap()).unwrap();
    assert!(
        expires > Utc::now() + chrono::Duration::minutes(59),
        "{expires}"
    );
    let e = etl::replay::replay(&etl, &sales_order, since, false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains(owner.as_str()), "{e}");
    held.release().await.unwrap();
}
