//! The ingest benchmark's worker: one measurement per process, so each peak RSS is its own.
//!
//!   bench copy   SOURCE_URL          raw `COPY (new-entries query) TO STDOUT (FORMAT binary)` of
//!                                    every table, bytes drained and discarded: the baseline
//!   bench ingest SOURCE_URL BUCKET   the ingest Lambda's work for every table, into S3
//!   bench transform RAW PROCESSED    the transform Lambda's work on the raw files of the one
//!                                    ingest run in bucket RAW, into bucket PROCESSED
//!   bench load PROCESSED WAREHOUSE   the load Lambda's work on the processed files of the one
//!                                    transform run in PROCESSED, into the empty WAREHOUSE (URL)
//!   bench copyin FROM TO DIR         the load's baseline: every table of warehouse FROM dumped
//!                                    to DIR with binary `COPY TO` (not timed), then the timed
//!                                    part, raw binary `COPY ... FROM STDIN` of those files
//!                                    into the empty warehouse TO, dimensions first
//!   bench copylimit FROM TO DIR      the load's physical limit: as copyin, into TO with its
//!                                    foreign keys dropped first (not timed), then one set-based
//!                                    check per key over the loaded rows (timed)
//!   bench gencsv PATH MB             a trips CSV (datasets/trips.json) of about MB megabytes,
//!                                    every row distinct (not timed)
//!   bench csvlocal CSV PARQUET       the dataset reader alone: the trips CSV file read, typed
//!                                    and written as Parquet, local file to local file (DuckDB's
//!                                    conditions)
//!   bench csvingest LANDING RAW KEY  ingest of the landed trips file KEY, from the landing
//!                                    bucket into RAW (S3 to S3)
//!   bench csvload RAW PROCESSED WAREHOUSE  the files ingest wrote published (not timed), then
//!                                    the load of them into the trips table of WAREHOUSE
//!   bench apiplain API DATASET       a plain client's first load of an API dataset
//!                                    (datasets/nyc_*.json) from the local SODA server at API:
//!                                    the same keyset pages ingest asks for, one after the
//!                                    other, each parsed as records and dropped: the pace the
//!                                    server serves them at
//!   bench apiingest API RAW DATASET  ingest's first load of the dataset from API into the
//!                                    bucket RAW: its ranges at the declared concurrency,
//!                                    typed, written as Parquet and committed
//!   bench apioffset API RAW DATASET  the same by the offset paginator (each page checked
//!                                    against the one before)
//!   bench apicsv API RAW DATASET     the same from CSV pages (the resource's .csv)
//!   bench invoke LAMBDA SECONDS      one invocation of that Lambda's handler, configured from
//!                                    the environment as in AWS, with the event on stdin and a
//!                                    deadline SECONDS from now (scripts/bench_backfill.py)
//!
//! Prints one JSON line: mode, rows, bytes, seconds, rows_per_s, peak_rss_mb, cpu_s (the
//! process's CPU time, user and system, from its start) (invoke: the Lambda's output, seconds,
//! deadline_seconds, peak_rss_mb). With `BENCH_LOG` set, the Lambdas' log lines go to
//! standard error.

use std::time::{Duration, Instant};

use futures_util::{StreamExt, pin_mut};
use serde_json::json;
use transform::event::{RawFile, Request, raw_data_key};
use utils::deadline::Deadline;
use utils::query::{Window, new_entries_copy};
use utils::store::S3Store;
use utils::tables::TABLES;
use utils::warehouse::WAREHOUSE_TABLES;

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb / 1024.0
}

/// The CPU time this process has used, user and system, in seconds (/proc/self/stat, in the
/// kernel's USER_HZ of 100 ticks a second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command's closing parenthesis; utime and stime are the 14th and 15th
    // of the line, the 12th and 13th after it.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("(comm)") + 2..]
        .split(' ')
        .collect();
    let ticks = |i: usize| fields[i].parse::<f64>().expect("a tick count");
    (ticks(11) + ticks(12)) / 100.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::var_os("BENCH_LOG").is_some() {
        utils::logging::init_tracing_stderr();
    }
    let args: Vec<String> = std::env::args().collect();
    let (mode, url) = match args.as_slice() {
        [_, mode, url, ..] => (mode.as_str(), url.as_str()),
        _ => panic!(
            "usage: bench copy|ingest SOURCE_URL [BUCKET] | bench transform RAW PROCESSED | \
             bench load PROCESSED WAREHOUSE | bench copyin FROM TO DIR"
        ),
    };
    if mode == "invoke" {
        let seconds: f64 = args
            .get(3)
            .and_then(|s| s.parse().ok())
            .expect("bench invoke LAMBDA SECONDS");
        return invoke(url, seconds).await;
    }
    let (rows, bytes, seconds) = match mode {
        "gencsv" => gen_csv(
            url,
            args.get(3)
                .and_then(|m| m.parse().ok())
                .expect("bench gencsv PATH MB"),
        ),
        "csvlocal" => csv_local(url, args.get(3).expect("bench csvlocal CSV PARQUET")),
        "csvingest" => {
            let [raw, key] = [3, 4].map(|i| args.get(i).expect("bench csvingest LANDING RAW KEY"));
            csv_ingest(url, raw, key).await
        }
        "csvload" => {
            let [processed, warehouse] =
                [3, 4].map(|i| args.get(i).expect("bench csvload RAW PROCESSED WAREHOUSE"));
            csv_load(url, processed, warehouse).await
        }
        "apiplain" => api_plain(url, args.get(3).expect("bench apiplain API DATASET")).await,
        "apiingest" | "apioffset" | "apicsv" => {
            let [raw, name] = [3, 4].map(|i| args.get(i).expect("bench apiingest API RAW DATASET"));
            api_ingest(url, raw, name, mode).await
        }
        "transform" => transform(url, args.get(3).expect("bench transform RAW PROCESSED")).await,
        "load" => load(url, args.get(3).expect("bench load PROCESSED WAREHOUSE")).await,
        "copyin" | "copylimit" => {
            let [to, dir] = [3, 4].map(|i| args.get(i).expect("bench copyin FROM TO DIR"));
            copy_in(url, to, dir, mode == "copylimit").await
        }
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
            "cpu_s": cpu_seconds(),
        })
    );
}

/// The trips declaration, as the Lambdas are built with it.
fn trips() -> datasets::Dataset {
    datasets::bundled(&utils::tables::reserved_names())
        .unwrap()
        .into_iter()
        .find(|d| d.name == "trips")
        .expect("datasets/trips.json")
}

/// Writes a trips CSV of about `mb` MB, every row distinct: rows, bytes.
fn gen_csv(path: &str, mb: u64) -> (u64, u64, Duration) {
    use std::io::Write;
    let started = Instant::now();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut rng = fastrand::Rng::with_seed(42);
    let regions = [
        ("Prague", 14.42, 50.08),
        ("Turin", 7.68, 45.07),
        ("Hamburg", 9.99, 53.55),
    ];
    let sources = [
        "funny_car",
        "baba_car",
        "cheap_mobile",
        "pt_search_app",
        "bad_diesel_vehicles",
    ];
    writeln!(
        out,
        "region,origin_coord,destination_coord,datetime,datasource"
    )
    .unwrap();
    let (mut rows, mut bytes) = (0u64, 0u64);
    while bytes < mb * 1_000_000 {
        let (region, lon, lat) = regions[rng.usize(..regions.len())];
        let c = |rng: &mut fastrand::Rng, v: f64| v + rng.f64() - 0.5;
        let line = format!(
            "{region},POINT ({} {}),POINT ({} {}),2018-{:02}-{:02} {:02}:{:02}:{:02},{}\n",
            c(&mut rng, lon),
            c(&mut rng, lat),
            c(&mut rng, lon),
            c(&mut rng, lat),
            1 + rng.u32(..12),
            1 + rng.u32(..28),
            rng.u32(..24),
            rng.u32(..60),
            rng.u32(..60),
            sources[rng.usize(..sources.len())],
        );
        out.write_all(line.as_bytes()).unwrap();
        rows += 1;
        bytes += line.len() as u64;
    }
    out.flush().unwrap();
    (rows, bytes, started.elapsed())
}

/// The dataset reader and a Parquet writer alone, local file to local file.
fn csv_local(csv: &str, parquet: &str) -> (u64, u64, Duration) {
    let dataset = trips();
    let started = Instant::now();
    let file = std::fs::File::open(csv).unwrap();
    let bytes = file.metadata().unwrap().len();
    let landed = datasets::LandedFile::open(file, &dataset, csv).unwrap();
    let schema = std::sync::Arc::new(dataset.schema());
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(parquet).unwrap(),
        schema,
        Some(utils::parquet_io::writer_properties(
            dataset.plain_columns().iter().map(String::as_str),
        )),
    )
    .unwrap();
    let mut rows = 0;
    // Typed on as many threads as ingest's default, encoded on this one.
    let workers = ingest::dataset::PartLimits::default().workers;
    landed.read_all(datasets::BatchLimits::default(), workers, |batch| {
        let batch = batch.unwrap();
        rows += batch.rows.num_rows() as u64;
        writer.write(&batch.rows).unwrap();
        std::ops::ControlFlow::Continue(())
    });
    writer.close().unwrap();
    (rows, bytes, started.elapsed())
}

/// The ingest of one landed trips file, S3 to S3.
async fn csv_ingest(landing: &str, raw: &str, key: &str) -> (u64, u64, Duration) {
    let sdk = utils::store::aws_config().await;
    let s3 = utils::store::s3_client(&sdk);
    let (landing, raw) = (S3Store::new(s3.clone(), landing), S3Store::new(s3, raw));
    let object = landing.head(key).await.unwrap().expect("the landed file");
    let started = Instant::now();
    let (record, _) = ingest::dataset::ingest_file(
        &landing,
        &raw,
        &trips(),
        &object,
        ingest::dataset::PartLimits::default(),
        None,
    )
    .await
    .unwrap();
    (record.rows, object.size, started.elapsed())
}

/// A declared API dataset.
fn api_dataset(name: &str) -> datasets::Dataset {
    datasets::bundled(&utils::tables::reserved_names())
        .unwrap()
        .into_iter()
        .find(|d| d.name == name && d.source.api.is_some())
        .unwrap_or_else(|| panic!("no API dataset {name}"))
}

/// Every record of the dataset's first window, by the keyset pages ingest asks for, one after
/// the other: records, bytes, time.
async fn api_plain(base: &str, name: &str) -> (u64, u64, Duration) {
    let dataset = api_dataset(name);
    let api = dataset.source.api.as_ref().unwrap();
    let token = std::env::var("BENCH_API_TOKEN").expect("BENCH_API_TOKEN");
    let client = reqwest::Client::new();
    let url = format!("{base}{}", api.resource);
    let upper = datasets::api::format_time(chrono::Utc::now());
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut after: Option<datasets::api::Position> = None;
    let started = Instant::now();
    loop {
        let query = api.page_query(&api.cursor.initial, &upper, after.as_ref());
        let body = client
            .get(&url)
            .query(&query)
            .header(&api.token.as_ref().unwrap().header, &token)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .bytes()
            .await
            .unwrap();
        bytes += body.len() as u64;
        let page: Vec<Box<serde_json::value::RawValue>> = serde_json::from_slice(&body).unwrap();
        records += page.len() as u64;
        let Some(last) = page.last() else { break };
        let last: serde_json::Value = serde_json::from_str(last.get()).unwrap();
        after = Some(datasets::api::Position {
            at: last[&api.cursor.field].as_str().unwrap().to_owned(),
            id: last[&api.cursor.id].as_str().unwrap().to_owned(),
        });
        if page.len() < api.page_size as usize {
            break;
        }
    }
    (records, bytes, started.elapsed())
}

/// Ingest's first load of the dataset into `raw`, as one invocation without a deadline runs
/// it, as declared (`apiingest`), by offset (`apioffset`) or from CSV pages (`apicsv`):
/// records, raw bytes written, time.
async fn api_ingest(base: &str, raw: &str, name: &str, mode: &str) -> (u64, u64, Duration) {
    let sdk = utils::store::aws_config().await;
    let s3 = utils::store::s3_client(&sdk);
    let raw_store = S3Store::new(s3.clone(), raw);
    let client = ingest::api::ApiClient::new(
        aws_sdk_secretsmanager::Client::new(&sdk),
        Some(base.to_owned()),
    );
    let mut dataset = api_dataset(name);
    let api = dataset.source.api.as_mut().unwrap();
    match mode {
        "apioffset" => api.paginator = datasets::api::Paginator::Offset,
        "apicsv" => {
            api.resource = api.resource.replace(".json", ".csv");
            dataset.source.format = datasets::decl::Format::Csv;
        }
        _ => {}
    }
    let declared = vec![dataset];
    let sources = ingest::dataset::Sources {
        landing: None,
        api: Some(&client),
        keys: None,
    };
    let started = Instant::now();
    let out = ingest::dataset::run(
        sources,
        &raw_store,
        &declared,
        ingest::dataset::Request::Sweep(vec![name.to_owned()]),
        ingest::dataset::PartLimits::default(),
        Deadline::NONE,
    )
    .await
    .unwrap();
    let elapsed = started.elapsed();
    assert!(out.complete, "{out:?}");
    let run = &out.datasets[name];
    let mut bytes = 0;
    for key in &run.files {
        bytes += object_size(&s3, raw, key).await;
    }
    (run.rows + run.quarantined, bytes, elapsed)
}

/// The load of the trips files ingest wrote in `raw`, into `warehouse`'s trips table.
async fn csv_load(raw: &str, processed: &str, warehouse: &str) -> (u64, u64, Duration) {
    let sdk = utils::store::aws_config().await;
    let s3 = utils::store::s3_client(&sdk);
    let (raw, store) = (
        S3Store::new(s3.clone(), raw),
        S3Store::new(s3.clone(), processed),
    );
    transform::publish::publish_datasets(&raw, &store, Deadline::NONE)
        .await
        .unwrap();
    let (mut rows, mut bytes) = (0, 0);
    for key in store.list_keys("trips/", None).await.unwrap() {
        bytes += object_size(&s3, processed, &key).await;
        rows += utils::parquet_io::open_parquet(&store, &key)
            .await
            .unwrap()
            .rows;
    }
    let declared: &'static [datasets::Dataset] = vec![trips()].leak();
    let mut client = totesys_tests::connect(warehouse).await;
    let started = Instant::now();
    let settings = load::Settings {
        deadline: Deadline::NONE,
        bulk: load::bulk::Bulk::new(bulk_min_rows()),
        lock_timeout: load::config::DEFAULT_LOCK_TIMEOUT,
        datasets: declared,
    };
    let request = load::event::Request::Files {
        bucket: processed.to_owned(),
        files: Vec::new(),
    };
    let out = load::run(&mut client, &store, request, settings)
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(out.loaded.get("trips").copied(), Some(rows));
    (rows, bytes, elapsed)
}

/// One invocation of `lambda`'s handler with the event on stdin and a deadline `seconds` away.
async fn invoke(lambda: &str, seconds: f64) {
    let event: serde_json::Value =
        serde_json::from_reader(std::io::stdin()).expect("an event on stdin");
    let deadline = std::time::SystemTime::now() + Duration::from_secs_f64(seconds);
    let mut context = lambda_runtime::Context::default();
    context.deadline = deadline
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let event = lambda_runtime::LambdaEvent::new(event, context);
    let sdk = utils::store::aws_config().await;
    let started = Instant::now();
    let output = match lambda {
        "ingest" => {
            let deps = ingest::Deps::new(ingest::Config::from_env().unwrap(), &sdk);
            serde_json::to_value(ingest::handler(event, &deps).await.unwrap())
        }
        "transform" => {
            let deps = transform::Deps::new(&transform::Config::from_env().unwrap(), &sdk);
            serde_json::to_value(transform::handler(event, &deps).await.unwrap())
        }
        "load" => {
            let deps = load::Deps::new(load::Config::from_env().unwrap(), &sdk);
            serde_json::to_value(load::handler(event, &deps).await.unwrap())
        }
        other => panic!("no Lambda {other}"),
    }
    .unwrap();
    println!(
        "{}",
        json!({
            "mode": "invoke",
            "lambda": lambda,
            "output": output,
            "seconds": started.elapsed().as_secs_f64(),
            "deadline_seconds": seconds,
            "ended_before_deadline": std::time::SystemTime::now() < deadline,
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
    let mut files = Vec::new();
    for key in raw.list_keys("", None).await.unwrap() {
        if let Some((table, window_end)) = raw_data_key(&key) {
            files.push(RawFile::new(table, key, window_end).unwrap());
        }
    }
    assert!(!files.is_empty(), "a raw file in the bucket");
    let request = Request::Files {
        bucket: raw.bucket().to_owned(),
        files,
    };
    let started = Instant::now();
    let out = transform::run(&raw, &processed, request, Deadline::NONE)
        .await
        .unwrap();
    let elapsed = started.elapsed();
    // Sizes by HEAD: reading the outputs back would count them in the peak RSS.
    let mut bytes = 0u64;
    for key in processed.list_keys("", None).await.unwrap() {
        bytes += object_size(&s3, processed.bucket(), &key).await;
    }
    let rows_in: u64 = {
        let mut n = 0;
        for key in raw.list_keys("", None).await.unwrap() {
            if raw_data_key(&key).is_some() {
                let file = utils::parquet_io::open_parquet(&raw, &key).await.unwrap();
                n += file.rows;
            }
        }
        n
    };
    assert!(out.has_new_data);
    (rows_in, bytes, elapsed)
}

/// Loads the processed files of the one transform run in `processed` into `warehouse`.
async fn load(processed: &str, warehouse: &str) -> (u64, u64, Duration) {
    let sdk = utils::store::aws_config().await;
    let s3 = utils::store::s3_client(&sdk);
    let store = S3Store::new(s3.clone(), processed);
    let mut files = Vec::new();
    let mut rows = 0;
    let mut bytes = 0;
    for key in store.list_keys("", None).await.unwrap() {
        if let Some((file, _)) = load::event::ProcessedFile::from_key(&key) {
            bytes += object_size(&s3, processed, &key).await;
            rows += utils::parquet_io::open_parquet(&store, &key)
                .await
                .unwrap()
                .rows;
            files.push(file);
        }
    }
    files.sort_by(|a, b| {
        (load::event::position(a.table), &a.key).cmp(&(load::event::position(b.table), &b.key))
    });
    let request = load::event::Request::Files {
        bucket: processed.to_owned(),
        files,
    };
    let mut client = totesys_tests::connect(warehouse).await;
    // A reader joining the fact table to a dimension in a loop while the load runs: its
    // longest query is what the load made a reader wait (plus the query's own time).
    // On a thread of its own, so that the load's decoding never delays its polls.
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let url = warehouse.to_owned();
    let reading = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let reader = totesys_tests::connect(&url).await;
            let (mut longest, mut queries) = (Duration::ZERO, 0u64);
            while stopped.try_recv().is_err() {
                let asked = Instant::now();
                reader
                    .query_one(
                        "SELECT count(*) FROM fact_sales_order f
                         JOIN dim_date d ON d.date_id = f.created_date",
                        &[],
                    )
                    .await
                    .unwrap();
                longest = longest.max(asked.elapsed());
                queries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (longest, queries)
        })
    });
    let started = Instant::now();
    let settings = load::Settings {
        deadline: Deadline::NONE,
        bulk: load::bulk::Bulk::new(bulk_min_rows()),
        lock_timeout: load::config::DEFAULT_LOCK_TIMEOUT,
        datasets: &[],
    };
    let out = load::run(&mut client, &store, request, settings)
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let _ = stop.send(());
    let (longest, queries) = reading.join().unwrap();
    println!(
        "{}",
        json!({"mode": "reader", "longest_seconds": longest.as_secs_f64(), "queries": queries})
    );
    // Every row is new to the empty warehouse, but for the dates: a window split into several
    // fact files has a dim_date file for each, and a date in two of them changes nothing the
    // second time.
    let mut in_warehouse = 0;
    for table in WAREHOUSE_TABLES {
        let count: i64 = client
            .query_one(&format!("SELECT count(*) FROM {}", table.name), &[])
            .await
            .unwrap()
            .get(0);
        in_warehouse += count as u64;
    }
    assert_eq!(out.loaded.values().sum::<u64>(), in_warehouse);
    (rows, bytes, elapsed)
}

/// Raw binary COPY FROM of what `from` holds into `to`, from files dumped beforehand; with
/// `limit`, into tables without foreign keys, then one anti-join per key.
async fn copy_in(from: &str, to: &str, dir: &str, limit: bool) -> (u64, u64, Duration) {
    use futures_util::SinkExt;
    use tokio::io::AsyncWriteExt;

    let source = totesys_tests::connect(from).await;
    let target = totesys_tests::connect(to).await;
    let mut rows = 0u64;
    let mut bytes = 0u64;
    let columns = |t: &utils::warehouse::WarehouseTable| {
        t.columns
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for table in WAREHOUSE_TABLES {
        let count: i64 = source
            .query_one(&format!("SELECT count(*) FROM {}", table.name), &[])
            .await
            .unwrap()
            .get(0);
        rows += count as u64;
        let mut file = tokio::fs::File::create(format!("{dir}/{}.bin", table.name))
            .await
            .unwrap();
        let stream = source
            .copy_out(&format!(
                "COPY {} ({}) TO STDOUT (FORMAT binary)",
                table.name,
                columns(table)
            ))
            .await
            .unwrap();
        pin_mut!(stream);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            bytes += chunk.len() as u64;
            file.write_all(&chunk).await.unwrap();
        }
        file.flush().await.unwrap();
    }
    // (table, column, referenced table, referenced column) of every single-column key.
    let mut keys: Vec<(String, String, String, String)> = Vec::new();
    if limit {
        let found = target
            .query(
                "SELECT k.conrelid::regclass::text, a.attname::text, k.confrelid::regclass::text,
                        r.attname::text, k.conname::text
                 FROM pg_constraint k
                 JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
                 JOIN pg_attribute r ON r.attrelid = k.confrelid AND r.attnum = k.confkey[1]
                 WHERE k.contype = 'f' AND k.connamespace = 'public'::regnamespace",
                &[],
            )
            .await
            .unwrap();
        for row in found {
            let (table, name): (String, String) = (row.get(0), row.get(4));
            target
                .batch_execute(&format!("ALTER TABLE {table} DROP CONSTRAINT \"{name}\""))
                .await
                .unwrap();
            keys.push((table, row.get(1), row.get(2), row.get(3)));
        }
    }
    let started = Instant::now();
    for table in WAREHOUSE_TABLES {
        let sink = target
            .copy_in::<_, bytes::Bytes>(&format!(
                "COPY {} ({}) FROM STDIN (FORMAT binary)",
                table.name,
                columns(table)
            ))
            .await
            .unwrap();
        pin_mut!(sink);
        let file = tokio::fs::File::open(format!("{dir}/{}.bin", table.name))
            .await
            .unwrap();
        let mut chunks = file_chunks(file);
        while let Some(chunk) = chunks.next().await {
            sink.send(chunk).await.unwrap();
        }
        sink.close().await.unwrap();
    }
    for (table, column, references, referenced) in &keys {
        let orphans: i64 = target
            .query_one(
                &format!(
                    "SELECT count(*) FROM {table} f WHERE NOT EXISTS \
                     (SELECT 1 FROM {references} d WHERE d.{referenced} = f.{column})"
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(orphans, 0, "{table}.{column}");
    }
    (rows, bytes, started.elapsed())
}

/// A file as a stream of 64 KiB chunks.
fn file_chunks(file: tokio::fs::File) -> impl futures_util::Stream<Item = bytes::Bytes> + Unpin {
    use tokio::io::AsyncReadExt;
    Box::pin(futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 64 * 1024];
        let n = file.read(&mut buf).await.unwrap();
        (n > 0).then(|| {
            buf.truncate(n);
            (bytes::Bytes::from(buf), file)
        })
    }))
}

/// The raw COPY baseline or the ingest, from the source at `url`.
async fn source(mode: &str, url: &str, bucket: Option<&String>) -> (u64, u64, Duration) {
    let mut client = totesys_tests::connect(url).await;
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
            let tables = ingest::Tables {
                read: &tables,
                deployed: &tables,
            };
            let out = ingest::run(&mut client, &store, tables, Duration::ZERO, ingest_limits())
                .await
                .unwrap();
            let elapsed = started.elapsed();
            let mut bytes = 0u64;
            for key in out.files.values().flatten() {
                bytes += object_size(&s3, bucket, key).await;
            }
            (out.row_counts.values().sum(), bytes, elapsed)
        }
        other => panic!("unknown mode {other}"),
    }
}

/// `INGEST_MAX_ROWS_PER_FILE` as the Lambda reads it, or its default.
fn ingest_limits() -> ingest::Limits {
    ingest::Limits {
        max_rows_per_file: setting(
            "INGEST_MAX_ROWS_PER_FILE",
            ingest::config::DEFAULT_MAX_ROWS_PER_FILE,
        ),
        deadline: Deadline::NONE,
    }
}

/// `LOAD_BULK_MIN_ROWS` as the Lambda reads it, or its default.
fn bulk_min_rows() -> u64 {
    setting("LOAD_BULK_MIN_ROWS", load::bulk::DEFAULT_MIN_ROWS)
}

/// A whole-number setting from the environment, or `default`.
fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} is {v:?}: expected a number"))
    })
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
