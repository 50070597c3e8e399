//! The `etl` binary as a person or a script meets it: exit codes, messages, the confirmation.
//! Against buckets on the local S3 API (run through `make test`).

use std::process::{Command, Output, Stdio};

use chrono::{TimeZone, Utc};
use totesys_tests::bucket;
use utils::store::S3Store;
use utils::watermark::{read_state, record_ingest};

struct Buckets {
    raw: S3Store,
    processed: S3Store,
}

impl Buckets {
    async fn new() -> Self {
        Buckets {
            raw: bucket().await,
            processed: bucket().await,
        }
    }

    /// Runs `etl args` with these buckets and no database; `stdin` closed (not a terminal).
    fn etl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_etl"))
            .args(args)
            .env("INGEST_BUCKET", self.raw.bucket())
            .env("PROCESSED_BUCKET", self.processed.bucket())
            .env_remove("SOURCE_DB_URL")
            .env_remove("SOURCE_DB_SECRET_ID")
            .env_remove("WAREHOUSE_DB_URL")
            .env_remove("WAREHOUSE_DB_SECRET_ID")
            .stdin(Stdio::null())
            .output()
            .expect("the etl binary runs")
    }
}

/// Where `table`'s next window starts, as its state object says.
async fn watermark(raw: &S3Store, table: &str) -> chrono::DateTime<Utc> {
    read_state(raw, table).await.unwrap().unwrap().window_end
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn status_exits_2_while_a_table_is_behind_and_0_once_none_is() {
    let b = Buckets::new().await;
    let out = b.etl(&["status"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("never ingested"), "{stdout}");
    assert!(
        stdout.contains("source: not reached (not configured"),
        "{stdout}"
    );

    // Every table with a recent watermark: none behind.
    let now = Utc::now();
    for t in utils::tables::TABLES {
        record_ingest(&b.raw, t.name, now, None, 0, true)
            .await
            .unwrap();
    }
    let out = b.etl(&["status", "--json", "--max-lag", "1h"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["behind"], serde_json::json!([]));
    assert_eq!(json["tables"].as_array().unwrap().len(), 11);
    // ... but older than a zero lag allows.
    assert_eq!(b.etl(&["status", "--max-lag", "0s"]).status.code(), Some(2));
}

#[tokio::test]
async fn mistakes_are_usage_errors_that_say_what_is_expected() {
    let b = Buckets::new().await;
    let out = b.etl(&["status", "--max-lag", "soon"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("--max-lag"),
        "{}",
        text(&out.stderr)
    );

    let out = b.etl(&["replay", "--table", "staf", "--since", "2024-01-01"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("\"staf\" is not a source table"),
        "{}",
        text(&out.stderr)
    );

    let out = b.etl(&["replay", "--all", "--since", "last week"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("\"last week\" is not a time"),
        "{}",
        text(&out.stderr)
    );

    let out = b.etl(&[
        "quarantine",
        "show",
        "fact_payment/2024/11/14/093005123456.parquet",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not a quarantine file"),
        "{}",
        text(&out.stderr)
    );

    let out = Command::new(env!("CARGO_BIN_EXE_etl"))
        .arg("status")
        .env_remove("INGEST_BUCKET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("INGEST_BUCKET is not set"),
        "{}",
        text(&out.stderr)
    );

    assert_eq!(b.etl(&["--help"]).status.code(), Some(0));
}

#[tokio::test]
async fn a_replay_asks_first_and_a_dry_run_writes_nothing() {
    let b = Buckets::new().await;
    let end = Utc.with_ymd_and_hms(2024, 11, 14, 9, 30, 0).unwrap();
    record_ingest(&b.raw, "staff", end, None, 0, true)
        .await
        .unwrap();
    let args = ["replay", "--table", "staff", "--since", "2024-11-01"];

    let out = b.etl(&[&args[..], &["--dry-run"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("nothing is written"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(watermark(&b.raw, "staff").await, end);

    // No terminal to ask on, no --yes: nothing changes.
    let out = b.etl(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("pass --yes"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(watermark(&b.raw, "staff").await, end);

    let out = b.etl(&[&args[..], &["--yes"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("moved back"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        watermark(&b.raw, "staff").await,
        Utc.with_ymd_and_hms(2024, 11, 1, 0, 0, 0).unwrap()
    );
}

/// A trips file of good rows, a bad value, a short record and a row twice over.
const TRIPS: &str = "region,origin_coord,destination_coord,datetime,datasource
Prague,POINT (14.49 50.07),POINT (14.66 50.03),2018-05-28 09:03:40,funny_car
Turin,POINT (7.67 45.06),POINT (7.53 45.04),2018-05-21 02:54:04,cheap_mobile
Turin,POINT (7.67 45.06),POINT (7.53 45.04),21/05/2018,cheap_mobile
Hamburg,POINT (9.99 53.55)
Prague,POINT (14.49 50.07),POINT (14.66 50.03),2018-05-28 09:03:40,funny_car
";

#[test]
fn dataset_check_types_good_rows_names_bad_ones_and_writes_the_parquet() {
    let dir = std::env::temp_dir().join(totesys_tests::unique_name("dataset-check"));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("trips.csv");
    std::fs::write(&csv, TRIPS).unwrap();
    let declaration = concat!(env!("CARGO_MANIFEST_DIR"), "/../../datasets/trips.json");
    let parquet = dir.join("trips.parquet");
    let check = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_etl"))
            .args(["dataset", "check", "--declaration", declaration])
            .arg(&csv)
            .args(extra)
            .output()
            .unwrap()
    };

    let out = check(&["--parquet", parquet.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("trips.csv: 3 rows typed, 2 quarantined (dataset trips)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "line 4, column datetime: not a timestamp in any of the formats \
             [\"%Y-%m-%d %H:%M:%S\"]: \"21/05/2018\""
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("line 5: 2 fields, expected 5: \"Hamburg,POINT (9.99 53.55)\""),
        "{stdout}"
    );

    // The typed rows as the raw zone would hold them: declared types and metadata.
    let file = std::fs::File::open(&parquet).unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let schema = reader.schema().clone();
    let rows: usize = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 3);
    assert_eq!(schema.metadata()["licence"], "Internal use");
    let datetime = schema.field_with_name("datetime").unwrap();
    assert_eq!(
        datetime.data_type(),
        &arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None)
    );
    assert!(datetime.metadata()["description"].starts_with("When the trip started"));

    let json: serde_json::Value = serde_json::from_slice(&check(&["--json"]).stdout).unwrap();
    assert_eq!(json["rows"], 3);
    assert_eq!(json["quarantined"][0]["column"], "datetime");

    // A file whose header breaks the declaration: exit 1, the column named, no Parquet left.
    std::fs::remove_file(&parquet).unwrap();
    std::fs::write(
        &csv,
        "region,origin_coord,destination_coord,datetime,source\n",
    )
    .unwrap();
    let out = check(&["--parquet", parquet.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("column \"source\": in the file but not declared"),
        "{}",
        text(&out.stderr)
    );
    assert!(!parquet.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
