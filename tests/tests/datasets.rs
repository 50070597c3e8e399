//! Declared datasets through the real ingest, transform and load, against a real S3 API and a
//! real PostgreSQL warehouse: the trip data (`datasets/trips.json`) landing as CSV files, with
//! notifications repeated and lost, invocations killed at every point, bad rows and a file that
//! cannot be read. The warehouse must end up with every good row once, the view right, and
//! every bad row in quarantine with its reason.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use chrono::{Datelike, NaiveDateTime};
use datasets::Dataset;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use totesys_tests::expected::sql_rows;
use totesys_tests::*;
use utils::db::{Connector, DbSource};
use utils::parquet_io::ParquetContents;
use utils::store::S3Store;

/// The landing, raw and processed buckets, a warehouse, and the Lambdas over them.
struct Lake {
    landing: S3Store,
    raw: S3Store,
    processed: S3Store,
    wh: TestDb,
    datasets: &'static [Dataset],
    /// Where the API datasets' pages are served (a local SODA server).
    api: Option<String>,
    /// The load's `LOAD_BULK_MIN_ROWS`: a file of this many rows is first copied straight in.
    bulk_min_rows: u64,
}

impl Lake {
    async fn new() -> Self {
        Self::with(declared()).await
    }

    async fn with(datasets: Vec<Dataset>) -> Self {
        Lake {
            landing: bucket().await,
            raw: bucket().await,
            processed: bucket().await,
            wh: TestDb::warehouse().await,
            datasets: datasets.leak(),
            api: None,
            bulk_min_rows: load::bulk::DEFAULT_MIN_ROWS,
        }
    }

    /// A lake whose ingest reads the API datasets of `datasets` from `soda`.
    async fn reading(datasets: Vec<Dataset>, soda: &Soda) -> Self {
        Lake {
            api: Some(soda.url.clone()),
            ..Self::with(datasets).await
        }
    }

    async fn land(&self, key: &str, body: &str) {
        self.landing
            .put(key, Bytes::from(body.to_owned()), "text/csv")
            .await
            .unwrap();
    }

    fn notification(&self, keys: &[&str]) -> Value {
        let records: Vec<Value> = keys
            .iter()
            .map(|k| {
                json!({"s3": {"bucket": {"name": self.landing.bucket()},
                              "object": {"key": k.replace(' ', "+")}}})
            })
            .collect();
        json!({ "Records": records })
    }

    async fn ingest(&self, event: Value) -> Result<ingest::Output, ingest::Error> {
        self.ingest_in(event, Context::default(), utils::deadline::DEFAULT_MARGIN)
            .await
    }

    async fn ingest_in(
        &self,
        event: Value,
        context: Context,
        deadline_margin: Duration,
    ) -> Result<ingest::Output, ingest::Error> {
        let sdk = sdk_config().await;
        // Datasets need no source database: nothing connects to this one.
        let source = DbSource::Url("postgres://nobody@127.0.0.1:1/none".into());
        let deps = ingest::Deps {
            db: Connector::new(source.clone(), aws_sdk_secretsmanager::Client::new(&sdk)),
            config: ingest::Config {
                source,
                bucket: self.raw.bucket().to_owned(),
                safety_lag: Duration::ZERO,
                max_rows_per_file: ingest::config::DEFAULT_MAX_ROWS_PER_FILE,
                deadline_margin,
                tables: utils::tables::TABLES.iter().collect(),
                landing_bucket: Some(self.landing.bucket().to_owned()),
                api_base_url: self.api.clone(),
                datasets: self.datasets.to_vec(),
            },
            store: self.raw.clone(),
            landing: Some(self.landing.clone()),
            kms: aws_sdk_kms::Client::new(&sdk),
            api: self.api_client().await,
        };
        ingest::handler(LambdaEvent::new(event, context), &deps).await
    }

    async fn transform(&self, event: Value) -> transform::Output {
        self.transform_in(event, Context::default(), utils::deadline::DEFAULT_MARGIN)
            .await
    }

    async fn transform_in(
        &self,
        event: Value,
        context: Context,
        deadline_margin: Duration,
    ) -> transform::Output {
        let deps = transform::Deps {
            raw: self.raw.clone(),
            processed: self.processed.clone(),
            deadline_margin,
        };
        transform::handler(LambdaEvent::new(event, context), &deps)
            .await
            .expect("transform")
    }

    /// The load Lambda with `event`, as Step Functions invokes it.
    async fn load_with(&self, event: Value) -> Result<load::Output, load::Error> {
        let warehouse = DbSource::Url(self.wh.url.clone());
        let sdk = sdk_config().await;
        let deps = load::Deps {
            db: Connector::new(warehouse.clone(), aws_sdk_secretsmanager::Client::new(&sdk)),
            config: load::Config {
                warehouse,
                processed_bucket: self.processed.bucket().to_owned(),
                deadline_margin: utils::deadline::DEFAULT_MARGIN,
                bulk_min_rows: self.bulk_min_rows,
                lock_timeout: load::config::DEFAULT_LOCK_TIMEOUT,
                datasets: self.datasets,
            },
            store: self.processed.clone(),
        };
        load::handler(LambdaEvent::new(event, Context::default()), &deps).await
    }

    /// The load of whatever is queued.
    async fn load(&self) -> Result<load::Output, load::Error> {
        self.load_with(json!({"bucket": self.processed.bucket(), "files": {}}))
            .await
    }

    /// Ingest of `event`, then transform and load as Step Functions runs them.
    async fn round(&self, event: Value) -> ingest::Output {
        let out = self.ingest(event).await.expect("ingest");
        let transformed = self.transform(serde_json::to_value(&out).unwrap()).await;
        self.load_with(serde_json::to_value(&transformed).unwrap())
            .await
            .expect("load");
        out
    }

    /// Ingest, transform and load of `event` each killed at moments growing 1.6× from 1 ms
    /// until all three get through, transform and load running between the kills on whatever
    /// the killed ingest left; then a sweep of `datasets` finishes what the kills left, and
    /// another finds nothing to do.
    async fn killed_until_through(&self, event: Value, datasets: &[&str]) {
        let mut kills = 0;
        let mut after = Duration::from_millis(1);
        loop {
            let ingested = tokio::time::timeout(after, self.ingest(event.clone())).await;
            let transformed = tokio::time::timeout(
                after,
                self.transform(json!({"bucket": self.raw.bucket(), "files": {}})),
            )
            .await;
            let loaded = tokio::time::timeout(after, self.load()).await;
            if ingested.is_ok() && transformed.is_ok() && loaded.is_ok() {
                break;
            }
            kills += 1;
            after = after.mul_f64(1.6);
        }
        assert!(kills >= 5, "the stages were killed only {kills} times");
        self.round(json!({ "datasets": datasets })).await;
        let last = self.round(json!({ "datasets": datasets })).await;
        assert!(!last.has_new_data, "{last:?}");
    }

    /// Every hand-off repeated, as a lost result or a duplicate delivery would: each raw file
    /// under `prefix` queued again for transform and for the load. The load must change
    /// nothing; what it says it skipped.
    async fn hand_offs_repeated(&self, prefix: &str) -> load::Output {
        for key in self.raw.list_keys(prefix, None).await.unwrap() {
            utils::cursor::mark_dataset_pending(&self.raw, &key)
                .await
                .unwrap();
        }
        self.transform(json!({"bucket": self.raw.bucket(), "files": {}}))
            .await;
        let repeated = self.load().await.unwrap();
        assert!(repeated.loaded.is_empty(), "{repeated:?}");
        repeated
    }

    /// The HTTP client ingest reads the API datasets with, pointed at `self.api`.
    async fn api_client(&self) -> ingest::api::ApiClient {
        let sdk = sdk_config().await;
        ingest::api::ApiClient::new(aws_sdk_secretsmanager::Client::new(&sdk), self.api.clone())
    }

    /// The operator's view of these buckets and warehouse (`etl`).
    async fn etl(&self) -> etl::Pipeline {
        let config = etl::Config {
            ingest_bucket: self.raw.bucket().to_owned(),
            processed_bucket: self.processed.bucket().to_owned(),
            source: None,
            warehouse: Some(DbSource::Url(self.wh.url.clone())),
            lock_table: None,
            landing_bucket: Some(self.landing.bucket().to_owned()),
        };
        etl::Pipeline::new(&config, &sdk_config().await)
    }

    /// The first column of `sql`'s rows, as text.
    async fn texts(&self, sql: &str) -> Vec<String> {
        let rows = self.wh.client().await.query(sql, &[]).await.unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    }

    /// The warehouse's trips, as text, sorted.
    async fn trips(&self) -> Vec<String> {
        self.rows("trips").await
    }

    /// A trips table's rows, as text, sorted.
    async fn rows(&self, table: &str) -> Vec<String> {
        let rows = self
            .wh
            .client()
            .await
            .query(
                &format!(
                    "SELECT concat_ws('|', region, origin_coord::text, destination_coord::text,
                                      to_char(datetime, 'YYYY-MM-DD HH24:MI:SS'), datasource)
                     FROM {table} ORDER BY 1"
                ),
                &[],
            )
            .await
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    }

    /// Every quarantined row of `dataset`: (file, line, column, reason).
    async fn quarantined(&self, dataset: &str) -> BTreeSet<(String, u64, String, String)> {
        let mut out = BTreeSet::new();
        let prefix = format!("quarantine/{dataset}/");
        for key in self.raw.list_keys(&prefix, None).await.unwrap() {
            let body = self.raw.get(&key).await.unwrap().unwrap();
            for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let v: Value = serde_json::from_slice(line).unwrap();
                out.insert((
                    v["file"].as_str().unwrap().to_owned(),
                    v["line"].as_u64().unwrap(),
                    v["column"].as_str().unwrap_or("").to_owned(),
                    v["reason"].as_str().unwrap().to_owned(),
                ));
            }
        }
        out
    }
}

/// The repository's declarations, and the trips again as an append-only log (every row kept,
/// repeats too), which shows a file loaded twice where `insert-ignore` would hide it.
fn declared() -> Vec<Dataset> {
    let mut all = datasets::bundled(&utils::tables::reserved_names()).unwrap();
    let mut log = all.iter().find(|d| d.name == "trips").unwrap().clone();
    log.name = "trip_log".into();
    log.source.prefix = "landing/trip_log/".into();
    log.write_mode = datasets::decl::WriteMode::Append;
    log.warehouse = Some(datasets::decl::Warehouse {
        table: None,
        views: Vec::new(),
    });
    all.push(log);
    datasets::check_together(&all, &utils::tables::reserved_names()).unwrap();
    all
}

const REGIONS: &[(&str, f64, f64)] = &[
    ("Prague", 14.42, 50.08),
    ("Turin", 7.68, 45.07),
    ("Hamburg", 9.99, 53.55),
];
const SOURCES: &[&str] = &[
    "funny_car",
    "baba_car",
    "cheap_mobile",
    "pt_search_app",
    "bad_diesel_vehicles",
];

/// A trips CSV of `n` rows drawn from `seed` (a few repeated within the file), and the good
/// rows as the warehouse renders them. Cheap_mobile is only ever in Prague and Hamburg.
fn trips_csv(seed: u64, n: usize) -> (String, Vec<String>) {
    trips_csv_repeating(seed, n, true)
}

/// [`trips_csv`], with trips repeated within the file or not.
fn trips_csv_repeating(seed: u64, n: usize, repeats: bool) -> (String, Vec<String>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut csv = String::from("region,origin_coord,destination_coord,datetime,datasource\n");
    let mut rows = Vec::new();
    for i in 0..n {
        let (region, lon, lat) = REGIONS[rng.usize(..REGIONS.len())];
        let mut source = SOURCES[rng.usize(..SOURCES.len())];
        if region == "Turin" && source == "cheap_mobile" {
            source = "funny_car";
        }
        // Coordinates with few digits, so their text is the same in CSV and in PostgreSQL.
        let o = (
            lon + rng.i32(-500..500) as f64 / 1000.0,
            lat + rng.i32(-500..500) as f64 / 1000.0,
        );
        let d = (
            lon + rng.i32(-500..500) as f64 / 1000.0,
            lat + rng.i32(-500..500) as f64 / 1000.0,
        );
        let when = format!(
            "2018-05-{:02} {:02}:{:02}:{:02}",
            1 + rng.u32(..28),
            rng.u32(..24),
            rng.u32(..60),
            rng.u32(..60)
        );
        let line = format!(
            "{region},POINT ({} {}),POINT ({} {}),{when},{source}\n",
            o.0, o.1, d.0, d.1
        );
        let row = format!(
            "{region}|({},{})|({},{})|{when}|{source}",
            o.0, o.1, d.0, d.1
        );
        csv.push_str(&line);
        rows.push(row.clone());
        if repeats && i % 97 == 0 {
            // The same trip reported twice: one row in the warehouse.
            csv.push_str(&line);
            rows.push(row);
        }
    }
    (csv, rows)
}

/// Sorted rows equal, or a short account of the difference.
fn same_rows(table: &str, found: Vec<String>, expected: Vec<String>) {
    if found != expected {
        let (f, e): (BTreeSet<_>, BTreeSet<_>) =
            (found.iter().collect(), expected.iter().collect());
        panic!(
            "{table}: {} rows, expected {}; missing {:?}; unexpected {:?} (first 3 of each)",
            found.len(),
            expected.len(),
            e.difference(&f).take(3).collect::<Vec<_>>(),
            f.difference(&e).take(3).collect::<Vec<_>>(),
        );
    }
}

/// The weekly average the view must show, from the rows.
fn weekly(rows: &BTreeSet<String>) -> BTreeMap<String, (i64, i64)> {
    let mut by_region: BTreeMap<String, (i64, BTreeSet<chrono::NaiveDate>)> = BTreeMap::new();
    for row in rows {
        let f: Vec<&str> = row.split('|').collect();
        let t = NaiveDateTime::parse_from_str(f[3], "%Y-%m-%d %H:%M:%S").unwrap();
        let monday = t.date() - chrono::Days::new(t.weekday().num_days_from_monday().into());
        let e = by_region.entry(f[0].to_owned()).or_default();
        e.0 += 1;
        e.1.insert(monday);
    }
    by_region
        .into_iter()
        .map(|(r, (n, weeks))| (r, (n, weeks.len() as i64)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trips_each_file_once_whatever_is_repeated_lost_or_killed() {
    // Files of 1,000 rows and more are first copied straight into the table: A meets a key
    // twice, B one that A put in the table, and both are staged after all; C, whose trips are
    // all new, goes in as copied, while the kills roll it back.
    let lake = Lake {
        bulk_min_rows: 1000,
        ..Lake::new().await
    };
    let (a, mut expected) = trips_csv(1, 1500);
    let (b, rows_b) = trips_csv_repeating(2, 1500, false);
    let (c, rows_c) = trips_csv_repeating(3, 3000, false);
    expected.extend(rows_b);
    expected.extend(rows_c.iter().cloned());
    // File b repeats some of a's trips: duplicates across files are dropped too.
    let b = format!(
        "{b}{}",
        a.lines().skip(1).take(40).collect::<Vec<_>>().join("\n") + "\n"
    );
    // Bad rows, which must be quarantined with their place and reason.
    let a = format!(
        "{a}Prague,POINT (14.4 50.0),POINT (14.4 50.1),28/05/2018 09:03,cheap_mobile\n\
         Turin,POINT (7.6 45.0),POINT (north),2018-05-28 09:03:40,funny_car\n\
         Hamburg,POINT (9.9 53.5)\n"
    );
    let lines_a = a.lines().count() as u64;

    // A: notified, then notified again.
    lake.land("landing/trips/2018-05 a.csv", &a).await;
    let first = lake
        .round(lake.notification(&["landing/trips/2018-05 a.csv"]))
        .await;
    assert_eq!(first.datasets["trips"].quarantined, 3);
    let again = lake
        .round(lake.notification(&["landing/trips/2018-05 a.csv"]))
        .await;
    assert_eq!(again.skipped_files, ["landing/trips/2018-05 a.csv"]);
    assert!(!again.has_new_data);

    // B: its notification is lost; the scheduled sweep finds it (and passes A by).
    lake.land("landing/trips/2018-05 b.csv", &b).await;
    let swept = lake.round(json!({"datasets": ["trips"]})).await;
    assert_eq!(swept.datasets["trips"].rows, 1500 + 40);
    assert!(swept.skipped_files.is_empty());

    // C, to both datasets: every stage killed at growing moments until each gets through;
    // transform and load run between the kills, on whatever the killed ingest left.
    lake.land("landing/trips/2018-05 c.csv", &c).await;
    lake.land("landing/trip_log/2018-05 c.csv", &c).await;
    let event = lake.notification(&[
        "landing/trips/2018-05 c.csv",
        "landing/trip_log/2018-05 c.csv",
    ]);
    lake.killed_until_through(event, &["trips", "trip_log"])
        .await;
    let repeated = lake.hand_offs_repeated("trip").await;
    assert_eq!(repeated.skipped_files.len(), 4, "{repeated:?}");

    let expected: BTreeSet<String> = expected.into_iter().collect();
    same_rows(
        "trips",
        lake.trips().await,
        expected.iter().cloned().collect(),
    );
    // The log holds every row of C once.
    let mut log = rows_c;
    log.sort();
    same_rows("trip_log", lake.rows("trip_log").await, log);

    // Each processed file is in the ledger once, and each raw file was published.
    let wh = lake.wh.client().await;
    let ledger: Vec<(String, i64)> = wh
        .query(
            "SELECT file_key, count(*) FROM totesys_load_ledger WHERE table_name = 'trips'
             GROUP BY file_key ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let raw_parts = lake.raw.list_keys("trips/", None).await.unwrap();
    assert_eq!(raw_parts.len(), 3, "{raw_parts:?}");
    assert_eq!(
        lake.raw.list_keys("trip_log/", None).await.unwrap().len(),
        1
    );
    assert_eq!(
        ledger,
        raw_parts.iter().map(|k| (k.clone(), 1)).collect::<Vec<_>>()
    );
    assert_eq!(
        lake.processed.list_keys("trips/", None).await.unwrap(),
        raw_parts
    );
    assert!(
        lake.raw
            .list_keys("_state/datasets/pending/", None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        lake.processed
            .list_keys("_state/pending/", None)
            .await
            .unwrap()
            .is_empty()
    );

    // The bad rows of A, by file, line, column and reason.
    let file_a = format!("s3://{}/landing/trips/2018-05 a.csv", lake.landing.bucket());
    let quarantined = lake.quarantined("trips").await;
    let places: Vec<(u64, &str)> = quarantined
        .iter()
        .map(|(f, line, column, _)| {
            assert_eq!(*f, file_a);
            (*line, column.as_str())
        })
        .collect();
    assert_eq!(
        places,
        [
            (lines_a - 2, "datetime"),
            (lines_a - 1, "destination_coord"),
            (lines_a, "")
        ]
    );

    // ... and as the operator's etl shows them.
    let files = etl::quarantine::list(&lake.processed, &lake.raw)
        .await
        .unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!((files[0].table.as_str(), files[0].rows), ("trips", 3));
    let shown = etl::quarantine::read(&lake.processed, &lake.raw, &files[0].key)
        .await
        .unwrap();
    assert_eq!(shown[0]["column"], "datetime");
    assert!(etl::quarantine::render_list(&files).contains("2 fields, expected 5"));

    // The view, refreshed after the loads, and the question analysts ask.
    let view: BTreeMap<String, (i64, i64)> = wh
        .query("SELECT region, trips, weeks FROM trips_weekly_average", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    assert_eq!(view, weekly(&expected));
    let cheap: Vec<String> = wh
        .query(
            "SELECT DISTINCT region FROM trips WHERE datasource = 'cheap_mobile' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(cheap, ["Hamburg", "Prague"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_cannot_be_read_is_named_kept_out_and_passed_by() {
    let lake = Lake::new().await;
    let (good, rows) = trips_csv(4, 200);
    // A header without the declared datasource column (on_missing_column: fail).
    let bad = "region,origin_coord,destination_coord,datetime\n\
               Prague,POINT (14.4 50.0),POINT (14.4 50.1),2018-05-28 09:03:40\n";
    lake.land("landing/trips/bad.csv", bad).await;
    let e = lake
        .ingest(lake.notification(&["landing/trips/bad.csv"]))
        .await
        .unwrap_err();
    assert_eq!(e.error_type(), "InvalidInput");
    let message = e.to_string();
    assert!(message.contains("landing/trips/bad.csv"), "{message}");
    assert!(message.contains("datasource"), "{message}");
    assert!(lake.raw.list_keys("trips/", None).await.unwrap().is_empty());

    // Landed again with a good file beside it: the invocation names it again, but only once
    // the good file is in; the sweep after that passes it by.
    lake.land("landing/trips/bad.csv", &format!("{bad}\n"))
        .await;
    lake.land("landing/trips/good.csv", &good).await;
    let e = lake
        .ingest(lake.notification(&["landing/trips/bad.csv", "landing/trips/good.csv"]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("landing/trips/bad.csv"), "{e}");
    assert_eq!(lake.raw.list_keys("trips/", None).await.unwrap().len(), 1);
    let out = lake.round(json!({"datasets": ["trips"]})).await;
    assert!(out.datasets.is_empty(), "{out:?}");
    assert_eq!(out.skipped_files, Vec::<String>::new());
    let expected: BTreeSet<String> = rows.into_iter().collect();
    same_rows("trips", lake.trips().await, expected.into_iter().collect());

    // Landing it again, fixed, is a new version: it is ingested.
    let fixed = bad
        .replace("09:03:40\n", "09:03:40,cheap_mobile\n")
        .replacen("datetime\n", "datetime,datasource\n", 1);
    lake.land("landing/trips/bad.csv", &fixed).await;
    let out = lake.round(json!({"datasets": ["trips"]})).await;
    assert_eq!(out.datasets["trips"].rows, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_at_its_deadline_publishes_one_file_and_says_the_rest_is_left() {
    let lake = Lake::new().await;
    for (n, seed) in [(1, 5), (2, 6), (3, 7)] {
        lake.land(&format!("landing/trips/{n}.csv"), &trips_csv(seed, 50).0)
            .await;
    }
    let ingested = lake.ingest(json!({"datasets": ["trips"]})).await.unwrap();
    assert_eq!(ingested.datasets["trips"].files.len(), 3);
    let mut published = Vec::new();
    for expected_complete in [false, false, true] {
        let out = lake
            .transform_in(
                serde_json::to_value(&ingested).unwrap(),
                context_at_deadline(),
                PAST_MARGIN,
            )
            .await;
        assert_eq!(out.complete, expected_complete, "{out:?}");
        assert_eq!(out.remaining.is_some(), !expected_complete, "{out:?}");
        published.extend(out.datasets["trips"].clone());
    }
    let mut expected = ingested.datasets["trips"].files.clone();
    published.sort();
    expected.sort();
    assert_eq!(published, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_s3_mode_each_notification_moves_the_file_on() {
    let lake = Lake::new().await;
    let (csv, rows) = trips_csv(8, 300);
    lake.land("landing/trips/s3.csv", &csv).await;
    let ingested = lake
        .ingest(lake.notification(&["landing/trips/s3.csv"]))
        .await
        .unwrap();
    let part = ingested.datasets["trips"].files[0].clone();
    let record = |bucket: &S3Store, key: &str| {
        json!({"Records": [{"s3": {"bucket": {"name": bucket.bucket()},
                                   "object": {"key": key}}}]})
    };
    // The marker ingest put after the file notifies transform, which publishes the file.
    let marker = format!("{}{part}", utils::cursor::DATASET_PENDING_PREFIX);
    let transformed = lake.transform(record(&lake.raw, &marker)).await;
    assert_eq!(transformed.datasets["trips"], std::slice::from_ref(&part));
    // The published file notifies the load, which loads the queue.
    let loaded = lake
        .load_with(record(&lake.processed, &part))
        .await
        .unwrap();
    let expected: BTreeSet<String> = rows.into_iter().collect();
    assert_eq!(loaded.loaded["trips"], expected.len() as u64);
    same_rows("trips", lake.trips().await, expected.into_iter().collect());
}

/// The declared key's alias in moto's KMS, made once per moto (tests share it), and another
/// key: the declared key's id and the other's.
async fn export_keys(kms: &aws_sdk_kms::Client) -> (String, String) {
    let alias = "alias/totesys-exports";
    let listed = kms.list_aliases().send().await.unwrap();
    let declared = match listed
        .aliases()
        .iter()
        .find(|a| a.alias_name() == Some(alias))
        .and_then(|a| a.target_key_id())
    {
        Some(id) => id.to_owned(),
        None => {
            let key = kms.create_key().send().await.unwrap();
            let id = key.key_metadata().unwrap().key_id().to_owned();
            kms.create_alias()
                .alias_name(alias)
                .target_key_id(&id)
                .send()
                .await
                .unwrap();
            id
        }
    };
    let other = kms.create_key().send().await.unwrap();
    (declared, other.key_metadata().unwrap().key_id().to_owned())
}

/// A data key under `key`: its plaintext and its encrypted blob.
async fn data_key(kms: &aws_sdk_kms::Client, key: &str) -> (Vec<u8>, Vec<u8>) {
    let out = kms
        .generate_data_key()
        .key_id(key)
        .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    (
        out.plaintext().unwrap().as_ref().to_vec(),
        out.ciphertext_blob().unwrap().as_ref().to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_export_publishes_its_records_decrypted_and_quarantines_the_corrupt_ones() {
    use base64::Engine;
    use datasets::crypt::{Mode, encrypt};
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let lake = Lake::new().await;
    let kms = aws_sdk_kms::Client::new(&sdk_config().await);
    let (declared, other) = export_keys(&kms).await;
    // Two export batches, the older in CTR mode; and a data key under another master key.
    let (gcm_key, gcm_blob) = data_key(&kms, &declared).await;
    let (ctr_key, ctr_blob) = data_key(&kms, &declared).await;
    let (other_key, other_blob) = data_key(&kms, &other).await;
    let mut rng = fastrand::Rng::with_seed(11);
    let record = |payload: &Value,
                  mode: Mode,
                  key: &[u8],
                  blob: &[u8],
                  key_id: &str,
                  rng: &mut fastrand::Rng| {
        let iv: Vec<u8> = match mode {
            Mode::Aes256Gcm => (0..12).map(|_| rng.u8(..)).collect(),
            Mode::Aes256Ctr => (0..16).map(|_| rng.u8(..)).collect(),
        };
        let sealed = encrypt(mode, key, &iv, payload.to_string().as_bytes());
        json!({
            "payload": b64(&sealed),
            "encryption": {
                "encrypted_key": b64(blob),
                "iv": b64(&iv),
                "key_id": key_id,
                "algorithm": if mode == Mode::Aes256Gcm { "AES-256-GCM" } else { "AES-256-CTR" },
            },
            "exported_at": "2024-11-14T09:30:05Z",
        })
    };
    let alias = "alias/totesys-exports";
    let mut lines: Vec<String> = Vec::new();
    // order_id -> the order's values as the warehouse renders them (the file's last wins).
    let mut expected: BTreeMap<i64, String> = BTreeMap::new();
    for i in 0..300i64 {
        let status = ["placed", "paid", "shipped"][(i % 3) as usize];
        let order_id = if i % 50 == 49 { i - 1 } else { i }; // an amendment: the same order again
        let (created, created_utc) = if i % 2 == 0 {
            (
                format!("2024-11-{:02}T10:{:02}:00+02:00", 1 + i % 28, i % 60),
                format!("2024-11-{:02} 08:{:02}:00+00", 1 + i % 28, i % 60),
            )
        } else {
            (
                format!("{:02}/11/2024 10:{:02}:00 +0000", 1 + i % 28, i % 60),
                format!("2024-11-{:02} 10:{:02}:00+00", 1 + i % 28, i % 60),
            )
        };
        let payload = json!({
            "order_id": order_id, "customer": format!("customer-{}", i % 17),
            "amount": format!("{}.{:02}", 10 + i, i % 100), "currency": "GBP",
            "status": status, "created_at": created,
        });
        let (mode, key, blob) = if i < 100 {
            (Mode::Aes256Ctr, &ctr_key, &ctr_blob)
        } else {
            (Mode::Aes256Gcm, &gcm_key, &gcm_blob)
        };
        lines.push(record(&payload, mode, key, blob, alias, &mut rng).to_string());
        expected.insert(
            order_id,
            format!(
                "{order_id}|customer-{}|{}.{:02}|GBP|{status}|{created_utc}",
                i % 17,
                10 + i,
                i % 100
            ),
        );
    }
    let good = lines.len();
    let payload = json!({"order_id": 9001, "customer": "c", "amount": "1.00", "currency": "GBP",
                         "status": "paid", "created_at": "2024-11-01T10:00:00+00:00"});
    let mut corrupt: Vec<(Value, &str)> = Vec::new();
    let mut missing = record(
        &payload,
        Mode::Aes256Gcm,
        &gcm_key,
        &gcm_blob,
        alias,
        &mut rng,
    );
    missing.as_object_mut().unwrap().remove("payload");
    corrupt.push((missing, "missing field payload"));
    let mut tampered = record(
        &payload,
        Mode::Aes256Gcm,
        &gcm_key,
        &gcm_blob,
        alias,
        &mut rng,
    );
    tampered["payload"] = json!(b64(b"not the sealed payload at all"));
    corrupt.push((tampered, "tag does not match"));
    corrupt.push((
        record(
            &payload,
            Mode::Aes256Gcm,
            &other_key,
            &other_blob,
            "alias/someone-else",
            &mut rng,
        ),
        "not the declared key",
    ));
    corrupt.push((
        record(
            &payload,
            Mode::Aes256Gcm,
            &other_key,
            &other_blob,
            alias,
            &mut rng,
        ),
        "the data key does not decrypt",
    ));
    corrupt.push((
        record(
            &payload,
            Mode::Aes256Ctr,
            &gcm_key,
            &ctr_blob,
            alias,
            &mut rng,
        ),
        "does not decrypt to a JSON object",
    ));
    let mut late = payload.clone();
    late["created_at"] = json!("yesterday");
    corrupt.push((
        record(&late, Mode::Aes256Gcm, &gcm_key, &gcm_blob, alias, &mut rng),
        "not a timestamp with a zone",
    ));
    let first_corrupt_line = good as u64 + 1;
    lines.extend(corrupt.iter().map(|(r, _)| r.to_string()));

    // Gzip in two members, as exports written in chunks are.
    let mut body = Vec::new();
    for chunk in lines.chunks(lines.len() / 2 + 1) {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, (chunk.join("\n") + "\n").as_bytes()).unwrap();
        body.extend(gz.finish().unwrap());
    }
    // Every corrupt record, by line and reason, in the file's order.
    let corrupt_in_order = |found: &[(u64, &str)]| {
        assert_eq!(found.len(), corrupt.len(), "{found:?}");
        for ((line, reason), (n, (_, expected))) in found.iter().zip(corrupt.iter().enumerate()) {
            assert_eq!(*line, first_corrupt_line + n as u64);
            assert!(
                reason.contains(expected),
                "line {line}: {reason:?}, expected {expected:?}"
            );
        }
    };
    // `etl dataset check` reads the export on this machine as ingest will: the same rows, the
    // same records quarantined for the same reasons, the data keys from the same KMS.
    let local = std::env::temp_dir().join(format!("export-{}.jsonl.gz", std::process::id()));
    std::fs::write(&local, &body).unwrap();
    let checked = tokio::task::spawn_blocking({
        let local = local.clone();
        let declaration = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../datasets/exported_orders.json"
        );
        let keys = Box::new(etl::dataset::Kms::default());
        move || etl::dataset::check(declaration.as_ref(), &local, None, keys)
    })
    .await
    .unwrap()
    .unwrap();
    std::fs::remove_file(&local).unwrap();
    assert_eq!(checked.rows, good as u64);
    let reasons: Vec<(u64, &str)> = checked
        .quarantined
        .iter()
        .map(|q| (q.line, q.reason.as_str()))
        .collect();
    corrupt_in_order(&reasons);

    let key = "landing/exports/orders/2024-11-14.jsonl.gz";
    lake.landing
        .put(key, Bytes::from(body), "application/gzip")
        .await
        .unwrap();

    // Ingest with a key service of its own, to count what KMS was asked.
    let keys = ingest::dataset::KmsKeys::new(kms.clone());
    let sources = ingest::dataset::Sources {
        landing: Some(&lake.landing),
        api: None,
        keys: Some(&keys),
    };
    let out = ingest::dataset::run(
        sources,
        &lake.raw,
        lake.datasets,
        ingest::dataset::Request::Keys(vec![key.to_owned()]),
        ingest::dataset::PartLimits::default(),
        utils::deadline::Deadline::NONE,
    )
    .await
    .unwrap();
    let run = &out.datasets["exported_orders"];
    assert_eq!(
        (run.rows, run.quarantined),
        (good as u64, corrupt.len() as u64)
    );
    // Each data key once, for 300 records: the two of the export and the refused one.
    assert_eq!(keys.decrypted(), 3);
    let transformed = lake.transform(serde_json::to_value(&out).unwrap()).await;
    lake.load_with(serde_json::to_value(&transformed).unwrap())
        .await
        .unwrap();

    let rows: Vec<String> = lake
        .wh
        .client()
        .await
        .query(
            "SELECT concat_ws('|', order_id, customer, amount, currency, status,
                              to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS+00'))
             FROM exported_orders ORDER BY order_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    same_rows("exported_orders", rows, expected.into_values().collect());

    // Every corrupt record, by line and reason; the value kept is the record as it was
    // (ciphertext), never a decrypted payload.
    let mut found = Vec::new();
    for q in lake
        .raw
        .list_keys("quarantine/exported_orders/", None)
        .await
        .unwrap()
    {
        let body = lake.raw.get(&q).await.unwrap().unwrap();
        for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v: Value = serde_json::from_slice(line).unwrap();
            assert!(!v["value"].as_str().unwrap().contains("customer"), "{v}");
            found.push((
                v["line"].as_u64().unwrap(),
                v["reason"].as_str().unwrap().to_owned(),
            ));
        }
    }
    found.sort();
    corrupt_in_order(
        &found
            .iter()
            .map(|(l, r)| (*l, r.as_str()))
            .collect::<Vec<_>>(),
    );
}

const STATIONS: &[(&str, &str)] = &[
    ("ST01", "Town Hall"),
    ("ST02", "Harbour"),
    ("ST03", "Ring Road"),
];

/// The portal's air-quality workbook for `month` of 2024 (days 1 to `days`), with
/// `amended` days of the month before published again, changed (the portal's corrections):
/// the bytes, and its good rows as the lake renders them. Dates are date cells, every fifth
/// day/month/year text; a value per file is "n/a" and one is Excel's `#DIV/0!`, both on known
/// rows (returned: (row, column)).
fn air_quality_workbook(
    month: u32,
    days: u32,
    amended: u32,
) -> (Vec<u8>, Vec<String>, Vec<(u64, &'static str)>) {
    use rust_xlsxwriter::{ExcelDateTime, Format, Formula, Workbook};
    let mut rng = fastrand::Rng::with_seed(u64::from(month));
    let mut book = Workbook::new();
    let sheet = book.add_worksheet().set_name("Measurements").unwrap();
    sheet
        .write_string(0, 0, "Daily air quality by station (generated)")
        .unwrap();
    // The header names the declared columns, in their order.
    let declared = datasets::bundled(&[]).unwrap();
    let columns = &declared
        .iter()
        .find(|d| d.name == "air_quality")
        .unwrap()
        .columns;
    for (c, column) in columns.iter().enumerate() {
        sheet.write_string(2, c as u16, &column.name).unwrap();
    }
    let date = Format::new().set_num_format("dd/mm/yyyy");
    let mut days_of: Vec<(u32, u32)> = (1..=days).map(|d| (month, d)).collect();
    days_of.extend((1..=amended).map(|d| (month - 1, d)));
    let (mut rows, mut bad) = (Vec::new(), Vec::new());
    let mut r = 3;
    for (m, d) in days_of {
        for (i, (id, name)) in STATIONS.iter().enumerate() {
            let tenths = rng.u32(30..900);
            let no2 = (rng.u8(..6) > 0).then(|| rng.u32(50..900));
            let samples = 18 + rng.u16(..7);
            let validated = m < month || d < days / 2;
            sheet.write_string(r, 0, *id).unwrap();
            sheet.write_string(r, 1, *name).unwrap();
            if d % 5 == 0 {
                sheet
                    .write_string(r, 2, format!("{d:02}/{m:02}/2024"))
                    .unwrap();
            } else {
                let day = ExcelDateTime::from_ymd(2024, m as u8, d as u8).unwrap();
                sheet.write_datetime_with_format(r, 2, &day, &date).unwrap();
            }
            sheet.write_number(r, 3, f64::from(tenths) / 10.0).unwrap();
            if let Some(no2) = no2 {
                sheet.write_number(r, 4, f64::from(no2) / 10.0).unwrap();
            }
            sheet.write_number(r, 5, f64::from(samples)).unwrap();
            sheet.write_boolean(r, 6, validated).unwrap();
            let line = u64::from(r) + 1;
            if m == month && d == 3 && i == 1 {
                sheet.write_string(r, 3, "n/a").unwrap();
                bad.push((line, "pm25"));
            } else if m == month && d == 4 && i == 2 {
                sheet
                    .write_formula(r, 4, Formula::new("=1/0").set_result("#DIV/0!"))
                    .unwrap();
                bad.push((line, "no2"));
            } else {
                rows.push(format!(
                    "{id}|{name}|2024-{m:02}-{d:02}|{}.{}|{}|{samples}|{validated}",
                    tenths / 10,
                    tenths % 10,
                    no2.map_or(String::new(), |v| format!("{}.{}", v / 10, v % 10))
                ));
            }
            r += 1;
        }
    }
    (book.save_to_buffer().unwrap(), rows, bad)
}

/// A day of the bike counters as the portal publishes it: semicolon-separated, a `weather`
/// column the declaration does not name (`on_new_column: ignore`), times as `dd.mm.yyyy HH:MM`,
/// one row whose count is "-": the text and its good rows as the lake renders them.
fn bike_counts_csv(day: u32) -> (String, Vec<String>) {
    let mut rng = fastrand::Rng::with_seed(u64::from(day) + 100);
    let mut csv = String::from("counter_id;weather;counted_at;direction;bikes;temperature\n");
    let mut rows = Vec::new();
    for counter in ["K01", "K02"] {
        for hour in 0..24 {
            for direction in ["in", "out"] {
                let bikes = rng.u32(..400);
                let temperature = (hour != 3).then(|| rng.i32(-50..250));
                let shown = |t: i32| {
                    format!(
                        "{}{}.{}",
                        if t < 0 { "-" } else { "" },
                        t.abs() / 10,
                        t.abs() % 10
                    )
                };
                let bikes_text = if counter == "K02" && hour == 7 && direction == "in" {
                    "-".to_string()
                } else {
                    rows.push(format!(
                        "{counter}|2024-11-{day:02}T{hour:02}:00:00|{direction}|{bikes}|{}",
                        temperature.map_or(String::new(), shown)
                    ));
                    bikes.to_string()
                };
                csv.push_str(&format!(
                    "{counter};cloudy;{day:02}.11.2024 {hour:02}:00;{direction};{bikes_text};{}\n",
                    temperature.map_or(String::new(), shown)
                ));
            }
        }
    }
    (csv, rows)
}

/// The lake's rows of `dataset` by the landed file they came from, each rendered as arrow
/// shows its values, joined by `|`; and one of its files' Parquet footer.
async fn lake_rows(
    store: &S3Store,
    dataset: &str,
) -> (BTreeMap<String, Vec<String>>, Option<ParquetContents>) {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let mut by_file: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut footer = None;
    for key in store.list_keys(&format!("{dataset}/"), None).await.unwrap() {
        let contents = read_object(store, &key).await;
        let file = contents.metadata_value("source_file").unwrap().to_owned();
        let rows = by_file.entry(file).or_default();
        for batch in &contents.batches {
            let options = FormatOptions::default();
            let formatters: Vec<_> = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
                .collect();
            for i in 0..batch.num_rows() {
                let values: Vec<String> =
                    formatters.iter().map(|f| f.value(i).to_string()).collect();
                rows.push(values.join("|"));
            }
        }
        footer = Some(contents);
    }
    for rows in by_file.values_mut() {
        rows.sort();
    }
    (by_file, footer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_data_workbooks_and_csvs_reach_the_lake_as_their_source_files_hold_them() {
    let lake = Lake::new().await;
    let november = "opendata/environment/air_quality/2024-11.xlsx";
    let december = "opendata/environment/air_quality/2024-12.xlsx";
    let (nov, nov_rows, nov_bad) = air_quality_workbook(11, 30, 0);
    // December's workbook publishes the first week of November again, corrected.
    let (dec, dec_rows, dec_bad) = air_quality_workbook(12, 20, 7);
    let counts: Vec<(String, String, Vec<String>)> = (5..8)
        .map(|day| {
            let (csv, rows) = bike_counts_csv(day);
            (
                format!("opendata/mobility/bike_counts/2024-11-{day:02}.csv"),
                csv,
                rows,
            )
        })
        .collect();

    // November's workbook and the first day's counts are notified (the workbook twice).
    lake.landing
        .put(november, Bytes::from(nov), "application/vnd.ms-excel")
        .await
        .unwrap();
    lake.land(&counts[0].0, &counts[0].1).await;
    lake.round(lake.notification(&[november, &counts[0].0]))
        .await;
    let again = lake.round(lake.notification(&[november])).await;
    assert_eq!(again.skipped_files, [november]);

    // December's workbook and the other days: notified, with every stage killed until each
    // gets through; one day's notification is lost (the sweep finds it).
    lake.landing
        .put(december, Bytes::from(dec), "application/vnd.ms-excel")
        .await
        .unwrap();
    for (key, csv, _) in &counts[1..] {
        lake.land(key, csv).await;
    }
    lake.killed_until_through(
        lake.notification(&[december, &counts[1].0]),
        &["air_quality", "bike_counts"],
    )
    .await;
    lake.hand_offs_repeated("air_quality/").await;

    // The lake holds each landed file's good rows, as the file holds them.
    let landed = |key: &str| format!("s3://{}/{key}", lake.landing.bucket());
    let (air, footer) = lake_rows(&lake.processed, "air_quality").await;
    let sorted = |mut rows: Vec<String>| {
        rows.sort();
        rows
    };
    assert_eq!(
        air,
        BTreeMap::from([
            (november.to_owned(), sorted(nov_rows.clone())),
            (december.to_owned(), sorted(dec_rows.clone())),
        ])
    );
    let (bikes, _) = lake_rows(&lake.processed, "bike_counts").await;
    let expected: BTreeMap<String, Vec<String>> = counts
        .iter()
        .map(|(key, _, rows)| (key.clone(), sorted(rows.clone())))
        .collect();
    assert_eq!(bikes, expected);
    // Field and table metadata travel with the files.
    let footer = footer.unwrap();
    let pm25 = footer.schema.field_with_name("pm25").unwrap().metadata();
    assert_eq!(pm25["unit"], "µg/m³");
    assert!(pm25["description"].starts_with("Fine particulate matter"));
    assert_eq!(footer.schema.metadata()["licence"], "CC BY 4.0");
    assert_eq!(footer.schema.metadata()["source"], "environment");
    // ... and as the footer's own key-values, which any engine reads.
    assert_eq!(footer.metadata_value("licence"), Some("CC BY 4.0"));
    assert_eq!(footer.metadata_value("dataset"), Some("air_quality"));

    // The warehouse: each station's day once, in its latest version.
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    for row in nov_rows.iter().chain(&dec_rows) {
        let key: Vec<&str> = row.split('|').collect();
        latest.insert(format!("{}|{}", key[0], key[2]), row.clone());
    }
    let wh = lake.wh.client().await;
    let found = lake
        .texts(
            "SELECT concat_ws('|', station_id, station_name, measured_on::text, pm25::text,
                              coalesce(no2::text, ''), samples::text, validated::text)
             FROM air_quality ORDER BY 1",
        )
        .await;
    same_rows("air_quality", found, sorted(latest.into_values().collect()));
    // The monthly view was refreshed after the last load.
    let view = "SELECT station_id, month::text, days::text, pm25::text FROM air_quality_monthly";
    let fresh = "SELECT station_id, date_trunc('month', measured_on)::date::text, count(*)::text,
                        round(avg(pm25), 1)::text FROM air_quality GROUP BY 1, 2";
    assert_eq!(
        sorted(
            sql_rows(&wh, view)
                .await
                .into_iter()
                .map(|r| r.join("|"))
                .collect()
        ),
        sorted(
            sql_rows(&wh, fresh)
                .await
                .into_iter()
                .map(|r| r.join("|"))
                .collect()
        )
    );

    // Every bad value is in quarantine with its file, row and column.
    let quarantined: BTreeSet<(String, u64, String)> = lake
        .quarantined("air_quality")
        .await
        .into_iter()
        .map(|(file, line, column, _)| (file, line, column))
        .collect();
    let expected: BTreeSet<(String, u64, String)> = nov_bad
        .iter()
        .map(|(line, column)| (landed(november), *line, column.to_string()))
        .chain(
            dec_bad
                .iter()
                .map(|(line, column)| (landed(december), *line, column.to_string())),
        )
        .collect();
    assert_eq!(quarantined, expected);
    let counted: Vec<(String, u64, String, String)> =
        lake.quarantined("bike_counts").await.into_iter().collect();
    assert_eq!(counted.len(), 3, "{counted:?}");
    assert!(
        counted
            .iter()
            .all(|(_, _, column, reason)| column == "bikes" && reason == "not an integer")
    );

    // etl status follows each file from landing to the warehouse; one more file lands, not
    // ingested yet.
    lake.landing
        .put(
            "opendata/environment/air_quality/2025-01.xlsx",
            Bytes::from_static(b"not yet"),
            "application/vnd.ms-excel",
        )
        .await
        .unwrap();
    let pipeline = lake.etl().await;
    let status = etl::status::status(&pipeline, Duration::from_secs(3600))
        .await
        .unwrap();
    let of = |name: &str| status.datasets.iter().find(|d| d.dataset == name).unwrap();
    let air = of("air_quality");
    assert_eq!(
        (
            air.landed,
            air.recorded,
            air.to_publish,
            air.published,
            air.not_loaded
        ),
        (Some(3), 2, 0, 2, Some(0))
    );
    assert_eq!(
        air.not_ingested.as_deref(),
        Some(&["opendata/environment/air_quality/2025-01.xlsx".to_owned()][..])
    );
    assert_eq!(air.quarantine_files, 2);
    let bikes = of("bike_counts");
    assert_eq!(
        (bikes.landed, bikes.published, bikes.not_loaded),
        (Some(3), 3, None)
    );
    assert!(
        status.render().contains("air_quality"),
        "{}",
        status.render()
    );
    // Within the hour it is not behind; past a lag of nothing, the file waiting makes it so.
    assert!(
        !status.behind.contains(&"air_quality".to_owned()),
        "{:?}",
        status.behind
    );
    let strict = etl::status::status(&pipeline, Duration::ZERO)
        .await
        .unwrap();
    assert!(
        strict.behind.contains(&"air_quality".to_owned()),
        "{:?}",
        strict.behind
    );
    assert!(
        !strict.behind.contains(&"bike_counts".to_owned()),
        "{:?}",
        strict.behind
    );
}

/// One batch as the first-load Distributed Map's child execution runs it
/// (`terraform/dataset_backfill.asl.json`): ingest with `{"landed": batch}` again while it
/// reports files left (at its deadline) or fails with `InvalidInput` (a file it could not
/// read, recorded, so the next invocation passes it by). The invocations it took.
async fn backfill_batch(lake: &Lake, batch: &[String]) -> usize {
    let mut invocations = 0;
    loop {
        invocations += 1;
        assert!(invocations <= 2 * batch.len() + 2, "the batch never got in");
        // Each invocation past its deadline margin from the start: one file, then the rest
        // is left to the next.
        let event = json!({ "landed": batch });
        match lake
            .ingest_in(event, context_at_deadline(), PAST_MARGIN)
            .await
        {
            Ok(out) if out.complete => return invocations,
            Ok(_) => continue,
            Err(e) if e.error_type() == "InvalidInput" => continue,
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_load_fans_out_in_batches_and_ingests_each_file_once() {
    use futures_util::StreamExt;
    let lake = Lake::new().await;
    let mut expected = BTreeSet::new();
    for n in 0..40 {
        let (csv, rows) = trips_csv(100 + n, 25);
        lake.land(&format!("landing/trips/history/{n:03}.csv"), &csv)
            .await;
        expected.extend(rows);
    }
    // A console-made "folder" and a file that cannot be read, among them.
    lake.land("landing/trips/history/", "").await;
    lake.land("landing/trips/history/broken.csv", "region\n")
        .await;

    // The Map's ItemReader: the prefix listed; its ItemBatcher: batches of 6 keys, 3 at once.
    // One batch is run twice at the same time (a redrive beside the first run), and the
    // hourly sweep runs beside the Map.
    let keys: Vec<String> = lake
        .landing
        .list_objects("landing/trips/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys.len(), 42);
    let mut batches: Vec<Vec<String>> = keys.chunks(6).map(<[String]>::to_vec).collect();
    batches.push(batches[2].clone());
    let map = futures_util::stream::iter(batches.iter())
        .map(|batch| backfill_batch(&lake, batch))
        .buffer_unordered(3)
        .collect::<Vec<usize>>();
    let sweep = async {
        loop {
            match lake.ingest(json!({"datasets": ["trips"]})).await {
                Ok(out) if out.complete => break,
                Ok(_) => continue,
                Err(e) if e.error_type() == "InvalidInput" => continue,
                Err(e) => panic!("{e}"),
            }
        }
    };
    let (invocations, ()) = tokio::join!(map, sweep);
    // Ingest took one file per invocation (past its deadline from the start), so a batch was
    // run again until it was in (once per file the sweep or the batch's twin did not take).
    assert!(invocations.iter().sum::<usize>() >= 20, "{invocations:?}");

    // The pipeline's next executions publish and load what the backfill queued.
    lake.round(json!({"datasets": ["trips"]})).await;
    let last = lake.round(json!({"datasets": ["trips"]})).await;
    assert!(!last.has_new_data, "{last:?}");
    same_rows("trips", lake.trips().await, expected.into_iter().collect());
    // One record per landed file (the broken one's says why), one raw file per good one.
    let records = lake
        .raw
        .list_keys("_state/datasets/trips/files/", None)
        .await
        .unwrap();
    assert_eq!(records.len(), 41);
    assert_eq!(lake.raw.list_keys("trips/", None).await.unwrap().len(), 40);
    let ledger: i64 = lake
        .wh
        .client()
        .await
        .query_one(
            "SELECT count(DISTINCT file_key) FROM totesys_load_ledger WHERE table_name = 'trips'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ledger, 40);
}

/// Every declared type, in a table the load makes (sent as binary) and in one a user made
/// beforehand with other types (sent as text, which PostgreSQL casts): the same values, as
/// PostgreSQL shows them, whichever way they went in, first load (straight in) or later
/// (staged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_reaches_the_warehouse_as_written_whichever_way_it_is_sent() {
    let declaration = |name: &str| -> Dataset {
        serde_json::from_value(json!({
            "name": name, "description": "every declared type",
            "source": {"prefix": format!("landing/{name}/"), "format": "csv",
                       "csv": {"delimiter": "|"}},
            "columns": [
                {"name": "id", "type": "integer", "nullable": false},
                {"name": "small", "type": "smallint"},
                {"name": "big", "type": "bigint"},
                {"name": "amount", "type": "decimal(12,2)"},
                {"name": "wide", "type": "decimal(38,6)"},
                {"name": "note", "type": "text"},
                {"name": "flag", "type": "boolean"},
                {"name": "day", "type": "date"},
                {"name": "at", "type": "timestamp"},
                {"name": "at_zone", "type": "timestamptz"},
                {"name": "clock", "type": "time"},
                {"name": "place", "type": "point"}
            ],
            "key": ["id"], "write_mode": "merge",
            "warehouse": {}
        }))
        .unwrap()
    };
    let mut all = declared();
    all.push(declaration("every_type"));
    all.push(declaration("every_type_user"));
    let lake = Lake::with(all).await;
    // The user's own table: wider and other types, cast from text.
    lake.wh
        .client()
        .await
        .batch_execute(
            "CREATE TABLE every_type_user (id bigint PRIMARY KEY, small integer, big numeric,
                amount numeric(14,3), wide numeric, note varchar(100), flag boolean, day date,
                at timestamp(0), at_zone timestamptz, clock time, place point)",
        )
        .await
        .unwrap();
    let header = "id|small|big|amount|wide|note|flag|day|at|at_zone|clock|place\n";
    let first = format!(
        "{header}1|-32768|9223372036854775807|-1234567890.05|12345678901234567890123456789012.123456|tab\\there, café|true|1999-12-31|1969-07-20 20:17:40.123456|2024-11-14T09:30:00+01:00|23:59:59.999999|POINT (-0.1275 51.50722)\n\
         2|||0.00|-0.000001||false|2000-01-01|2000-01-01 00:00:00|1999-12-31T23:59:59Z|00:00|POINT (0 0)\n"
    );
    let second = format!(
        "{header}3|7|-1|100000.10|0|x|t|2024-02-29|2024-02-29 12:00:00.5|2024-02-29T12:00:00.5-05:00|12:34:56|POINT (180 -90)\n"
    );
    for (n, body) in [first, second].iter().enumerate() {
        for name in ["every_type", "every_type_user"] {
            lake.land(&format!("landing/{name}/{n}.csv"), body).await;
        }
        lake.round(json!({"datasets": ["every_type", "every_type_user"]}))
            .await;
    }
    let shown = |table: &str| {
        format!(
            "SELECT concat_ws(' | ', id, small, big, amount, wide, note, flag, day, at,
                              at_zone AT TIME ZONE 'UTC', clock, place) FROM {table} ORDER BY id"
        )
    };
    let made = lake.texts(&shown("every_type")).await;
    assert_eq!(
        made,
        [
            "1 | -32768 | 9223372036854775807 | -1234567890.05 | \
             12345678901234567890123456789012.123456 | tab\\there, café | t | 1999-12-31 | \
             1969-07-20 20:17:40.123456 | 2024-11-14 08:30:00 | 23:59:59.999999 | \
             (-0.1275,51.50722)",
            "2 | 0.00 | -0.000001 | f | 2000-01-01 | 2000-01-01 00:00:00 | \
             1999-12-31 23:59:59 | 00:00:00 | (0,0)",
            "3 | 7 | -1 | 100000.10 | 0.000000 | x | t | 2024-02-29 | 2024-02-29 12:00:00.5 | \
             2024-02-29 17:00:00.5 | 12:34:56 | (180,-90)",
        ]
    );
    // The user's table holds the same values, under its own types.
    let user = lake.texts(&shown("every_type_user")).await;
    assert_eq!(user.len(), 3);
    assert!(
        user[0].starts_with("1 | -32768 | 9223372036854775807 | -1234567890.050 | "),
        "{}",
        user[0]
    );
    assert!(user[0].contains("1969-07-20 20:17:40 | "), "{}", user[0]);
    assert!(user[2].ends_with("| (180,-90)"), "{}", user[2]);
}

/// The dataset events in `events/` (what the docs invoke ingest with) are requests ingest
/// reads, naming declared datasets and keys under their prefixes.
#[test]
fn the_dataset_event_examples_are_requests_ingest_reads() {
    let declared = declared();
    let events = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events");
    let read = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(events.join(name)).unwrap()).unwrap()
    };
    let sweep = ingest::dataset::request_from_event(
        &read("ingest-datasets-sweep.json"),
        Some("l"),
        &declared,
    )
    .unwrap();
    assert!(
        matches!(sweep, Some(ingest::dataset::Request::Sweep(_))),
        "{sweep:?}"
    );
    let landed =
        ingest::dataset::request_from_event(&read("ingest-landed.json"), Some("l"), &declared)
            .unwrap();
    let Some(ingest::dataset::Request::Keys(keys)) = landed else {
        panic!("{landed:?}")
    };
    for key in keys {
        assert!(
            ingest::dataset::dataset_of(&declared, &key).is_some(),
            "{key}"
        );
    }
    // An API dataset's events need no landing bucket.
    for (file, work) in [
        ("ingest-api-plan.json", ingest::api::Work::Plan),
        ("ingest-api-range.json", ingest::api::Work::Range(0)),
    ] {
        let request = ingest::dataset::request_from_event(&read(file), None, &declared).unwrap();
        assert_eq!(
            request,
            Some(ingest::dataset::Request::Api {
                dataset: "nyc_crashes".into(),
                work
            }),
            "{file}"
        );
    }
}

// --- Paged HTTP APIs: New York City's collisions from a local SODA server --------------------

/// The app token the local API wants, and the secret the declarations name it by.
const SODA_TOKEN: &str = "local-app-token";

/// The NYC datasets' resources on the local API.
const NYC: &[(&str, &str)] = &[
    ("nyc_crashes", "h9gi-nx95"),
    ("nyc_vehicles", "bm4k-52h4"),
    ("nyc_persons", "f55k-p6yu"),
];

/// The local open-data API (`tests/soda/server.py`), stopped when dropped.
struct Soda {
    process: std::process::Child,
    url: String,
    http: reqwest::Client,
}

impl Soda {
    fn start(crashes: u32, throttle_every: u32, fail_every: u32) -> Soda {
        Self::start_with(crashes, throttle_every, fail_every, &[])
    }

    /// [`Soda::start`] with more of the server's options (`--token-in-links`).
    fn start_with(crashes: u32, throttle_every: u32, fail_every: u32, more: &[&str]) -> Soda {
        use std::io::BufRead;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/soda/server.py");
        let mut process = std::process::Command::new("python3")
            .arg(script)
            .args(["--crashes", &crashes.to_string(), "--token", SODA_TOKEN])
            .args(["--throttle-every", &throttle_every.to_string()])
            .args(["--fail-every", &fail_every.to_string()])
            .args(more)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the local API");
        let mut line = String::new();
        std::io::BufReader::new(process.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().expect("the server prints its port");
        Soda {
            process,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    async fn admin(&self, path: &str) -> Value {
        let url = format!("{}/_admin/{path}", self.url);
        let response = self.http.post(url).send().await.unwrap();
        assert!(response.status().is_success(), "{path}: {response:?}");
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
    }

    /// Every row of a resource, with its system fields.
    async fn rows(&self, resource: &str) -> Vec<Value> {
        let url = format!("{}/_admin/rows?resource={resource}", self.url);
        let body = self.http.get(url).send().await.unwrap().bytes().await;
        serde_json::from_slice(&body.unwrap()).unwrap()
    }

    /// Resource requests served.
    async fn requests(&self) -> u64 {
        let url = format!("{}/_admin/stats", self.url);
        let body = self.http.get(url).send().await.unwrap().bytes().await;
        let stats: Value = serde_json::from_slice(&body.unwrap()).unwrap();
        stats["requests"].as_u64().unwrap()
    }

    async fn statuses(&self) -> BTreeMap<String, u64> {
        let url = format!("{}/_admin/stats", self.url);
        let body = self.http.get(url).send().await.unwrap().bytes().await;
        let stats: Value = serde_json::from_slice(&body.unwrap()).unwrap();
        serde_json::from_value(stats["statuses"].clone()).unwrap()
    }

    /// Waits until the server's stamps are behind the clock: it stamps each change at least a
    /// millisecond after the one before, so a burst of changes runs ahead of real time, and a
    /// window ending now would leave the last of them to the next run.
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
}

impl Drop for Soda {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Ingest's dataset path with an API client of the test's own, as the Lambda runs it but with
/// raw files of at most `part_records` records and short backoffs.
struct ApiIngest<'l> {
    lake: &'l Lake,
    client: ingest::api::ApiClient,
    limits: ingest::dataset::PartLimits,
}

impl<'l> ApiIngest<'l> {
    async fn new(lake: &'l Lake, part_records: u64) -> Self {
        let mut limits = ingest::dataset::PartLimits::default();
        limits.api.part_records = part_records;
        limits.api.backoff = Duration::from_millis(50);
        ApiIngest {
            lake,
            client: lake.api_client().await,
            limits,
        }
    }

    async fn run(
        &self,
        request: ingest::dataset::Request,
        deadline: utils::deadline::Deadline,
    ) -> ingest::Result<ingest::Output> {
        let sources = ingest::dataset::Sources {
            landing: None,
            api: Some(&self.client),
            keys: None,
        };
        let lake = self.lake;
        ingest::dataset::run(
            sources,
            &lake.raw,
            lake.datasets,
            request,
            self.limits,
            deadline,
        )
        .await
    }

    /// `work` of `dataset`'s window, without a deadline.
    async fn api(&self, dataset: &str, work: ingest::api::Work) -> ingest::Output {
        let request = ingest::dataset::Request::Api {
            dataset: dataset.into(),
            work,
        };
        self.run(request, utils::deadline::Deadline::NONE)
            .await
            .unwrap()
    }
}

/// The declared token's secret, in the local Secrets Manager.
async fn token_secret(name: &str, value: &str) {
    let sdk = sdk_config().await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    let created = client
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await;
    if let Err(e) = created {
        let exists = e
            .as_service_error()
            .is_some_and(|e| e.is_resource_exists_exception());
        assert!(exists, "{e:?}");
        client
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .send()
            .await
            .unwrap();
    }
}

/// The declarations with the NYC datasets tuned for a small local run: short pages, up to four
/// ranges for the first load, no lag (the tests wait for the server's stamps instead), a
/// short lookback.
fn declared_nyc() -> Vec<Dataset> {
    let mut all = declared();
    for d in &mut all {
        if let Some(api) = d.source.api.as_mut() {
            // The crashes' in pages short enough for a first load of four ranges of four
            // pages or more.
            api.page_size = if d.name == "nyc_crashes" { 15 } else { 40 };
            api.first_load_ranges = 4;
            api.cursor.lag_seconds = 0;
            api.cursor.lookback_seconds = 2;
            api.cursor.initial = "2024-01-01T00:00:00".into();
        }
    }
    all
}

/// A server row's value of `column` as PostgreSQL and arrow show it ("∅": null).
fn soda_text(column: &datasets::decl::Column, row: &Value) -> String {
    use datasets::decl::Kind;
    let Some(v) = row.get(&column.name).and_then(Value::as_str) else {
        return "∅".into();
    };
    match column.kind {
        Kind::Date => v[..10].to_owned(),
        Kind::Time => chrono::NaiveTime::parse_from_str(v, "%H:%M")
            .unwrap()
            .format("%H:%M:%S")
            .to_string(),
        _ => v.to_owned(),
    }
}

/// The server's rows of `dataset`, by key, as text.
async fn soda_rows(soda: &Soda, dataset: &Dataset, resource: &str) -> BTreeMap<String, String> {
    let key = &dataset.key[0];
    soda.rows(resource)
        .await
        .iter()
        .map(|r| {
            let values: Vec<String> = dataset.columns.iter().map(|c| soda_text(c, r)).collect();
            (r[key].as_str().unwrap().to_owned(), values.join("|"))
        })
        .collect()
}

/// The warehouse table's rows, by key, as text.
async fn warehouse_rows(lake: &Lake, dataset: &Dataset) -> BTreeMap<String, String> {
    let values: Vec<String> = dataset
        .columns
        .iter()
        .map(|c| format!("coalesce({}::text, '∅')", c.name))
        .collect();
    let sql = format!(
        "SELECT {}::text, concat_ws('|', {}) FROM {}",
        dataset.key[0],
        values.join(", "),
        dataset.name
    );
    let rows = lake.wh.client().await.query(&sql, &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// The lake's rows of `dataset`: each key's version in the last file (key order) that holds
/// it, as text; and the files. No file holds a key twice.
async fn lake_latest(store: &S3Store, dataset: &Dataset) -> (BTreeMap<String, String>, usize) {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let key_at = dataset
        .columns
        .iter()
        .position(|c| c.name == dataset.key[0])
        .unwrap();
    let mut latest = BTreeMap::new();
    let files = store
        .list_keys(&format!("{}/", dataset.name), None)
        .await
        .unwrap();
    for file in &files {
        let contents = read_object(store, file).await;
        let mut in_file = BTreeSet::new();
        for batch in &contents.batches {
            let options = FormatOptions::default().with_null("∅");
            let formatters: Vec<_> = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
                .collect();
            for i in 0..batch.num_rows() {
                let values: Vec<String> =
                    formatters.iter().map(|f| f.value(i).to_string()).collect();
                let key = values[key_at].clone();
                assert!(in_file.insert(key.clone()), "{file} holds {key} twice");
                latest.insert(key, values.join("|"));
            }
        }
    }
    (latest, files.len())
}

/// Persons injured and killed, and crashes, per borough and month, from the server's rows:
/// what the warehouse view must say.
async fn injured_by_borough_month(soda: &Soda) -> Vec<String> {
    let by = |rows: Vec<Value>, key: &str| -> BTreeMap<String, Value> {
        rows.into_iter()
            .map(|r| (r[key].as_str().unwrap().to_owned(), r))
            .collect()
    };
    let crashes = by(soda.rows("h9gi-nx95").await, "collision_id");
    let vehicles = by(soda.rows("bm4k-52h4").await, "unique_id");
    let mut out: BTreeMap<(String, String), (u64, u64, BTreeSet<String>)> = BTreeMap::new();
    for p in soda.rows("f55k-p6yu").await {
        let v = &vehicles[p["vehicle_id"].as_str().unwrap()];
        let c = &crashes[v["collision_id"].as_str().unwrap()];
        let borough = c["borough"].as_str().unwrap_or("UNKNOWN").to_owned();
        let month = format!("{}-01", &c["crash_date"].as_str().unwrap()[..7]);
        let e = out.entry((borough, month)).or_default();
        e.0 += u64::from(p["person_injury"] == "Injured");
        e.1 += u64::from(p["person_injury"] == "Killed");
        e.2.insert(c["collision_id"].as_str().unwrap().to_owned());
    }
    let mut rows: Vec<String> = out
        .into_iter()
        .map(|((b, m), (i, k, c))| format!("{b}|{m}|{i}|{k}|{}", c.len()))
        .collect();
    rows.sort();
    rows
}

/// The raw zone, the lake and the warehouse each hold the server's rows of every NYC dataset
/// (amended records in their latest version, each key once); nothing is left to queue; the
/// view over the three tables is the server's.
async fn nyc_matches_the_server(lake: &Lake, soda: &Soda) {
    for (name, resource) in NYC {
        let dataset = lake.datasets.iter().find(|d| d.name == *name).unwrap();
        let expected = soda_rows(soda, dataset, resource).await;
        assert!(!expected.is_empty());
        let warehouse = warehouse_rows(lake, dataset).await;
        assert_eq!(
            warehouse.len(),
            expected.len(),
            "{name}: rows in the warehouse"
        );
        assert_eq!(warehouse, expected, "{name}: the warehouse");
        let (published, _) = lake_latest(&lake.processed, dataset).await;
        assert_eq!(published, expected, "{name}: the lake");
        // The raw zone holds the lake's files and nothing else: no file of a killed attempt
        // is left over (a replay of the prefix would publish it).
        let prefix = format!("{name}/");
        assert_eq!(
            lake.raw.list_keys(&prefix, None).await.unwrap(),
            lake.processed.list_keys(&prefix, None).await.unwrap(),
            "{name}: raw and processed files"
        );
        let state: Value = serde_json::from_slice(
            &lake
                .raw
                .get(&ingest::api::state_key(name))
                .await
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert!(state["window"].is_null(), "{name}: {state}");
        assert_eq!(state["unmarked"], json!([]), "{name}: {state}");
    }
    let view = lake
        .texts(
            "SELECT concat_ws('|', borough, month, injured, killed, crashes)
             FROM nyc_injured_by_borough_month ORDER BY 1",
        )
        .await;
    assert_eq!(view, injured_by_borough_month(soda).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_mass_upload_and_three_daily_runs_equal_the_server_through_faults() {
    let soda = Soda::start(250, 9, 13);
    token_secret("nyc-open-data-app-token", SODA_TOKEN).await;
    let lake = Lake::reading(declared_nyc(), &soda).await;
    soda.settle().await;

    // The mass upload of the crashes as the Map runs it: the plan, then every range at once,
    // in files of at most 100 records, one range read by two invocations at the same time.
    let plan = lake
        .ingest(json!({"api": {"dataset": "nyc_crashes"}}))
        .await
        .unwrap();
    let ranges = plan.api_plan.unwrap().ranges;
    assert_eq!(ranges, [0, 1, 2, 3]);
    // etl status follows the window.
    let pipeline = lake.etl().await;
    let status = etl::status::status(&pipeline, Duration::from_secs(3600))
        .await
        .unwrap();
    let crashes = status
        .datasets
        .iter()
        .find(|d| d.dataset == "nyc_crashes")
        .unwrap();
    let api = crashes.api.as_ref().unwrap();
    assert_eq!(
        (api.read_to.as_deref(), api.ranges_left),
        (None, Some((4, 4)))
    );
    assert_eq!(crashes.landed, None);
    assert!(
        status.render().contains(": 4 of 4 ranges"),
        "{}",
        status.render()
    );
    let reader = ApiIngest::new(&lake, 100).await;
    let range = |k: usize| reader.api("nyc_crashes", ingest::api::Work::Range(k));
    let runs =
        futures_util::future::join_all(ranges.iter().map(|k| range(*k)).chain([range(1)])).await;
    let mut files = BTreeSet::new();
    for run in runs {
        assert!(run.complete, "{run:?}");
        for f in run.datasets.values().flat_map(|d| &d.files) {
            assert!(files.insert(f.clone()), "{f} committed twice");
        }
    }
    assert!(files.len() >= 4, "{files:?}");
    // The vehicles and persons by a sweep whose invocations are killed at moments growing
    // from 1 ms (mid-page, mid-file, mid-commit) until one gets through.
    lake.killed_until_through(
        json!({"datasets": ["nyc_vehicles", "nyc_persons"]}),
        &["nyc_crashes", "nyc_vehicles", "nyc_persons"],
    )
    .await;
    nyc_matches_the_server(&lake, &soda).await;

    // Three daily runs: crashes added and old ones amended between them, every stage killed
    // until it gets through, every hand-off repeated.
    for day in 0..3 {
        soda.admin("add?crashes=15").await;
        let amended = soda.admin("amend?crashes=8").await;
        assert_eq!(amended.as_array().unwrap().len(), 8);
        soda.settle().await;
        let all: Vec<&str> = NYC.iter().map(|(n, _)| *n).collect();
        lake.killed_until_through(json!({ "datasets": all }), &all)
            .await;
        for (name, _) in NYC {
            lake.hand_offs_repeated(&format!("{name}/")).await;
        }
        nyc_matches_the_server(&lake, &soda).await;
        let _ = day;
    }
    let status = etl::status::status(&pipeline, Duration::from_secs(3600))
        .await
        .unwrap();
    for (name, _) in NYC {
        let d = status.datasets.iter().find(|d| d.dataset == *name).unwrap();
        let api = d.api.as_ref().unwrap();
        assert!(
            api.read_to.is_some() && api.window_upper.is_none(),
            "{name}: {api:?}"
        );
        assert_eq!((d.to_publish, d.not_loaded), (0, Some(0)), "{name}");
    }
    // The faults came, and were ridden out.
    let statuses = soda.statuses().await;
    assert!(
        statuses.get("429").copied().unwrap_or(0) > 0,
        "{statuses:?}"
    );
    assert!(
        statuses.get("500").copied().unwrap_or(0) > 0,
        "{statuses:?}"
    );
}

/// The other paginators and CSV pages: the crashes by links in the body (`/next`), the
/// vehicles as CSV by the `Link` header, the persons by offset. The persons' first load goes a
/// page per range at a time, then all three are killed at moments growing from 5 ms, a commit
/// per page; between the invocations old crashes are amended, with a person each, so records
/// leave the window behind the persons' offset and shift every offset after them. Nothing may be skipped or read twice: after the first load and a daily
/// run the warehouse, lake and raw zone equal the server. The server's links carry the token
/// as a parameter, as some portals' do: no object keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_and_link_paging_and_csv_pages_read_exactly_while_the_window_shifts() {
    use datasets::api::Paginator;
    let soda = Soda::start_with(100, 0, 0, &["--token-in-links"]);
    token_secret("nyc-open-data-app-token", SODA_TOKEN).await;
    let mut all = declared_nyc();
    for d in &mut all {
        let Some(api) = d.source.api.as_mut() else {
            continue;
        };
        api.page_size = 10;
        match d.name.as_str() {
            "nyc_crashes" => {
                api.resource = "/paged/h9gi-nx95.json".into();
                api.records = "/results".into();
                api.paginator = Paginator::Link {
                    next: Some("/next".into()),
                };
            }
            "nyc_vehicles" => {
                api.resource = "/paged/bm4k-52h4.csv".into();
                api.paginator = Paginator::Link { next: None };
                d.source.format = datasets::decl::Format::Csv;
            }
            _ => api.paginator = Paginator::Offset,
        }
    }
    let lake = Lake::reading(all, &soda).await;
    soda.settle().await;
    let reader = ApiIngest::new(&lake, 10).await;
    let names: Vec<String> = NYC.iter().map(|(n, _)| (*n).to_owned()).collect();
    let mut amended = BTreeSet::new();
    let mut amend = async || {
        let ids = soda.admin("amend?crashes=2").await;
        amended.extend(ids.as_array().unwrap().iter().map(|v| v.to_string()));
    };
    // The persons a page per range at a time (each invocation's deadline is past once it has
    // read one), old crashes amended between.
    for _ in 0..5 {
        let request = ingest::dataset::Request::Api {
            dataset: "nyc_persons".into(),
            work: ingest::api::Work::All,
        };
        let past = utils::deadline::Deadline::at(std::time::SystemTime::now(), Duration::ZERO);
        let run = reader.run(request, past).await.unwrap();
        assert!(!run.complete);
        amend().await;
    }
    // Then all three, killed.
    let (mut kills, mut after) = (0, Duration::from_millis(5));
    loop {
        let request = ingest::dataset::Request::Sweep(names.clone());
        let sweep = reader.run(request, utils::deadline::Deadline::NONE);
        if let Ok(run) = tokio::time::timeout(after, sweep).await {
            assert!(run.unwrap().complete);
            break;
        }
        kills += 1;
        amend().await;
        after = after.mul_f64(1.5);
    }
    assert!(kills >= 5, "killed only {kills} times");
    let pipeline = lake.etl().await;
    let status = etl::status::status(&pipeline, Duration::from_secs(3600))
        .await
        .unwrap();
    for d in status
        .datasets
        .iter()
        .filter(|d| names.contains(&d.dataset))
    {
        let api = d.api.as_ref().unwrap();
        assert!(api.read_to.is_some() && api.window_upper.is_none(), "{d:?}");
    }
    lake.transform(json!({"bucket": lake.raw.bucket(), "files": {}}))
        .await;
    lake.load().await.unwrap();
    // The crashes amended after the first window started left it: the daily run reads them.
    soda.settle().await;
    let daily = lake.round(json!({ "datasets": names })).await;
    let rows = daily.datasets["nyc_crashes"].rows;
    assert!((1..=amended.len() as u64).contains(&rows), "{daily:?}");
    for (name, _) in NYC {
        lake.hand_offs_repeated(&format!("{name}/")).await;
    }
    nyc_matches_the_server(&lake, &soda).await;
    // The links were kept (the state, each part's footer) with the token as <token>.
    let contains = |body: &[u8], what: &str| body.windows(what.len()).any(|w| w == what.as_bytes());
    let mut sealed = 0;
    for store in [&lake.raw, &lake.processed] {
        for object in store.list_objects("").await.unwrap() {
            let body = store.get(&object.key).await.unwrap().unwrap();
            assert!(
                !contains(&body, SODA_TOKEN),
                "{} keeps the token",
                object.key
            );
            sealed += usize::from(contains(&body, "app_token=<token>"));
        }
    }
    assert!(sealed > 0, "no link with the token was kept");
}

/// One sweep of file and API datasets (one schedule for all): an API that refuses the token
/// fails the invocation with its error, but only once the others have had their turn: the
/// landed file is in, and the next sweep, with the token right, reads the API and only it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_that_fails_does_not_hold_back_the_datasets_swept_with_it() {
    let soda = Soda::start(20, 0, 0);
    let mut all = declared_nyc();
    let crashes = all.iter_mut().find(|d| d.name == "nyc_crashes").unwrap();
    let api = crashes.source.api.as_mut().unwrap();
    api.token.as_mut().unwrap().secret = "nyc-mixed-sweep-token".into();
    token_secret("nyc-mixed-sweep-token", "not-the-token").await;
    let lake = Lake::reading(all, &soda).await;
    soda.settle().await;
    let (csv, rows) = trips_csv(31, 50);
    lake.land("landing/trips/a.csv", &csv).await;
    let sweep = json!({"datasets": ["nyc_crashes", "trips"]});

    let e = lake.ingest(sweep.clone()).await.unwrap_err();
    assert_eq!(e.error_type(), "Configuration", "{e}");
    assert!(e.to_string().contains("HTTP 403"), "{e}");
    let parts = lake.raw.list_keys("trips/", None).await.unwrap();
    assert_eq!(parts.len(), 1, "the landed file is in: {parts:?}");
    assert!(
        lake.raw
            .list_keys("nyc_crashes/", None)
            .await
            .unwrap()
            .is_empty()
    );

    token_secret("nyc-mixed-sweep-token", SODA_TOKEN).await;
    let out = lake.ingest(sweep).await.unwrap();
    assert!(out.complete, "{out:?}");
    assert_eq!(
        out.datasets.keys().collect::<Vec<_>>(),
        ["nyc_crashes"],
        "the file is not read again: {out:?}"
    );
    assert_eq!(out.datasets["nyc_crashes"].rows, 20, "{out:?}");
    lake.transform(json!({"bucket": lake.raw.bucket(), "files": {}}))
        .await;
    lake.load().await.unwrap();
    let expected: BTreeSet<String> = rows.into_iter().collect();
    same_rows("trips", lake.trips().await, expected.into_iter().collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_that_refuses_or_keeps_failing_is_a_typed_error_naming_the_request() {
    let soda = Soda::start(30, 0, 0);
    let mut all = declared_nyc();
    let crashes = all.iter_mut().find(|d| d.name == "nyc_crashes").unwrap();
    let api = crashes.source.api.as_mut().unwrap();
    api.token.as_mut().unwrap().secret = "nyc-wrong-token".into();
    api.retries = 2;
    token_secret("nyc-wrong-token", "not-the-token").await;
    let lake = Lake::reading(all, &soda).await;

    let e = lake
        .ingest(json!({"datasets": ["nyc_crashes"]}))
        .await
        .unwrap_err();
    assert_eq!(e.error_type(), "Configuration");
    let message = e.to_string();
    assert!(
        message.contains("/resource/h9gi-nx95.json?$select="),
        "{message}"
    );
    assert!(message.contains("HTTP 403"), "{message}");
    assert!(!message.contains("not-the-token"), "{message}");

    // Every request fails: tried again (backing off), then a transient error Step Functions
    // retries, and nothing committed.
    token_secret("nyc-wrong-token", SODA_TOKEN).await;
    soda.admin("faults?fail_every=1").await;
    let lake2 = Lake::reading(lake.datasets.to_vec(), &soda).await;
    let e = lake2
        .ingest(json!({"datasets": ["nyc_crashes"]}))
        .await
        .unwrap_err();
    assert_eq!(e.error_type(), "TransientSourceError", "{e}");
    assert!(e.to_string().contains("after 3 tries"), "{e}");
    assert!(
        lake2
            .raw
            .list_keys("nyc_crashes/", None)
            .await
            .unwrap()
            .is_empty(),
        "no raw file"
    );
    // Once the server is well again, the same run goes through.
    soda.admin("faults?fail_every=0").await;
    let out = lake2
        .ingest(json!({"datasets": ["nyc_crashes"]}))
        .await
        .unwrap();
    assert_eq!(out.datasets["nyc_crashes"].rows, 30);
}

/// An invocation killed after a file's upload and before its commit leaves a file the state
/// does not name: the next takes it as its footer says (where it ends, what it quarantined)
/// rather than writing the key again, and the result is the one run straight through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_uploaded_but_never_committed_is_taken_from_its_footer() {
    let soda = Soda::start(120, 0, 0);
    token_secret("nyc-open-data-app-token", SODA_TOKEN).await;
    let lake = Lake::reading(declared_nyc(), &soda).await;
    let reader = ApiIngest::new(&lake, 20).await;
    let run = |work| reader.api("nyc_crashes", work);
    let state_key = ingest::api::state_key("nyc_crashes");
    run(ingest::api::Work::Plan).await;
    let planned = lake.raw.get(&state_key).await.unwrap().unwrap();
    let straight = run(ingest::api::Work::All).await;
    let files = &straight.datasets["nyc_crashes"].files;
    assert!(files.len() >= 3, "{files:?}");
    let read_through = lake.raw.get(&state_key).await.unwrap().unwrap();
    let bodies = |keys: Vec<String>| async {
        let mut out = BTreeMap::new();
        for k in keys {
            out.insert(k.clone(), lake.raw.get(&k).await.unwrap().unwrap());
        }
        out
    };
    let raw_before = bodies(lake.raw.list_keys("nyc_crashes/", None).await.unwrap()).await;

    // Every commit lost: the state as planned, the files all there.
    lake.raw
        .put(&state_key, planned.clone(), "application/json")
        .await
        .unwrap();
    let ranges = serde_json::from_slice::<Value>(&planned).unwrap()["window"]["ranges"]
        .as_array()
        .unwrap()
        .len() as u64;
    let requests = soda.requests().await;
    let again = run(ingest::api::Work::All).await;
    // Each file was taken as it was: no page asked for again but, per range, the empty one
    // that ended it where it ended on a full page (no file says so).
    assert!(ranges >= 2, "{ranges}");
    assert!(soda.requests().await - requests <= ranges);
    assert_eq!(&again.datasets["nyc_crashes"].files, files);
    assert_eq!(again.datasets["nyc_crashes"].rows, 120);
    let raw_after = bodies(lake.raw.list_keys("nyc_crashes/", None).await.unwrap()).await;
    assert_eq!(raw_after, raw_before, "no file written again");
    let state = |b: &Bytes| -> Value { serde_json::from_slice(b).unwrap() };
    assert_eq!(
        state(&lake.raw.get(&state_key).await.unwrap().unwrap()),
        state(&read_through)
    );
}
