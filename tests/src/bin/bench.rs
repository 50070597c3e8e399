//! The ingest benchmark's worker: one measurement per process, so each peak RSS is its own.
//!
//!   bench copy   SOURCE_URL          raw `COPY (new-entries query) TO STDOUT (FORMAT binary)` of
//!                                    every table, bytes drained and discarded: the baseline
//!   bench ingest SOURCE_URL BUCKET   the ingest Lambda's work for every table, into S3
//!   bench transform RAW PROCESSED    the transform Lambda's work on the raw files of the one
//!                                    ingest run in bucket RAW, into bucket PROCESSED
//!
//! Prints one JSON line: mode, rows, bytes, seconds, rows_per_s, peak_rss_mb.

use std::time::{Duration, Instant};

use futures_util::{StreamExt, pin_mut};
use serde_json::json;
use transform::event::{RawFile, Request};
use utils::query::{Window, new_entries_copy};
use utils::store::S3Store;
use utils::tables::TABLES;

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb / 1024.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, url) = match args.as_slice() {
        [_, mode, url, ..] => (mode.as_str(), url.as_str()),
        _ => panic!("usage: bench copy|ingest SOURCE_URL [BUCKET] | bench transform RAW PROCESSED"),
    };
    let (rows, bytes, seconds) = match mode {
        "transform" => transform(url, args.get(3).expect("bench transform RAW PROCESSED")).await,
        _ => source(mode, url, args.get(3)).await,
    };
    let seconds = seconds.as_secs_f64();
    println!(
        "{}",
        json!({
            "mode": mode,
            "rows": rows,
            "bytes": bytes,
            "seconds": seconds,
            "rows_per_s": rows as f64 / seconds,
            "peak_rss_mb": peak_rss_mb(),
        })
    );
}

/// Transforms the raw files of the one ingest run in `raw`: rows read, bytes written, time.
async fn transform(raw: &str, processed: &str) -> (u64, u64, Duration) {
    let sdk = utils::store::aws_config().await;
    let s3 = utils::store::s3_client(&sdk);
    let raw = S3Store::new(s3.clone(), raw);
    let processed = S3Store::new(s3.clone(), processed);
    let window_end = raw
        .list_keys("", None)
        .await
        .unwrap()
        .iter()
        .find_map(|k| RawFile::from_key(k))
        .expect("a raw file in the bucket")
        .window_end;
    let files = transform::window_files(&raw, window_end).await.unwrap();
    let request = Request::Files {
        bucket: raw.bucket().to_owned(),
        files,
    };
    let started = Instant::now();
    let out = transform::run(&raw, &processed, request).await.unwrap();
    let elapsed = started.elapsed();
    // Sizes by HEAD: reading the outputs back would count them in the peak RSS.
    let mut bytes = 0u64;
    for key in processed.list_keys("", None).await.unwrap() {
        bytes += object_size(&s3, processed.bucket(), &key).await;
    }
    let rows_in: u64 = {
        let mut n = 0;
        for key in raw.list_keys("", None).await.unwrap() {
            if RawFile::from_key(&key).is_some() {
                let file = utils::parquet_io::open_parquet(&raw, &key).await.unwrap();
                n += file.rows;
            }
        }
        n
    };
    assert!(out.has_new_data);
    (rows_in, bytes, elapsed)
}

/// The raw COPY baseline or the ingest, from the source at `url`.
async fn source(mode: &str, url: &str, bucket: Option<&String>) -> (u64, u64, Duration) {
    let client = totesys_tests::connect(url).await;
    match mode {
        "copy" => {
            // Rows are counted before the clock starts: the baseline times the COPY alone.
            let mut rows = 0u64;
            for table in TABLES {
                let count: i64 = client
                    .query_one(&format!("SELECT count(*) FROM \"{}\"", table.name), &[])
                    .await
                    .unwrap()
                    .get(0);
                rows += count as u64;
            }
            let started = Instant::now();
            let end = ingest::window_end(&client, Duration::ZERO).await.unwrap();
            let mut bytes = 0u64;
            for table in TABLES {
                let window = Window { start: None, end };
                let stream = client
                    .copy_out(&new_entries_copy(table, &window))
                    .await
                    .unwrap();
                pin_mut!(stream);
                while let Some(chunk) = stream.next().await {
                    bytes += chunk.unwrap().len() as u64;
                }
            }
            (rows, bytes, started.elapsed())
        }
        "ingest" => {
            let bucket = bucket.expect("bench ingest SOURCE_URL BUCKET");
            let sdk = utils::store::aws_config().await;
            let s3 = utils::store::s3_client(&sdk);
            let store = utils::store::S3Store::new(s3.clone(), bucket.clone());
            let tables: Vec<_> = TABLES.iter().collect();
            let started = Instant::now();
            let out = ingest::run(&client, &store, &tables, Duration::ZERO)
                .await
                .unwrap();
            let elapsed = started.elapsed();
            let mut bytes = 0u64;
            for key in out.files.values() {
                bytes += object_size(&s3, bucket, key).await;
            }
            (out.row_counts.values().sum(), bytes, elapsed)
        }
        other => panic!("unknown mode {other}"),
    }
}

async fn object_size(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> u64 {
    let head = s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    head.content_length().unwrap_or(0) as u64
}
