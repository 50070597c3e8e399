//! The ingest Lambda against a real PostgreSQL and a real S3 API.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::datatypes::{DataType, TimeUnit};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use ingest::{Config, Deps, Output, handler, ingest_table};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use totesys_tests::*;
use utils::db::Connector;
use utils::db::DbSource;
use utils::keys::parquet_key;
use utils::store::S3Store;
use utils::tables::{TABLES, table};
use utils::time::{format_time, parse_time};
use utils::watermark::{last_ingest_time, record_ingest, state_key};

async fn deps_for(source: DbSource, store: &S3Store, lag: Duration) -> Deps {
    let sdk = sdk_config().await;
    Deps {
        db: Connector::new(source.clone(), aws_sdk_secretsmanager::Client::new(&sdk)),
        config: Config {
            source,
            bucket: store.bucket().to_owned(),
            safety_lag: lag,
            max_rows_per_file: ingest::config::DEFAULT_MAX_ROWS_PER_FILE,
            deadline_margin: utils::deadline::DEFAULT_MARGIN,
            tables: TABLES.iter().collect(),
            landing_bucket: None,
            api_base_url: None,
            datasets: Vec::new(),
        },
        store: store.clone(),
        landing: None,
        kms: aws_sdk_kms::Client::new(&sdk),
        api: ingest::api::ApiClient::new(aws_sdk_secretsmanager::Client::new(&sdk), None),
    }
}

async fn deps(db: &TestDb, store: &S3Store) -> Deps {
    deps_for(DbSource::Url(db.url.clone()), store, Duration::ZERO).await
}

async fn invoke(deps: &Deps, payload: Value) -> Result<Output, ingest::Error> {
    handler(LambdaEvent::new(payload, Context::default()), deps).await
}

/// Seeds a source, changes it with `sql`, and ingests every table, which must fail: the error
/// and every key left in the bucket.
async fn run_all_after(sql: &str) -> (ingest::Error, Vec<String>) {
    let db = TestDb::source(true).await;
    let store = bucket().await;
    db.client().await.batch_execute(sql).await.unwrap();
    let err = invoke(&deps(&db, &store).await, json!({}))
        .await
        .unwrap_err();
    (err, all_keys(&store).await)
}

/// Every row of every file written for `table` so far, decoded.
async fn ingested_rows(store: &S3Store, name: &str) -> Vec<Vec<Cell>> {
    let spec = table(name).unwrap();
    let mut rows = Vec::new();
    for key in store.list_keys(&format!("{name}/"), None).await.unwrap() {
        rows.extend(parquet_rows(spec, &read_object(store, &key).await.batches));
    }
    rows.sort();
    rows
}

#[tokio::test]
async fn first_run_copies_every_table_value_for_value() {
    let db = TestDb::source(true).await;
    let store = bucket().await;
    let out = invoke(&deps(&db, &store).await, json!({})).await.unwrap();

    assert!(out.has_new_data);
    assert_eq!(out.bucket, store.bucket());
    assert_eq!(out.files.len(), 11);
    let client = db.client().await;
    for spec in TABLES {
        let key = only(&out.files[spec.name]);
        assert!(key.starts_with(&format!("{}/", spec.name)), "{key}");
        let file = read_object(&store, key).await;
        let expected = source_rows(&client, spec, "true").await;
        assert!(!expected.is_empty(), "{spec}: seed has rows");
        assert_eq!(parquet_rows(spec, &file.batches), expected, "{spec}");
        assert_eq!(out.row_counts[spec.name], expected.len() as u64, "{spec}");
        assert_eq!(
            file.metadata_value("totesys.row_count"),
            Some(expected.len().to_string().as_str())
        );
        assert_eq!(file.metadata_value("totesys.source_table"), Some(spec.name));
        assert_eq!(
            file.metadata_value("totesys.window_start"),
            Some("-infinity")
        );
        assert_eq!(
            file.metadata_value("totesys.pipeline_version"),
            Some(env!("CARGO_PKG_VERSION"))
        );
    }
    // One window end for the whole run, and it names every key.
    let ends: Vec<&str> = out
        .files
        .values()
        .map(|k| only(k))
        .map(|k| &k[k.find('/').unwrap()..])
        .collect();
    assert!(ends.windows(2).all(|w| w[0] == w[1]), "{ends:?}");
}

#[tokio::test]
async fn parquet_has_the_registry_types_and_pyarrow_reads_it() {
    let db = TestDb::source(true).await;
    let store = bucket().await;
    let out = invoke(
        &deps(&db, &store).await,
        json!({"tables_to_query": ["payment", "transaction"]}),
    )
    .await
    .unwrap();
    let payment = read_object(&store, only(&out.files["payment"])).await;
    let types: BTreeMap<&str, DataType> = payment
        .schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type().clone()))
        .collect();
    assert_eq!(types["payment_id"], DataType::Int32);
    assert_eq!(types["payment_amount"], DataType::Decimal128(10, 2));
    assert_eq!(
        types["last_updated"],
        DataType::Timestamp(TimeUnit::Millisecond, None)
    );
    assert_eq!(types["payment_date"], DataType::Utf8);
    assert_eq!(types["paid"], DataType::Boolean);
    let pg_types: Value =
        serde_json::from_str(payment.metadata_value("totesys.pg_types").unwrap()).unwrap();
    assert_eq!(pg_types["payment_amount"], "numeric(10,2)");
    assert_eq!(pg_types["last_updated"], "timestamp(3) without time zone");

    // A third-party reader sees the same types, values and metadata.
    let dir = std::env::temp_dir().join(unique_name("pyarrow"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut paths = Vec::new();
    for t in ["payment", "transaction"] {
        let path = dir.join(format!("{t}.parquet"));
        std::fs::write(
            &path,
            store.get(only(&out.files[t])).await.unwrap().unwrap(),
        )
        .unwrap();
        paths.push(path);
    }
    let script = r#"
import json, sys
import pyarrow.parquet as pq
out = {}
for path in sys.argv[1:]:
    t = pq.read_table(path)
    md = {k.decode(): v.decode() for k, v in (pq.read_metadata(path).metadata or {}).items()}
    out[md["totesys.source_table"]] = {
        "types": {f.name: str(f.type) for f in t.schema},
        "rows": t.num_rows,
        "first": {k: str(v) for k, v in t.sort_by(t.column_names[0]).slice(0, 1).to_pylist()[0].items()},
    }
print(json.dumps(out))
"#;
    let python = std::env::var("TOTESYS_PYTHON").expect("TOTESYS_PYTHON: run through make test");
    let result = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .args(&paths)
        .output()
        .expect("run pyarrow");
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let seen: Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(
        seen["payment"]["types"],
        json!({
            "payment_id": "int32", "created_at": "timestamp[ms]", "last_updated": "timestamp[ms]",
            "transaction_id": "int32", "counterparty_id": "int32",
            "payment_amount": "decimal128(10, 2)", "currency_id": "int32",
            "payment_type_id": "int32", "paid": "bool", "payment_date": "string",
            "company_ac_number": "int32", "counterparty_ac_number": "int32"
        })
    );
    assert_eq!(seen["payment"]["rows"], 3);
    assert_eq!(
        seen["payment"]["first"],
        json!({
            "payment_id": "1", "created_at": "2022-11-03 14:20:52.187000",
            "last_updated": "2022-11-03 14:20:52.187000", "transaction_id": "2",
            "counterparty_id": "1", "payment_amount": "552548.62", "currency_id": "2",
            "payment_type_id": "3", "paid": "False", "payment_date": "2022-11-04",
            "company_ac_number": "67305075", "counterparty_ac_number": "31622269"
        })
    );
    assert_eq!(seen["transaction"]["types"]["transaction_type"], "string");
    assert_eq!(seen["transaction"]["first"]["transaction_type"], "PURCHASE");
    assert_eq!(seen["transaction"]["first"]["sales_order_id"], "None");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn incremental_run_picks_exactly_the_changed_rows() {
    let db = TestDb::source(true).await;
    let store = bucket().await;
    let deps = deps(&db, &store).await;
    let first = invoke(&deps, json!({})).await.unwrap();
    let client = db.client().await;
    tick().await;
    client
        .batch_execute(&format!(
            "INSERT INTO sales_order VALUES
               (200, {NOW_MS}, {NOW_MS}, 1, 2, 1, 10, 12.50, 1, '2024-12-01', '2024-12-02', 1),
               (201, {NOW_MS}, {NOW_MS}, 2, 3, 2, 20, 7.25, 2, '2024-12-03', '2024-12-04', 2);
             UPDATE payment SET paid = true, last_updated = {NOW_MS} WHERE payment_id = 1;
             UPDATE department SET department_name = 'Sales & Marketing', last_updated = {NOW_MS}
               WHERE department_id = 1;"
        ))
        .await
        .unwrap();
    tick().await;
    let second = invoke(&deps, json!({})).await.unwrap();

    assert!(second.has_new_data);
    assert_eq!(
        second.files.keys().collect::<Vec<_>>(),
        ["department", "payment", "sales_order"]
    );
    let since = only(&first.files["staff"]).to_owned();
    let end = parse_time(
        read_object(&store, &since)
            .await
            .metadata_value("totesys.window_end")
            .unwrap(),
    )
    .unwrap();
    let changed = format!(
        "last_updated >= '{}'::timestamptz AT TIME ZONE 'UTC'",
        format_time(end)
    );
    for (name, keys) in &second.files {
        let spec = table(name).unwrap();
        let file = read_object(&store, only(keys)).await;
        let expected = source_rows(&client, spec, &changed).await;
        assert_eq!(parquet_rows(spec, &file.batches), expected, "{name}");
        assert_eq!(
            file.metadata_value("totesys.window_start"),
            Some(format_time(end).as_str()),
            "{name}: the window starts where the last one ended"
        );
    }
    assert_eq!(second.row_counts["sales_order"], 2);
    assert_eq!(second.row_counts["payment"], 1);
    assert_eq!(second.row_counts["department"], 1);
    assert_eq!(second.row_counts["staff"], 0);

    // Over both runs each table holds every row version exactly once.
    for spec in TABLES {
        assert_eq!(
            ingested_rows(&store, spec.name).await.len(),
            source_rows(&client, spec, "true").await.len()
                + usize::from(["payment", "department"].contains(&spec.name)),
            "{spec}"
        );
    }

    let third = invoke(&deps, json!({})).await.unwrap();
    assert!(!third.has_new_data);
    assert!(third.files.is_empty());
    assert!(third.row_counts.values().all(|n| *n == 0));
}

#[tokio::test]
async fn rows_sharing_the_boundary_millisecond_are_read_exactly_once() {
    let db = TestDb::source(false).await;
    let store = bucket().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO currency VALUES
               (1, 'GBP', '2024-01-01 00:00:00', '2024-11-14 09:30:04.999'),
               (2, 'USD', '2024-01-01 00:00:00', '2024-11-14 09:30:05.000'),
               (3, 'EUR', '2024-01-01 00:00:00', '2024-11-14 09:30:05.000'),
               (4, 'CHF', '2024-01-01 00:00:00', '2024-11-14 09:30:05.000'),
               (5, 'JPY', '2024-01-01 00:00:00', '2024-11-14 09:30:05.001');",
        )
        .await
        .unwrap();
    let currency = table("currency").unwrap();
    let at = |s: &str| parse_time(s).unwrap();

    // The first window ends exactly on the shared millisecond: those rows belong to the next.
    let first = ingest_table(
        &client,
        &store,
        currency,
        at("2024-11-14T09:30:05Z"),
        1_000_000,
    )
    .await
    .unwrap();
    assert_eq!(first.rows, 1);
    let second = ingest_table(
        &client,
        &store,
        currency,
        at("2024-11-14T09:30:05.001Z"),
        1_000_000,
    )
    .await
    .unwrap();
    assert_eq!(second.rows, 3);
    let third = ingest_table(
        &client,
        &store,
        currency,
        at("2024-11-15T00:00:00Z"),
        1_000_000,
    )
    .await
    .unwrap();
    assert_eq!(third.rows, 1);
    let codes: Vec<Cell> = ingested_rows(&store, "currency")
        .await
        .into_iter()
        .map(|r| r[1].clone())
        .collect();
    assert_eq!(
        codes,
        ["GBP", "USD", "EUR", "CHF", "JPY"].map(|c| Cell::Text(c.into()))
    );
}

#[tokio::test]
async fn a_transaction_committing_after_the_run_is_picked_up_by_the_next_run() {
    let db = TestDb::source(true).await;
    let store = bucket().await;
    let deps = deps(&db, &store).await;
    invoke(&deps, json!({})).await.unwrap();

    // The application opens a transaction and stamps a row, but commits only after the next
    // ingest has read the table.
    let app = db.client().await;
    app.batch_execute(&format!(
        "BEGIN;
         INSERT INTO sales_order VALUES
           (300, {NOW_MS}, {NOW_MS}, 1, 1, 1, 5, 1.00, 1, '2024-12-01', '2024-12-02', 1);"
    ))
    .await
    .unwrap();
    let stamped: DateTime<Utc> = app
        .query_one(
            "SELECT last_updated FROM sales_order WHERE sales_order_id = 300",
            &[],
        )
        .await
        .unwrap()
        .get::<_, chrono::NaiveDateTime>(0)
        .and_utc();
    tick().await;
    let during = invoke(&deps, json!({})).await.unwrap();
    assert_eq!(during.row_counts["sales_order"], 0);
    let held_back = last_ingest_time(&store, "sales_order")
        .await
        .unwrap()
        .unwrap();
    assert!(
        held_back <= stamped,
        "the window end {held_back} must not pass the open transaction's row {stamped}"
    );

    app.batch_execute("COMMIT").await.unwrap();
    let after = invoke(&deps, json!({})).await.unwrap();
    assert_eq!(after.row_counts["sales_order"], 1);
    let rows = ingested_rows(&store, "sales_order").await;
    assert_eq!(rows.iter().filter(|r| r[0] == Cell::Int(300)).count(), 1);
    assert_eq!(rows.len(), 4);
}

#[tokio::test]
async fn the_safety_lag_leaves_just_stamped_rows_for_a_later_run() {
    let db = TestDb::source(true).await;
    let store = bucket().await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "UPDATE staff SET last_updated = {NOW_MS} WHERE staff_id = 1"
        ))
        .await
        .unwrap();
    let lagged = deps_for(
        DbSource::Url(db.url.clone()),
        &store,
        Duration::from_secs(60),
    )
    .await;
    let out = invoke(&lagged, json!({"tables_to_query": ["staff"]}))
        .await
        .unwrap();
    assert_eq!(out.row_counts["staff"], 2, "staff 1 is within the lag");
    let out = invoke(
        &deps(&db, &store).await,
        json!({"tables_to_query": ["staff"]}),
    )
    .await
    .unwrap();
    assert_eq!(out.row_counts["staff"], 1);
    assert_eq!(ingested_rows(&store, "staff").await.len(), 3);
}

#[tokio::test]
async fn a_crash_between_data_file_and_watermark_loses_and_duplicates_nothing() {
    let db = TestDb::source(true).await;
    let store = bucket().await;
    let deps = deps(&db, &store).await;
    let client = db.client().await;
    let insert = |id: i32| {
        format!(
            "INSERT INTO \"transaction\" VALUES ({id}, 'SALE', NULL, NULL, {NOW_MS}, {NOW_MS});
             INSERT INTO payment VALUES ({id}, {NOW_MS}, {NOW_MS}, {id}, 1, 10.00, 1, 1, false,
             '2024-12-01', 1, 2)"
        )
    };
    let only_payment = json!({"tables_to_query": ["payment"]});
    invoke(&deps, only_payment.clone()).await.unwrap();
    let old_state = store.get(&state_key("payment")).await.unwrap().unwrap();

    // Run 2 writes its data file; the crash loses its state update.
    client.batch_execute(&insert(400)).await.unwrap();
    tick().await;
    let second = invoke(&deps, only_payment.clone()).await.unwrap();
    assert_eq!(second.row_counts["payment"], 1);
    store
        .put(&state_key("payment"), old_state, "application/json")
        .await
        .unwrap();

    client.batch_execute(&insert(401)).await.unwrap();
    tick().await;
    let third = invoke(&deps, only_payment.clone()).await.unwrap();
    assert_eq!(third.row_counts["payment"], 1, "only the new row");

    // Worse: the state object is gone altogether.
    store.delete(&state_key("payment")).await.unwrap();
    client.batch_execute(&insert(402)).await.unwrap();
    tick().await;
    let fourth = invoke(&deps, only_payment).await.unwrap();
    assert_eq!(fourth.row_counts["payment"], 1);

    assert_eq!(
        ingested_rows(&store, "payment").await,
        source_rows(&client, table("payment").unwrap(), "true").await
    );
}

#[tokio::test]
async fn bad_events_fail_with_typed_errors_and_write_nothing() {
    let db = TestDb::source(true).await;
    let store = bucket().await;
    let deps = deps(&db, &store).await;
    for (event, error_type, mentions) in [
        (
            json!({"tables_to_query": ["sales_order", "orders"]}),
            "UnknownTable",
            "\"orders\"",
        ),
        (
            json!({"tables_to_query": ["staff; DROP TABLE staff; --"]}),
            "UnknownTable",
            "DROP TABLE",
        ),
        (
            json!({"tables_to_query": "staff"}),
            "InvalidEvent",
            "tables_to_query",
        ),
        (json!([1, 2]), "InvalidEvent", "JSON object"),
        (json!({"tables": ["staff"]}), "InvalidEvent", "\"tables\""),
    ] {
        let err = invoke(&deps, event.clone()).await.unwrap_err();
        let diagnostic = lambda_runtime::Diagnostic::from(err);
        assert_eq!(diagnostic.error_type, error_type, "{event}");
        assert!(
            diagnostic.error_message.contains(mentions),
            "{event}: {}",
            diagnostic.error_message
        );
    }
    assert_eq!(all_keys(&store).await, Vec::<String>::new());
    let client = db.client().await;
    let staff: i64 = client
        .query_one("SELECT count(*) FROM staff", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(staff, 3);
}

#[tokio::test]
async fn an_unreachable_database_is_a_transient_error() {
    let store = bucket().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://etl:hunter2@127.0.0.1:{port}/totesys?connect_timeout=2");
    let deps = deps_for(DbSource::Url(url), &store, Duration::ZERO).await;
    let err = invoke(&deps, json!({})).await.unwrap_err();
    let diagnostic = lambda_runtime::Diagnostic::from(err);
    assert_eq!(diagnostic.error_type, "TransientDatabaseError");
    assert!(!diagnostic.error_message.contains("hunter2"));
    assert_eq!(all_keys(&store).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_source_that_differs_from_the_registry_fails_before_writing() {
    let (err, keys) = run_all_after(
        "ALTER TABLE currency ALTER COLUMN currency_code TYPE text;
         ALTER TABLE staff DROP COLUMN email_address;",
    )
    .await;
    assert_eq!(err.error_type(), "SourceSchemaMismatch");
    assert_eq!(
        err.to_string(),
        "the source schema does not match the table registry: currency.currency_code is text, \
         expected character varying(3); staff.email_address is missing (expected text)"
    );
    assert_eq!(keys, Vec::<String>::new());
}

#[tokio::test]
async fn credentials_come_from_secrets_manager_in_both_shapes() {
    let db = TestDb::source(true).await;
    let store = bucket().await;
    let sdk = sdk_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let config: tokio_postgres::Config = db.url.parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("TCP host expected, got {other:?}"),
    };
    let port = config.get_ports()[0];
    let user = config.get_user().unwrap();
    let password = config
        .get_password()
        .map(|p| String::from_utf8(p.to_vec()).unwrap())
        .unwrap_or_default();
    let shapes = [
        json!({"host": host, "port": port, "user": user, "password": password, "database": db.name}),
        json!({"username": user, "password": password, "engine": "postgres", "host": host,
               "port": port.to_string(), "dbname": db.name}),
    ];
    for (i, secret) in shapes.iter().enumerate() {
        let id = unique_name(&format!("totesys-source-{i}"));
        secrets
            .create_secret()
            .name(&id)
            .secret_string(secret.to_string())
            .send()
            .await
            .unwrap();
        let deps = deps_for(DbSource::Secret(id), &store, Duration::ZERO).await;
        let out = invoke(&deps, json!({"tables_to_query": ["currency"]}))
            .await
            .unwrap();
        assert_eq!(out.row_counts["currency"], if i == 0 { 3 } else { 0 });
    }
    let missing = deps_for(
        DbSource::Secret("no-such-secret".into()),
        &store,
        Duration::ZERO,
    )
    .await;
    let err = invoke(&missing, json!({})).await.unwrap_err();
    assert_eq!(err.error_type(), "Configuration");
    assert!(err.to_string().contains("no-such-secret"), "{err}");
}

#[tokio::test]
async fn last_ingest_lookup_stays_right_and_constant_over_a_long_history() {
    let store = bucket().await;
    let base = parse_time("2024-01-01T00:00:00Z").unwrap();
    let times: Vec<DateTime<Utc>> = (0..1_200)
        .map(|i| base + chrono::Duration::minutes(20 * i))
        .collect();
    futures_util::stream::iter(times.iter().map(|t| {
        let store = store.clone();
        let key = parquet_key("sales_order", *t);
        async move {
            store
                .put(&key, Bytes::new(), "application/octet-stream")
                .await
        }
    }))
    .buffer_unordered(32)
    .try_collect::<Vec<()>>()
    .await
    .unwrap();
    let newest = *times.last().unwrap();

    // The watermark found, and the requests it took.
    let lookup = || async {
        let before = store.requests();
        let found = last_ingest_time(&store, "sales_order").await.unwrap();
        (found, store.requests() - before)
    };

    // No state object: a full, paginated listing finds the newest file (GET + 2 LIST pages).
    assert_eq!(lookup().await, (Some(newest), 3));

    // With a state object: one GET and one LIST, however long the history.
    record_ingest(&store, "sales_order", newest, None, 0, true)
        .await
        .unwrap();
    assert_eq!(lookup().await, (Some(newest), 2));

    // A file newer than the state (a crash before the state update) is still seen.
    let crashed = newest + chrono::Duration::minutes(20);
    store
        .put(
            &parquet_key("sales_order", crashed),
            Bytes::new(),
            "application/octet-stream",
        )
        .await
        .unwrap();
    assert_eq!(lookup().await, (Some(crashed), 2));

    // Other tables' files and stray objects do not count.
    assert_eq!(last_ingest_time(&store, "sales").await.unwrap(), None);
}

/// Two runs that meet (a manual invocation beside the schedule) each record their window end:
/// the state keeps the later one, whichever writes last, so no later run reads a window again.
#[tokio::test]
async fn the_watermark_state_never_moves_back() {
    let store = bucket().await;
    let earlier = parse_time("2024-11-14T09:30:05.123456Z").unwrap();
    let later = earlier + chrono::Duration::minutes(20);
    let recorded = || async {
        let bytes = store.get(&state_key("payment")).await.unwrap().unwrap();
        serde_json::from_slice::<utils::watermark::IngestState>(&bytes)
            .unwrap()
            .window_end
    };
    record_ingest(&store, "payment", later, None, 0, true)
        .await
        .unwrap();
    record_ingest(&store, "payment", earlier, None, 0, true)
        .await
        .unwrap();
    assert_eq!(recorded().await, later);

    // Many at once, in any order: the latest stays.
    let ends: Vec<_> = (0..8)
        .map(|i| later + chrono::Duration::seconds(i))
        .collect();
    futures_util::future::try_join_all(
        ends.iter()
            .rev()
            .map(|end| record_ingest(&store, "payment", *end, None, 0, true)),
    )
    .await
    .unwrap();
    assert_eq!(recorded().await, *ends.last().unwrap());
    assert_eq!(
        last_ingest_time(&store, "payment").await.unwrap(),
        ends.last().copied()
    );
}

#[tokio::test]
async fn a_value_the_raw_zone_cannot_hold_fails_the_table_and_writes_nothing_for_it() {
    let (err, keys) =
        run_all_after("UPDATE staff SET created_at = 'infinity' WHERE staff_id = 2").await;
    assert_eq!(err.error_type(), "InvalidSourceData");
    assert_eq!(
        err.to_string(),
        "table staff, column created_at: expected timestamp(3) without time zone: \
         error deserializing column 5: infinite timestamp"
    );
    assert!(keys.iter().all(|k| !k.contains("staff")), "{keys:?}");
    // The tables before it in the run keep their files and watermarks.
    assert!(keys.contains(&state_key("design")), "{keys:?}");
    assert!(!keys.iter().any(|k| k.starts_with("payment/")), "{keys:?}");
}

/// The guard can wait only for transactions it can see: other users' are visible to a member of
/// pg_read_all_stats, and hidden otherwise (the documented degradation, docs/src/ingest.md).
#[tokio::test]
async fn the_guard_sees_other_users_transactions_only_with_pg_read_all_stats() {
    let db = TestDb::source(true).await;
    let admin = db.client().await;
    let role = unique_name("etl").replace('-', "_");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'etl-secret';
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};"
        ))
        .await
        .unwrap();
    // The application, as another user, holds a writing transaction open.
    let app = db.client().await;
    app.batch_execute("BEGIN; UPDATE currency SET currency_code = 'GBP' WHERE currency_id = 1")
        .await
        .unwrap();
    let app_started: DateTime<Utc> = app
        .query_one("SELECT now() AT TIME ZONE 'UTC'", &[])
        .await
        .unwrap()
        .get::<_, chrono::NaiveDateTime>(0)
        .and_utc();
    tick().await;
    let etl_end = || async {
        let mut config: tokio_postgres::Config = db.url.parse().unwrap();
        config.user(&role).password("etl-secret");
        let etl = utils::db::connect(config, None, "etl-test").await.unwrap();
        (
            ingest::sees_other_transactions(&etl).await.unwrap(),
            ingest::window_end(&etl, Duration::ZERO).await.unwrap(),
        )
    };

    let (sees, end) = etl_end().await;
    assert!(!sees);
    assert!(
        end > app_started,
        "without the role the open transaction is invisible"
    );

    admin
        .batch_execute(&format!("GRANT pg_read_all_stats TO {role}"))
        .await
        .unwrap();
    let (sees, end) = etl_end().await;
    assert!(sees);
    assert!(end <= app_started, "{end} must not pass {app_started}");

    app.batch_execute("ROLLBACK").await.unwrap();
    admin
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await
        .unwrap();
}

/// 30 currency rows in an empty source, stamped one millisecond apart from 09:00:00.001,
/// except rows 10 to 16, which share 09:00:00.010. Cut at every fifth row, the window makes
/// five files of 5, 4, 11 (the shared stamp kept together), 5 and 5 rows.
const THIRTY_CURRENCIES: &str = "
    INSERT INTO currency (currency_id, currency_code, created_at, last_updated)
    SELECT i, 'C' || lpad(i::text, 2, '0'), '2024-01-01',
           '2024-11-14 09:00:00'::timestamp
             + make_interval(secs => (CASE WHEN i BETWEEN 10 AND 16 THEN 10 ELSE i END) / 1000.0)
    FROM generate_series(1, 30) AS i";

/// The rows of each currency file, in key order, as currency ids.
async fn currency_files(store: &S3Store) -> Vec<(String, Vec<i32>)> {
    let mut files = Vec::new();
    for key in store.list_keys("currency/", None).await.unwrap() {
        let file = read_object(store, &key).await;
        let ids = parquet_rows(table("currency").unwrap(), &file.batches)
            .into_iter()
            .map(|row| match &row[0] {
                Cell::Int(id) => i32::try_from(*id).unwrap(),
                other => panic!("currency_id {other:?}"),
            })
            .collect();
        // The key is named after the end of the sub-window the file holds.
        let end = file
            .metadata_value("totesys.window_end")
            .unwrap()
            .to_owned();
        assert_eq!(key, parquet_key("currency", parse_time(&end).unwrap()));
        files.push((key, ids));
    }
    files
}

fn ids(range: std::ops::RangeInclusive<i32>) -> Vec<i32> {
    range.collect()
}

/// A source of [`THIRTY_CURRENCIES`] alone, a bucket, and the ingest's dependencies.
async fn thirty_currencies() -> (TestDb, S3Store, Deps) {
    let db = TestDb::source(false).await;
    let store = bucket().await;
    db.client()
        .await
        .batch_execute(THIRTY_CURRENCIES)
        .await
        .unwrap();
    let deps = deps(&db, &store).await;
    (db, store, deps)
}

/// The ids of every currency file, sorted.
async fn all_currency_ids(store: &S3Store) -> Vec<i32> {
    let mut all: Vec<i32> = currency_files(store)
        .await
        .into_iter()
        .flat_map(|(_, ids)| ids)
        .collect();
    all.sort();
    all
}

#[tokio::test]
async fn a_window_of_more_rows_than_a_file_holds_is_split_keeping_shared_stamps_together() {
    let (_db, store, mut deps) = thirty_currencies().await;
    deps.config.max_rows_per_file = 5;
    let out = invoke(&deps, json!({"tables_to_query": ["currency"]}))
        .await
        .unwrap();
    assert!(out.complete);
    assert_eq!(out.row_counts["currency"], 30);
    let files = currency_files(&store).await;
    assert_eq!(
        out.files["currency"],
        files.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        "every file, oldest first"
    );
    let sorted = |mut v: Vec<i32>| {
        v.sort();
        v
    };
    let contents: Vec<Vec<i32>> = files.into_iter().map(|(_, ids)| sorted(ids)).collect();
    assert_eq!(
        contents,
        [
            ids(1..=5),
            ids(6..=9),
            ids(10..=20),
            ids(21..=25),
            ids(26..=30)
        ]
    );
    // The watermark is at the run's window end, past every row.
    let state = store.get(&state_key("currency")).await.unwrap().unwrap();
    let state: Value = serde_json::from_slice(&state).unwrap();
    assert_eq!(state["key"], out.files["currency"][4]);
    assert_eq!(state["rows"], 5);
}

#[tokio::test]
async fn a_crash_between_the_files_of_a_window_resumes_with_nothing_lost_or_duplicated() {
    let db = TestDb::source(false).await;
    let store = bucket().await;
    let client = db.client().await;
    client.batch_execute(THIRTY_CURRENCIES).await.unwrap();
    // Row 23 breaks the fourth file: the run fails there.
    client
        .batch_execute("UPDATE currency SET created_at = 'infinity' WHERE currency_id = 23")
        .await
        .unwrap();
    let mut deps = deps(&db, &store).await;
    deps.config.max_rows_per_file = 5;
    let event = json!({"tables_to_query": ["currency"]});
    let e = invoke(&deps, event.clone()).await.unwrap_err();
    assert_eq!(e.error_type(), "InvalidSourceData", "{e}");
    let files = currency_files(&store).await;
    assert_eq!(files.len(), 3, "the three files before the failure stay");
    // Each of them moved the watermark: the next run starts at the fourth sub-window.
    let start = last_ingest_time(&store, "currency").await.unwrap().unwrap();
    assert_eq!(format_time(start), "2024-11-14T09:00:00.021000Z");

    client
        .batch_execute("UPDATE currency SET created_at = '2024-01-01' WHERE currency_id = 23")
        .await
        .unwrap();
    let out = invoke(&deps, event).await.unwrap();
    assert_eq!(out.row_counts["currency"], 10);
    assert_eq!(out.files["currency"].len(), 2);
    assert_eq!(
        all_currency_ids(&store).await,
        ids(1..=30),
        "every row once"
    );
}

#[tokio::test]
async fn an_invocation_at_its_deadline_returns_incomplete_and_the_next_goes_on() {
    let (_db, store, mut deps) = thirty_currencies().await;
    deps.config.max_rows_per_file = 5;
    deps.config.deadline_margin = PAST_MARGIN;
    let mut event = json!({"tables_to_query": ["currency", "design"]});
    let mut outputs = Vec::new();
    loop {
        let context = context_at_deadline();
        let deadline = context.deadline();
        let out = handler(LambdaEvent::new(event.clone(), context), &deps)
            .await
            .unwrap();
        assert!(std::time::SystemTime::now() < deadline);
        outputs.push(out.clone());
        match out.remaining {
            Some(left) => {
                assert!(!out.complete);
                event = serde_json::to_value(left).unwrap();
            }
            None => break,
        }
        assert!(outputs.len() < 10, "no progress: {outputs:?}");
    }
    let files: Vec<usize> = outputs
        .iter()
        .map(|o| o.files.values().map(Vec::len).sum())
        .collect();
    // Each invocation cuts what is left of the window anew, so the cuts may fall elsewhere
    // than in one run; each still writes one file (the last, reading only the empty design
    // table, none).
    assert!(files.len() >= 5, "{files:?}");
    assert!(
        files[..files.len() - 1].iter().all(|n| *n == 1),
        "{files:?}"
    );
    assert_eq!(
        serde_json::to_value(&outputs[0].remaining).unwrap(),
        json!({"tables_to_query": ["currency", "design"]}),
        "design (empty, not read yet) is left too"
    );
    assert!(outputs.last().unwrap().complete);
    let rows: u64 = outputs
        .iter()
        .filter_map(|o| o.row_counts.get("currency"))
        .sum();
    assert_eq!(rows, 30);
    assert_eq!(
        all_currency_ids(&store).await,
        ids(1..=30),
        "every row once"
    );
}

#[tokio::test]
async fn a_fact_table_read_alone_waits_for_its_dimension_tables() {
    let db = TestDb::source(true).await;
    let store = bucket().await;
    let deps = deps(&db, &store).await;
    let client = db.client().await;
    invoke(&deps, json!({})).await.unwrap();
    client
        .batch_execute(&format!(
            "INSERT INTO sales_order VALUES
               (300, {NOW_MS}, {NOW_MS}, 1, 1, 1, 5, 1.00, 1, '2024-12-01', '2024-12-02', 1)"
        ))
        .await
        .unwrap();
    tick().await;
    let sales = json!({"tables_to_query": ["sales_order"]});
    // The dimension tables were read up to the first run's end: the new row waits for them.
    let out = invoke(&deps, sales.clone()).await.unwrap();
    assert_eq!(out.row_counts["sales_order"], 0);
    assert!(
        out.complete,
        "the dimension tables are caught up: nothing to wait for"
    );
    let dimensions: Vec<&str> = TABLES
        .iter()
        .map(|t| t.name)
        .filter(|t| !ingest::FACT_TABLES.contains(t))
        .collect();
    invoke(&deps, json!({"tables_to_query": dimensions}))
        .await
        .unwrap();
    let out = invoke(&deps, sales.clone()).await.unwrap();
    assert_eq!(out.row_counts["sales_order"], 1);
    assert!(out.complete);

    // A dimension table mid-backfill (stopped short of its window end): the fact table is
    // read up to its watermark and reports itself incomplete, for another round.
    let state = store.get(&state_key("transaction")).await.unwrap().unwrap();
    let mut state: Value = serde_json::from_slice(&state).unwrap();
    let put_state = |state: &Value| {
        let body = Bytes::from(serde_json::to_vec(state).unwrap());
        let store = store.clone();
        async move {
            store
                .put(&state_key("transaction"), body, "application/json")
                .await
                .unwrap()
        }
    };
    state["caught_up"] = json!(false);
    put_state(&state).await;
    let out = invoke(&deps, sales.clone()).await.unwrap();
    assert!(!out.complete);
    assert_eq!(
        serde_json::to_value(&out.remaining).unwrap(),
        json!({"tables_to_query": ["sales_order"]})
    );
    // One whose watermark is at or past the run's end (its next window was empty, so its run
    // recorded nothing) holds nothing back: otherwise the rounds never end.
    state["window_end"] = json!("2100-01-01T00:00:00.000000Z");
    put_state(&state).await;
    assert!(invoke(&deps, sales).await.unwrap().complete);
    // Read on its own, in one snapshot with the dimension tables, nothing holds it back.
    assert!(invoke(&deps, json!({})).await.unwrap().complete);
}

#[tokio::test]
async fn an_invocation_writes_a_bounded_number_of_files_and_the_next_goes_on() {
    let (_db, store, mut deps) = thirty_currencies().await;
    // A file per row: 24 files (the 7 rows sharing a stamp make one), more than an
    // invocation writes.
    deps.config.max_rows_per_file = 1;
    let event = json!({"tables_to_query": ["currency"]});
    let first = invoke(&deps, event.clone()).await.unwrap();
    assert_eq!(
        first.files["currency"].len(),
        ingest::MAX_FILES_PER_INVOCATION
    );
    assert!(!first.complete);
    assert_eq!(
        serde_json::to_value(&first.remaining).unwrap(),
        json!({"tables_to_query": ["currency"]})
    );
    let second = invoke(&deps, event).await.unwrap();
    assert!(second.complete);
    assert_eq!(
        second.files["currency"].len(),
        24 - ingest::MAX_FILES_PER_INVOCATION
    );
    assert_eq!(
        all_currency_ids(&store).await,
        ids(1..=30),
        "every row once"
    );
}
