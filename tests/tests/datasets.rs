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
use totesys_tests::*;
use utils::db::{Connector, DbSource};
use utils::store::S3Store;

/// The landing, raw and processed buckets, a warehouse, and the Lambdas over them.
struct Lake {
    landing: S3Store,
    raw: S3Store,
    processed: S3Store,
    wh: TestDb,
    datasets: &'static [Dataset],
}

impl Lake {
    async fn new() -> Self {
        Lake {
            landing: bucket().await,
            raw: bucket().await,
            processed: bucket().await,
            wh: TestDb::warehouse().await,
            datasets: declared().leak(),
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
                deadline_margin: utils::deadline::DEFAULT_MARGIN,
                tables: utils::tables::TABLES.iter().collect(),
                landing_bucket: Some(self.landing.bucket().to_owned()),
                datasets: self.datasets.to_vec(),
            },
            store: self.raw.clone(),
            landing: Some(self.landing.clone()),
            kms: aws_sdk_kms::Client::new(&sdk),
        };
        ingest::handler(LambdaEvent::new(event, Context::default()), &deps).await
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
                bulk_min_rows: load::bulk::DEFAULT_MIN_ROWS,
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

    /// Every quarantined row: (file, line, column, reason).
    async fn quarantined(&self) -> BTreeSet<(String, u64, String, String)> {
        let mut out = BTreeSet::new();
        for key in self.raw.list_keys("quarantine/trips/", None).await.unwrap() {
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
        if i % 97 == 0 {
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
    let lake = Lake::new().await;
    let (a, mut expected) = trips_csv(1, 1500);
    let (b, rows_b) = trips_csv(2, 1500);
    let (c, rows_c) = trips_csv(3, 3000);
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
    assert_eq!(swept.datasets["trips"].rows, 1500 + 1500 / 97 + 1 + 40);
    assert!(swept.skipped_files.is_empty());

    // C, to both datasets: every stage killed at growing moments until each gets through;
    // transform and load run between the kills, on whatever the killed ingest left.
    lake.land("landing/trips/2018-05 c.csv", &c).await;
    lake.land("landing/trip_log/2018-05 c.csv", &c).await;
    let event = lake.notification(&[
        "landing/trips/2018-05 c.csv",
        "landing/trip_log/2018-05 c.csv",
    ]);
    let mut kills = 0;
    let mut after = Duration::from_millis(1);
    loop {
        let ingested = tokio::time::timeout(after, lake.ingest(event.clone())).await;
        let transformed = tokio::time::timeout(
            after,
            lake.transform(json!({"bucket": lake.raw.bucket(), "files": {}})),
        )
        .await;
        let loaded = tokio::time::timeout(after, lake.load()).await;
        if ingested.is_ok() && transformed.is_ok() && loaded.is_ok() {
            break;
        }
        kills += 1;
        after = after.mul_f64(1.6);
    }
    assert!(kills >= 5, "the stages were killed only {kills} times");
    // What the kills left, a round finishes; another finds nothing to do.
    lake.round(json!({"datasets": ["trips", "trip_log"]})).await;
    let last = lake.round(json!({"datasets": ["trips", "trip_log"]})).await;
    assert!(!last.has_new_data);
    // Every hand-off repeated, as a lost result or a duplicate delivery would: each file
    // queued again for transform and for the load. Nothing changes.
    for key in lake.raw.list_keys("trip", None).await.unwrap() {
        utils::cursor::mark_dataset_pending(&lake.raw, &key)
            .await
            .unwrap();
    }
    lake.transform(json!({"bucket": lake.raw.bucket(), "files": {}}))
        .await;
    let repeated = lake.load().await.unwrap();
    assert!(repeated.loaded.is_empty(), "{repeated:?}");
    assert_eq!(repeated.skipped_files.len(), 4, "{repeated:?}");

    let expected: BTreeSet<String> = expected.into_iter().collect();
    same_rows(
        "trips",
        lake.trips().await,
        expected.iter().cloned().collect(),
    );
    // The log holds every row of C once, its repeats too.
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
    let quarantined = lake.quarantined().await;
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
    let key = "landing/exports/orders/2024-11-14.jsonl.gz";
    lake.landing
        .put(key, Bytes::from(body), "application/gzip")
        .await
        .unwrap();

    // Ingest with a key service of its own, to count what KMS was asked.
    let keys = ingest::dataset::KmsKeys::new(kms.clone());
    let out = ingest::dataset::run(
        &lake.landing,
        &lake.raw,
        lake.datasets,
        ingest::dataset::Request::Keys(vec![key.to_owned()]),
        ingest::dataset::PartLimits::default(),
        utils::deadline::Deadline::NONE,
        Some(&keys),
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
    assert_eq!(found.len(), corrupt.len(), "{found:?}");
    for ((line, reason), (n, (_, expected))) in found.iter().zip(corrupt.iter().enumerate()) {
        assert_eq!(*line, first_corrupt_line + n as u64);
        assert!(
            reason.contains(expected),
            "line {line}: {reason:?}, expected {expected:?}"
        );
    }
}
