//! The transform Lambda against a real S3 API, on raw files written by the real ingest Lambda
//! from a real PostgreSQL source (and, for bad input, raw files written by hand).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Decimal128Array, Int32Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use serde_json::json;
use totesys_tests::expected::*;
use totesys_tests::pipeline::*;
use totesys_tests::*;
use transform::event::Request;
use utils::parquet_io::ParquetUpload;
use utils::store::S3Store;
use utils::tables::table;
use utils::warehouse::{Kind, WAREHOUSE_TABLES};

/// What loading every processed file in key order would leave in the warehouse: dimensions
/// upserted on their key, facts inserted once per version key.
async fn warehouse(store: &S3Store) -> BTreeMap<&'static str, Vec<Vec<String>>> {
    let mut out = BTreeMap::new();
    for table in WAREHOUSE_TABLES {
        let mut rows: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
        let key_columns: Vec<usize> = table
            .key
            .iter()
            .map(|k| table.columns.iter().position(|c| c.name == *k).unwrap())
            .collect();
        for key in store
            .list_keys(&format!("{}/", table.name), None)
            .await
            .unwrap()
        {
            for row in file_rows(store, table.name, &key).await {
                let id: Vec<String> = key_columns.iter().map(|&i| row[i].clone()).collect();
                match table.kind {
                    Kind::Dimension => {
                        rows.insert(id, row);
                    }
                    Kind::Fact => {
                        rows.entry(id).or_insert(row);
                    }
                }
            }
        }
        out.insert(table.name, rows.into_values().collect());
    }
    out
}

#[tokio::test]
async fn the_seed_becomes_the_hand_computed_star_schema() {
    let p = Pipeline::new(true).await;
    let out = p.round().await;
    let t = &only(&out.files["fact_sales_order"])["fact_sales_order/".len()..];
    assert_eq!(out.bucket, p.processed.bucket());
    assert!(out.has_new_data);
    assert!(out.quarantined.is_empty());
    assert_eq!(
        out.files.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "dim_counterparty",
            "dim_currency",
            "dim_date",
            "dim_design",
            "dim_location",
            "dim_payment_type",
            "dim_staff",
            "dim_transaction",
            "fact_payment",
            "fact_purchase_order",
            "fact_sales_order"
        ]
    );
    let (time, _) = t.split_once('.').unwrap();
    for (table, keys) in &out.files {
        // An output built from several source tables is named after them too.
        let sources = match table.as_str() {
            "dim_counterparty" => "-address-counterparty",
            "dim_date" => "-payment-purchase_order-sales_order",
            "dim_location" => "-address",
            "dim_staff" => "-department-staff",
            _ => "",
        };
        assert_eq!(
            only(keys),
            format!("{table}/{time}{sources}.parquet"),
            "named after the window end"
        );
    }
    assert_eq!(
        p.output_rows(&out, "dim_staff").await,
        strings(&[
            &[
                "1",
                "Jeremie",
                "Franey",
                "Sales",
                "Manchester",
                "jeremie.franey@terrifictotes.com",
                "2022-11-03 14:20:51.563",
                "2022-11-03 14:20:49.962"
            ],
            &[
                "2",
                "Zoë",
                "O'Neil",
                "Purchasing",
                "Leds",
                "zoe.oneil@terrifictotes.com",
                "2022-11-03 14:20:51.563",
                "2022-11-03 14:20:49.962"
            ],
            &[
                "3",
                "Deron",
                "Beier",
                "Dispatch",
                "Unknown",
                "deron.beier@terrifictotes.com",
                "2024-02-29 23:59:59.999",
                "2022-11-03 14:20:49.962"
            ],
        ])
    );
    assert_eq!(
        unversioned("dim_location", p.output_rows(&out, "dim_location").await),
        strings(&[
            &[
                "1",
                "6826 Herzog Via",
                "NULL",
                "Avon",
                "New Patienceburgh",
                "28441",
                "Turkey",
                "1803 637401"
            ],
            &[
                "2",
                "179 Alexie Cliffs",
                "Rempel Road",
                "NULL",
                "Aliso Viejo",
                "99305-7380",
                "San Marino",
                "9621 880720"
            ],
            &[
                "3",
                "148 Sincere Fort",
                "NULL",
                "NULL",
                "Lake Charles",
                "89360",
                "Côte d'Ivoire",
                "0730 783349"
            ],
        ])
    );
    assert_eq!(
        unversioned(
            "dim_counterparty",
            p.output_rows(&out, "dim_counterparty").await
        ),
        strings(&[
            &[
                "1",
                "Fahey and Sons",
                "6826 Herzog Via",
                "NULL",
                "Avon",
                "New Patienceburgh",
                "28441",
                "Turkey",
                "1803 637401"
            ],
            &[
                "2",
                "Leannon, Predovic and Morar",
                "179 Alexie Cliffs",
                "Rempel Road",
                "NULL",
                "Aliso Viejo",
                "99305-7380",
                "San Marino",
                "9621 880720"
            ],
        ])
    );
    assert_eq!(
        unversioned("dim_currency", p.output_rows(&out, "dim_currency").await),
        strings(&[
            &["1", "GBP", "Pound Sterling"],
            &["2", "USD", "US Dollar"],
            &["3", "EUR", "Euro"],
        ])
    );
    assert_eq!(
        unversioned("dim_design", p.output_rows(&out, "dim_design").await),
        strings(&[
            &["1", "Wooden", "/usr", "wooden-20220717-npgz.json"],
            &["2", "Bronze", "/private", "bronze-20221024-4dds.json"],
        ])
    );
    assert_eq!(
        unversioned(
            "dim_payment_type",
            p.output_rows(&out, "dim_payment_type").await
        ),
        strings(&[
            &["1", "SALES_RECEIPT"],
            &["2", "SALES_REFUND"],
            &["3", "PURCHASE_PAYMENT"],
            &["4", "PURCHASE_REFUND"],
        ])
    );
    assert_eq!(
        unversioned(
            "dim_transaction",
            p.output_rows(&out, "dim_transaction").await
        ),
        strings(&[
            &["1", "PURCHASE", "NULL", "2"],
            &["2", "PURCHASE", "NULL", "1"],
            &["3", "SALE", "1", "NULL"],
            &["4", "SALE", "2", "NULL"],
        ])
    );
    // Times are microseconds of the day: 14:20:52.186 is 51_652_186_000.
    assert_eq!(
        p.output_rows(&out, "fact_sales_order").await,
        strings(&[
            &[
                "1",
                "2022-11-03",
                "51652186000",
                "2022-11-03",
                "51652186000",
                "1",
                "1",
                "42972",
                "3.94",
                "2",
                "1",
                "2022-11-08",
                "2022-11-07",
                "1"
            ],
            &[
                "2",
                "2022-11-03",
                "51652188000",
                "2022-11-04",
                "36000000000",
                "2",
                "2",
                "1",
                "0.01",
                "3",
                "2",
                "2022-11-07",
                "2022-11-06",
                "3"
            ],
            &[
                "3",
                "2023-12-31",
                "86399999000",
                "2023-12-31",
                "86399999000",
                "3",
                "1",
                "100000",
                "99999999.99",
                "1",
                "1",
                "2024-02-29",
                "2024-01-05",
                "2"
            ],
        ])
    );
    assert_eq!(
        p.output_rows(&out, "fact_purchase_order").await,
        strings(&[
            &[
                "1",
                "2022-11-03",
                "51652187000",
                "2022-11-03",
                "51652187000",
                "1",
                "1",
                "ZDOI5EA",
                "371",
                "361.39",
                "2",
                "2022-11-09",
                "2022-11-07",
                "2"
            ],
            &[
                "2",
                "2022-11-03",
                "51652186000",
                "2022-11-03",
                "51652186000",
                "2",
                "2",
                "QLZLEXR",
                "286",
                "199.04",
                "2",
                "2022-11-04",
                "2022-11-07",
                "3"
            ],
        ])
    );
    assert_eq!(
        p.output_rows(&out, "fact_payment").await,
        strings(&[
            &[
                "1",
                "2022-11-03",
                "51652187000",
                "2022-11-03",
                "51652187000",
                "2",
                "1",
                "552548.62",
                "2",
                "3",
                "false",
                "2022-11-04"
            ],
            &[
                "2",
                "2022-11-03",
                "51652186000",
                "2022-11-05",
                "37800500000",
                "3",
                "2",
                "205952.22",
                "3",
                "1",
                "true",
                "2022-11-05"
            ],
            &[
                "3",
                "2022-11-03",
                "51652188000",
                "2022-11-03",
                "51652188000",
                "4",
                "2",
                "0.01",
                "1",
                "2",
                "false",
                "2022-11-03"
            ],
        ])
    );
    assert_eq!(
        p.output_rows(&out, "dim_date").await,
        strings(&[
            &[
                "2022-11-03",
                "2022",
                "11",
                "3",
                "4",
                "Thursday",
                "November",
                "4"
            ],
            &[
                "2022-11-04",
                "2022",
                "11",
                "4",
                "5",
                "Friday",
                "November",
                "4"
            ],
            &[
                "2022-11-05",
                "2022",
                "11",
                "5",
                "6",
                "Saturday",
                "November",
                "4"
            ],
            &[
                "2022-11-06",
                "2022",
                "11",
                "6",
                "7",
                "Sunday",
                "November",
                "4"
            ],
            &[
                "2022-11-07",
                "2022",
                "11",
                "7",
                "1",
                "Monday",
                "November",
                "4"
            ],
            &[
                "2022-11-08",
                "2022",
                "11",
                "8",
                "2",
                "Tuesday",
                "November",
                "4"
            ],
            &[
                "2022-11-09",
                "2022",
                "11",
                "9",
                "3",
                "Wednesday",
                "November",
                "4"
            ],
            &[
                "2023-12-31",
                "2023",
                "12",
                "31",
                "7",
                "Sunday",
                "December",
                "4"
            ],
            &[
                "2024-01-05",
                "2024",
                "1",
                "5",
                "5",
                "Friday",
                "January",
                "1"
            ],
            &[
                "2024-02-29",
                "2024",
                "2",
                "29",
                "4",
                "Thursday",
                "February",
                "1"
            ],
        ])
    );
    for (table, rows) in [("dim_staff", 3), ("fact_payment", 3), ("dim_date", 10)] {
        assert_eq!(out.row_counts[table], rows, "{table}");
    }

    // The footer says where the rows came from.
    let file = read_object(&p.processed, only(&out.files["dim_staff"])).await;
    let sources: Vec<String> =
        serde_json::from_str(file.metadata_value("totesys.source_keys").unwrap()).unwrap();
    assert_eq!(sources, [format!("staff/{t}"), format!("department/{t}")]);
    assert_eq!(file.metadata_value("totesys.row_count"), Some("3"));
    assert_eq!(file.metadata_value("totesys.table"), Some("dim_staff"));
    assert_eq!(
        file.metadata_value("totesys.pipeline_version"),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let file = read_object(&p.processed, only(&out.files["dim_date"])).await;
    let sources: Vec<String> =
        serde_json::from_str(file.metadata_value("totesys.source_keys").unwrap()).unwrap();
    assert_eq!(sources.len(), 3, "the three fact files: {sources:?}");
}

#[tokio::test]
async fn a_renamed_department_reemits_its_staff_and_a_changed_address_its_counterparties() {
    let p = Pipeline::new(true).await;
    p.round().await;
    let source = p.source().await;
    source
        .batch_execute(&format!(
            "UPDATE department SET department_name = 'Sales & Marketing', last_updated = {NOW_MS}
             WHERE department_id = 1;
             UPDATE address SET city = 'Leeds', last_updated = {NOW_MS} WHERE address_id = 2;"
        ))
        .await
        .unwrap();
    let out = p.round().await;
    assert_eq!(
        out.files.keys().map(String::as_str).collect::<Vec<_>>(),
        ["dim_counterparty", "dim_location", "dim_staff"],
        "no staff or counterparty row changed, yet both dimensions are re-emitted"
    );
    let renamed: String = source
        .query_one(
            "SELECT last_updated::text FROM department WHERE department_id = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        p.output_rows(&out, "dim_staff").await[0][6..],
        ["2022-11-03 14:20:51.563".to_owned(), renamed],
        "the staff row's own version, then the renamed department's"
    );
    assert_eq!(
        unversioned("dim_staff", p.output_rows(&out, "dim_staff").await),
        strings(&[&[
            "1",
            "Jeremie",
            "Franey",
            "Sales & Marketing",
            "Manchester",
            "jeremie.franey@terrifictotes.com"
        ]])
    );
    assert_eq!(
        unversioned("dim_location", p.output_rows(&out, "dim_location").await),
        strings(&[&[
            "2",
            "179 Alexie Cliffs",
            "Rempel Road",
            "NULL",
            "Leeds",
            "99305-7380",
            "San Marino",
            "9621 880720"
        ]])
    );
    assert_eq!(
        unversioned(
            "dim_counterparty",
            p.output_rows(&out, "dim_counterparty").await
        ),
        strings(&[&[
            "2",
            "Leannon, Predovic and Morar",
            "179 Alexie Cliffs",
            "Rempel Road",
            "NULL",
            "Leeds",
            "99305-7380",
            "San Marino",
            "9621 880720"
        ]])
    );
}

#[tokio::test]
async fn each_version_of_a_row_is_one_fact_row_across_batches() {
    let p = Pipeline::new(true).await;
    let first = p.round().await;
    p.source()
        .await
        .batch_execute(&format!(
            "UPDATE payment SET paid = true, last_updated = {NOW_MS} WHERE payment_id = 3"
        ))
        .await
        .unwrap();
    let second = p.round().await;
    assert_eq!(
        second.files.keys().collect::<Vec<_>>(),
        ["dim_date", "fact_payment"]
    );
    assert_eq!(second.row_counts["fact_payment"], 1);
    let facts = warehouse(&p.processed).await;
    let payment_3: Vec<&Vec<String>> = facts["fact_payment"]
        .iter()
        .filter(|r| r[0] == "3")
        .collect();
    assert_eq!(payment_3.len(), 2, "{payment_3:?}");
    assert_eq!(payment_3[0][10], "false");
    assert_eq!(payment_3[1][10], "true");
    // An event naming a raw file transformed already adds nothing.
    let named = json!({"bucket": p.raw.bucket(), "files": {
        "payment": only(&first.files["fact_payment"]).replace("fact_payment/", "payment/")
    }});
    let again = p.transform(named.clone()).await.unwrap();
    assert!(again.files.is_empty(), "{again:?}");
    // Transformed again (the cursor moved back, as a replay does), the files give the same
    // fact rows under the same keys, which keep their first bytes.
    utils::cursor::rewind_transform_cursor(&p.processed, "payment", "payment/")
        .await
        .unwrap();
    let again = p.transform(named).await.unwrap();
    assert_eq!(
        again.files["fact_payment"],
        [
            only(&first.files["fact_payment"]),
            only(&second.files["fact_payment"])
        ]
    );
    assert_eq!(warehouse(&p.processed).await, facts);
}

/// Every object in the bucket with its bytes.
async fn contents(store: &S3Store) -> BTreeMap<String, Bytes> {
    let mut out = BTreeMap::new();
    for key in all_keys(store).await {
        out.insert(key.clone(), store.get(&key).await.unwrap().unwrap());
    }
    out
}

/// Moves transform's cursor back before every raw file.
async fn rewind_all(p: &Pipeline) {
    for t in utils::tables::TABLES {
        utils::cursor::rewind_transform_cursor(&p.processed, t.name, &format!("{}/", t.name))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_rerun_or_a_duplicate_event_writes_the_same_bytes() {
    let p = Pipeline::new(true).await;
    let event = p.ingest().await;
    let first = p.transform(event.clone()).await.unwrap();
    let before = contents(&p.processed).await;
    // A repeated event: its files are transformed already.
    let second = p.transform(event.clone()).await.unwrap();
    assert!(second.files.is_empty(), "{second:?}");
    assert_eq!(contents(&p.processed).await, before, "nothing written");

    // Run again (the cursor moved back, as after a crash before it moved): the same keys,
    // each kept as it was.
    rewind_all(&p).await;
    let rerun = p.transform(event.clone()).await.unwrap();
    assert_eq!(rerun.files, first.files);
    assert_eq!(rerun.row_counts, first.row_counts);
    assert_eq!(contents(&p.processed).await, before);
    // And with the outputs gone, the same bytes again: a re-run is deterministic.
    for keys in first.files.values() {
        for key in keys {
            p.processed.delete(key).await.unwrap();
        }
    }
    rewind_all(&p).await;
    let rerun = p.transform(event.clone()).await.unwrap();
    assert_eq!(rerun.files, first.files);
    assert_eq!(
        contents(&p.processed).await,
        before,
        "same keys, same bytes"
    );

    // The same window announced by S3, twice, in moto's shape with an URL-encoded key.
    let key = event["files"]["sales_order"][0]
        .as_str()
        .unwrap()
        .replace('/', "%2F");
    let notification = json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "eu-west-2",
        "eventTime": "2024-11-14T09:30:06.000", "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "transform",
               "bucket": {"name": p.raw.bucket(), "arn": format!("arn:aws:s3:::{}", p.raw.bucket())},
               "object": {"key": key, "size": 1, "eTag": "x"}}
    }]});
    for _ in 0..2 {
        let out = p.transform(notification.clone()).await.unwrap();
        assert!(out.files.is_empty(), "transformed already: {out:?}");
        assert_eq!(contents(&p.processed).await, before);
    }
}

#[tokio::test]
async fn notifications_for_state_objects_and_empty_batches_write_nothing() {
    let p = Pipeline::new(true).await;
    let state = json!({"Records": [{"s3": {
        "bucket": {"name": p.raw.bucket()},
        "object": {"key": "_state/ingest/staff.json"}
    }}]});
    let out = p.transform(state).await.unwrap();
    assert!(!out.has_new_data);
    assert!(out.files.is_empty());
    let empty =
        json!({"bucket": p.raw.bucket(), "files": {}, "row_counts": {}, "has_new_data": false});
    assert!(!p.transform(empty).await.unwrap().has_new_data);
    assert!(all_keys(&p.processed).await.is_empty());

    let foreign = json!({"bucket": "someone-elses", "files": {}});
    let e = p.transform(foreign).await.unwrap_err();
    assert_eq!(e.error_type(), "InvalidEvent");
    assert!(e.to_string().contains("someone-elses"), "{e}");
}

/// Writes a raw file by hand: `columns` in `schema`, under the table's key for `at`.
async fn put_raw(
    store: &S3Store,
    table: &str,
    schema: Arc<Schema>,
    columns: Vec<ArrayRef>,
    at: &str,
) -> String {
    let key = format!("{table}/2024/11/14/{at}.parquet");
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut upload = ParquetUpload::create(store, &key, schema, []).unwrap();
    upload.write(&batch).await.unwrap();
    upload.finish(vec![]).await.unwrap();
    key
}

fn nullable(table: &str) -> Arc<Schema> {
    transform::raw::relaxed_schema(table_spec(table))
}

fn table_spec(name: &str) -> &'static utils::tables::TableSpec {
    table(name).unwrap()
}

fn ms(ts: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%d %H:%M:%S%.3f")
        .unwrap()
        .and_utc()
        .timestamp_millis()
}

/// Raw sales_order columns (relaxed schema), ids from 1: one row per `created_at`, all last
/// updated at 2024-11-14 09:30:00.250, priced 1.00, with the given units and agreed dates.
fn sales_orders(
    created_at: &[i64],
    units_sold: Vec<Option<i32>>,
    delivery: &[&str],
    payment: &[&str],
) -> Vec<ArrayRef> {
    let n = created_at.len();
    let ones = || Arc::new(Int32Array::from(vec![1; n])) as ArrayRef;
    vec![
        Arc::new(Int32Array::from_iter_values(1..=n as i32)),
        Arc::new(TimestampMillisecondArray::from(created_at.to_vec())),
        Arc::new(TimestampMillisecondArray::from(vec![
            ms(
                "2024-11-14 09:30:00.250"
            );
            n
        ])),
        ones(),
        ones(),
        ones(),
        Arc::new(Int32Array::from(units_sold)),
        Arc::new(
            Decimal128Array::from(vec![100; n])
                .with_precision_and_scale(10, 2)
                .unwrap(),
        ),
        ones(),
        Arc::new(StringArray::from(delivery.to_vec())),
        Arc::new(StringArray::from(payment.to_vec())),
        ones(),
    ]
}

#[tokio::test]
async fn invalid_fact_rows_are_quarantined_and_the_rest_go_on() {
    let p = Pipeline::new(false).await;
    let created = ms("2024-11-14 09:00:00.000");
    let key = put_raw(
        &p.raw,
        "sales_order",
        nullable("sales_order"),
        sales_orders(
            &[created; 5],
            vec![Some(10), Some(20), None, Some(40), Some(50)],
            &[
                "2024-11-20",
                "2024-13-01",
                "2024-11-20",
                "soon",
                "2024-11-21",
            ],
            &[
                "2024-11-22",
                "2024-11-22",
                "2024-11-22",
                "2024-11-22",
                "2024-11-23",
            ],
        ),
        "093000250000",
    )
    .await;
    let out = p
        .transform(json!({"bucket": p.raw.bucket(), "files": {"sales_order": key}}))
        .await
        .unwrap();
    assert_eq!(out.row_counts["fact_sales_order"], 2);
    assert_eq!(out.quarantined["fact_sales_order"], 3);
    let facts = file_rows(
        &p.processed,
        "fact_sales_order",
        only(&out.files["fact_sales_order"]),
    )
    .await;
    assert_eq!(
        facts.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(),
        ["1", "5"]
    );
    // dim_date holds only the valid rows' dates.
    let dates = p.output_rows(&out, "dim_date").await;
    assert_eq!(
        dates.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(),
        [
            "2024-11-14",
            "2024-11-20",
            "2024-11-21",
            "2024-11-22",
            "2024-11-23"
        ]
    );

    let quarantine = read_object(
        &p.processed,
        "quarantine/fact_sales_order/2024/11/14/093000250000.parquet",
    )
    .await;
    assert_eq!(
        quarantine
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>()
            .last(),
        Some(&"reason")
    );
    let rows = rows_of(&quarantine.batches);
    let summary: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r[0].as_str(), r[9].as_str(), r[12].as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "2",
                "2024-13-01",
                "agreed_delivery_date: \"2024-13-01\" is not a date in the form YYYY-MM-DD"
            ),
            (
                "3",
                "2024-11-20",
                "units_sold: NULL where the warehouse column is NOT NULL"
            ),
            (
                "4",
                "soon",
                "agreed_delivery_date: \"soon\" is not a date in the form YYYY-MM-DD"
            ),
        ],
        "original values and the reason"
    );
    assert_eq!(rows[1][6], "NULL");
    assert_eq!(quarantine.metadata_value("totesys.row_count"), Some("3"));
}

/// PostgreSQL's timestamps reach the year 294276, chrono's dates (and so dim_date's names) the
/// year 262143: such a row is quarantined, never a panic or a wrapped-around date.
#[tokio::test]
async fn a_timestamp_past_the_calendar_is_quarantined() {
    let p = Pipeline::new(false).await;
    let past_the_calendar = i64::MAX; // beyond i32 days as well
    let year_270000 = 8_458_444_800_000_000; // within i32 days, beyond chrono
    let created = [
        ms("2024-11-14 09:00:00.000"),
        past_the_calendar,
        year_270000,
    ];
    let key = put_raw(
        &p.raw,
        "sales_order",
        nullable("sales_order"),
        sales_orders(
            &created,
            vec![Some(10); 3],
            &["2024-11-20"; 3],
            &["2024-11-22"; 3],
        ),
        "093000250000",
    )
    .await;
    let out = p
        .transform(json!({"bucket": p.raw.bucket(), "files": {"sales_order": key}}))
        .await
        .unwrap();
    assert_eq!(out.row_counts["fact_sales_order"], 1);
    assert_eq!(out.quarantined["fact_sales_order"], 2);
    let quarantine = read_object(
        &p.processed,
        "quarantine/fact_sales_order/2024/11/14/093000250000.parquet",
    )
    .await;
    let reasons: Vec<String> = rows_of(&quarantine.batches)
        .iter()
        .map(|r| r[12].clone())
        .collect();
    assert_eq!(
        reasons,
        [past_the_calendar, year_270000].map(|ms| format!(
            "created_at: {ms} ms after 1970 is past the dates the warehouse's calendar can name \
             (years -262143 to 262143)"
        ))
    );
    let dates = p.output_rows(&out, "dim_date").await;
    assert_eq!(
        dates.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(),
        ["2024-11-14", "2024-11-20", "2024-11-22"]
    );
}

#[tokio::test]
async fn a_batch_of_only_invalid_rows_writes_only_quarantine() {
    let p = Pipeline::new(true).await;
    p.round().await;
    p.source()
        .await
        .batch_execute(&format!(
            "UPDATE payment SET payment_date = '05/11/2022', last_updated = {NOW_MS}
             WHERE payment_id = 2"
        ))
        .await
        .unwrap();
    // The first round's files loaded: off the queue.
    for key in utils::cursor::pending(&p.processed).await.unwrap() {
        utils::cursor::clear_pending(&p.processed, &key)
            .await
            .unwrap();
    }
    let out = p.round().await;
    assert!(!out.files.contains_key("fact_payment"));
    assert!(!out.files.contains_key("dim_date"));
    assert_eq!(out.quarantined["fact_payment"], 1);
    assert!(!out.has_new_data, "nothing for load");
    let keys = all_keys(&p.processed).await;
    assert_eq!(
        keys.iter()
            .filter(|k| k.starts_with("quarantine/fact_payment/"))
            .count(),
        1,
        "{keys:?}"
    );
}

#[tokio::test]
async fn dimensions_keep_every_row_with_documented_placeholders() {
    let p = Pipeline::new(true).await;
    p.source()
        .await
        .batch_execute(&format!(
            "INSERT INTO currency VALUES
               (4, 'CHF', {NOW_MS}, {NOW_MS}), (5, 'JPY', {NOW_MS}, {NOW_MS}),
               (6, 'XYZ', {NOW_MS}, {NOW_MS});"
        ))
        .await
        .unwrap();
    let out = p.round().await;
    let currencies = unversioned("dim_currency", p.output_rows(&out, "dim_currency").await);
    assert_eq!(
        currencies[3..],
        strings(&[
            &["4", "CHF", "Swiss Franc"],
            &["5", "JPY", "Yen"],
            &["6", "XYZ", "Unknown"],
        ])
    );
    let staff = p.output_rows(&out, "dim_staff").await;
    assert_eq!(staff[2][4], "Unknown", "department 3 has no location");

    // A member of staff whose department the transform has never seen, with a NULL name.
    let n = 1;
    let ts = Arc::new(TimestampMillisecondArray::from(vec![
        ms(
            "2024-11-14 09:00:00.000"
        );
        n
    ])) as ArrayRef;
    let key = put_raw(
        &p.raw,
        "staff",
        nullable("staff"),
        vec![
            Arc::new(Int32Array::from(vec![7])),
            Arc::new(StringArray::from(vec![None::<&str>])),
            Arc::new(StringArray::from(vec!["Doe"])),
            Arc::new(Int32Array::from(vec![99])),
            Arc::new(StringArray::from(vec!["x@terrifictotes.com"])),
            ts.clone(),
            ts,
        ],
        "235959999999",
    )
    .await;
    // Its key sorts before the round's: named by hand, it is not transformed unless the
    // cursor moves back before it (as a replay moves it).
    let named = json!({"bucket": p.raw.bucket(), "files": {"staff": key}});
    let out = p.transform(named.clone()).await.unwrap();
    assert!(out.files.is_empty(), "{out:?}");
    utils::cursor::rewind_transform_cursor(&p.processed, "staff", "staff/2024/11/14/")
        .await
        .unwrap();
    let out = p.transform(named).await.unwrap();
    let output = out.files["dim_staff"]
        .iter()
        .find(|k| k.starts_with("dim_staff/2024/11/14/235959999999"))
        .unwrap();
    let staff = file_rows(&p.processed, "dim_staff", output).await;
    assert_eq!(
        staff,
        strings(&[&[
            "7",
            "Unknown",
            "Doe",
            "Unknown",
            "Unknown",
            "x@terrifictotes.com",
            "2024-11-14 09:00:00",
            "NULL"
        ]]),
        "an unknown department has no version: the department's first row will be newer"
    );
}

#[tokio::test]
async fn a_corrupt_or_mismatched_raw_file_is_a_typed_error_and_writes_nothing() {
    let p = Pipeline::new(true).await;
    let event = p.ingest().await;
    let sales = event["files"]["sales_order"][0]
        .as_str()
        .unwrap()
        .to_owned();

    // Garbage where a Parquet file should be.
    p.raw
        .put(
            &sales,
            Bytes::from_static(b"not parquet at all"),
            "application/octet-stream",
        )
        .await
        .unwrap();
    let e = p.transform(event.clone()).await.unwrap_err();
    assert_eq!(e.error_type(), "InvalidInput");
    assert!(e.to_string().contains(&sales), "{e}");
    assert!(e.to_string().contains("sales_order"), "{e}");
    assert!(all_keys(&p.processed).await.is_empty(), "nothing written");

    // A valid Parquet file whose units_sold is text.
    let mut fields: Vec<Field> = nullable("sales_order")
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[6] = Field::new("units_sold", DataType::Utf8, true);
    let mut columns: Vec<ArrayRef> = Vec::new();
    for f in &fields {
        columns.push(arrow::array::new_null_array(f.data_type(), 1));
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut upload = ParquetUpload::create(&p.raw, &sales, schema, []).unwrap();
    upload.write(&batch).await.unwrap();
    upload.finish(vec![]).await.unwrap();
    let e = p.transform(event.clone()).await.unwrap_err();
    assert_eq!(e.error_type(), "InvalidInput");
    assert!(
        e.to_string()
            .contains("column 7 is `units_sold Utf8`, expected `units_sold Int32`"),
        "{e}"
    );
    assert!(all_keys(&p.processed).await.is_empty(), "nothing written");

    // A file named in the event that is not there.
    p.raw.delete(&sales).await.unwrap();
    let e = p.transform(event).await.unwrap_err();
    assert_eq!(e.error_type(), "InvalidInput");
    assert!(e.to_string().contains(&sales), "{e}");
    assert!(all_keys(&p.processed).await.is_empty(), "nothing written");
}

#[tokio::test]
async fn a_corrupt_page_deep_in_a_fact_file_writes_nothing() {
    let p = Pipeline::new(true).await;
    let event = p.ingest().await;
    let key = event["files"]["payment"][0].as_str().unwrap().to_owned();
    let mut bytes = p.raw.get(&key).await.unwrap().unwrap().to_vec();
    // Overwrite the first data page (after the 4-byte magic) but keep the footer intact.
    for b in &mut bytes[4..64] {
        *b = 0xff;
    }
    p.raw
        .put(&key, Bytes::from(bytes), "application/vnd.apache.parquet")
        .await
        .unwrap();
    let e = p.transform(event).await.unwrap_err();
    assert_eq!(e.error_type(), "InvalidInput", "{e}");
    assert!(e.to_string().contains(&key), "{e}");
    assert!(all_keys(&p.processed).await.is_empty(), "nothing written");
}

/// A transaction file of several row groups, as a large one is: each group is remodelled on
/// its own, and a bad row in a later group still writes nothing.
#[tokio::test]
async fn a_dimension_file_of_many_row_groups_streams_and_fails_whole() {
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    let p = Pipeline::new(false).await;
    let put = |ids: Vec<Option<i32>>| {
        let n = ids.len();
        let ts = Arc::new(TimestampMillisecondArray::from(vec![
            ms(
                "2024-11-14 09:00:00.000"
            );
            n
        ])) as ArrayRef;
        let schema = nullable("transaction");
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int32Array::from(ids.clone())),
                Arc::new(StringArray::from(vec!["SALE"; n])),
                Arc::new(Int32Array::from(
                    ids.iter().map(|i| i.map(|i| i * 10)).collect::<Vec<_>>(),
                )),
                Arc::new(Int32Array::from(vec![None::<i32>; n])),
                ts.clone(),
                ts,
            ],
        )
        .unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(2))
            .build();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, schema, Some(props)).unwrap();
        writer.write(&batch).unwrap();
        let meta = writer.close().unwrap();
        assert_eq!(meta.num_row_groups(), n.div_ceil(2), "several row groups");
        bytes
    };
    let key = "transaction/2024/11/14/100000000000.parquet";
    let event = json!({"bucket": p.raw.bucket(), "files": {"transaction": key}});

    let bytes = put(vec![Some(5), Some(3), Some(1), None, Some(2)]);
    p.raw
        .put(key, Bytes::from(bytes), "application/vnd.apache.parquet")
        .await
        .unwrap();
    let e = p.transform(event.clone()).await.unwrap_err();
    assert_eq!(e.error_type(), "InvalidInput");
    assert!(
        e.to_string()
            .contains("NULL value(s) in primary key transaction_id"),
        "{e}"
    );
    assert!(all_keys(&p.processed).await.is_empty(), "nothing written");

    let bytes = put(vec![Some(5), Some(3), Some(1), Some(4), Some(2)]);
    p.raw
        .put(key, Bytes::from(bytes), "application/vnd.apache.parquet")
        .await
        .unwrap();
    let out = p.transform(event).await.unwrap();
    assert_eq!(out.row_counts["dim_transaction"], 5);
    // Each row group is ordered by key on its own; the file keeps the groups' order.
    assert_eq!(
        unversioned(
            "dim_transaction",
            p.output_rows(&out, "dim_transaction").await
        ),
        strings(&[
            &["3", "SALE", "30", "NULL"],
            &["5", "SALE", "50", "NULL"],
            &["1", "SALE", "10", "NULL"],
            &["4", "SALE", "40", "NULL"],
            &["2", "SALE", "20", "NULL"],
        ])
    );
}

#[tokio::test]
async fn several_rounds_through_ingest_and_transform_match_the_source() {
    let p = Pipeline::new(true).await;
    let source = p.source().await;
    let changes = source_changes();
    let mut expected_facts = FactVersions::new();
    for round in 0..=changes.len() {
        if round > 0 {
            source.batch_execute(&changes[round - 1]).await.unwrap();
        }
        p.round().await;
        // Each round's source versions are the fact rows that must exist from now on.
        record_versions(&source, &mut expected_facts).await;
        let mut actual = warehouse(&p.processed).await;
        for (table, rows) in actual.iter_mut() {
            if table.starts_with("fact_") {
                rows.sort();
            }
        }
        assert_star_schema(&source, &actual, &expected_facts, &format!("round {round}")).await;
    }
    assert_eq!(expected_facts["fact_payment"].len(), 3 + 1 + 1 + 1 + 1);
}

#[tokio::test]
async fn request_for_a_window_finds_every_raw_file_of_that_run() {
    let p = Pipeline::new(true).await;
    let event = p.ingest().await;
    let key = event["files"]["staff"][0].as_str().unwrap();
    let (_, t) = transform::event::raw_data_key(key).unwrap();
    let files = transform::window_files(&p.raw, t).await.unwrap();
    assert_eq!(files.len(), 11);
    let out = transform::run(
        &p.raw,
        &p.processed,
        Request::Window {
            bucket: p.raw.bucket().to_owned(),
            window_end: t,
        },
        utils::deadline::Deadline::NONE,
    )
    .await
    .unwrap();
    assert_eq!(out.files.len(), 11);
}

/// Department rows in the relaxed raw schema: (id, name), all updated at `updated`.
fn departments(rows: &[(i32, &str)], updated: &str) -> RecordBatch {
    let n = rows.len();
    RecordBatch::try_new(
        nullable("department"),
        vec![
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from(vec![Some("Leeds"); n])),
            Arc::new(StringArray::from(vec![None::<&str>; n])),
            Arc::new(TimestampMillisecondArray::from(vec![ms(updated); n])),
            Arc::new(TimestampMillisecondArray::from(vec![ms(updated); n])),
        ],
    )
    .unwrap()
}

async fn department_snapshot(store: &S3Store) -> Vec<(i32, String)> {
    let snapshot = transform::snapshot::load(store, table_spec("department"))
        .await
        .unwrap();
    let ids = transform::raw::ints(&snapshot.batch, "department_id");
    let names = transform::raw::texts(&snapshot.batch, "department_name");
    (0..snapshot.batch.num_rows())
        .map(|r| (ids.value(r), names.value(r).to_owned()))
        .collect()
}

/// Two transforms read a snapshot, and the other one writes first: the later write merges into
/// what the other wrote instead of replacing it (a read-modify-write that would lose rows).
#[tokio::test]
async fn a_snapshot_written_since_it_was_read_is_merged_into_not_overwritten() {
    let store = bucket().await;
    let spec = table_spec("department");
    let load = || transform::snapshot::load(&store, spec);
    let save = |read, rows| transform::snapshot::save(&store, spec, read, rows);

    // Both find no snapshot yet; the first to write creates it.
    let (first, second) = (load().await.unwrap(), load().await.unwrap());
    let finance = departments(&[(1, "Finance")], "2024-11-14 09:00:00.000");
    let sales = departments(&[(2, "Sales")], "2024-11-14 09:00:00.000");
    save(second, &sales).await.unwrap();
    save(first, &finance).await.unwrap();
    assert_eq!(
        department_snapshot(&store).await,
        [(1, "Finance".into()), (2, "Sales".into())]
    );

    // Both read that version; each changes one department.
    let (first, second) = (load().await.unwrap(), load().await.unwrap());
    let renamed = departments(&[(2, "Sales & Marketing")], "2024-11-15 09:00:00.000");
    let dispatch = departments(&[(3, "Dispatch")], "2024-11-15 09:00:00.000");
    save(first, &renamed).await.unwrap();
    save(second, &dispatch).await.unwrap();
    assert_eq!(
        department_snapshot(&store).await,
        [
            (1, "Finance".into()),
            (2, "Sales & Marketing".into()),
            (3, "Dispatch".into())
        ]
    );
}

/// Transforms of department files running at once (as S3 events can start them): every
/// department ends up in the snapshot.
#[tokio::test]
async fn transforms_running_at_once_lose_no_snapshot_update() {
    let p = Pipeline::new(false).await;
    let mut keys = Vec::new();
    for i in 0..6 {
        let at = format!("0930{i:02}000000");
        let batch = departments(
            &[(i + 1, &format!("Department {i}"))],
            "2024-11-14 09:30:00.000",
        );
        keys.push(
            put_raw(
                &p.raw,
                "department",
                nullable("department"),
                batch.columns().to_vec(),
                &at,
            )
            .await,
        );
    }
    let runs = keys
        .iter()
        .map(|key| p.transform(json!({"bucket": p.raw.bucket(), "files": {"department": key}})));
    for out in futures_util::future::join_all(runs).await {
        out.unwrap();
    }
    let expected: Vec<(i32, String)> = (0..6).map(|i| (i + 1, format!("Department {i}"))).collect();
    assert_eq!(department_snapshot(&p.processed).await, expected);
}
