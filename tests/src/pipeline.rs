//! The pipeline's first two stages over a test source database and two test buckets, and
//! reading what they write.

use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, Time64MicrosecondArray};
use arrow::datatypes::{DataType, Schema, TimeUnit, TimestampMillisecondType};
use arrow::util::display::array_value_to_string;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use tokio_postgres::Client;
use transform::{Deps, Output, handler};
use utils::db::{Connector, DbSource};
use utils::store::S3Store;
use utils::warehouse::warehouse_table;

use crate::expected::{FactVersions, assert_star_schema, record_versions, warehouse_rows};
use crate::{TestDb, bucket, read_object, sdk_config, tick};

/// A source database, its raw bucket and a processed bucket.
pub struct Pipeline {
    pub db: TestDb,
    pub raw: S3Store,
    pub processed: S3Store,
}

impl Pipeline {
    pub async fn new(seed: bool) -> Self {
        Pipeline {
            db: TestDb::source(seed).await,
            raw: bucket().await,
            processed: bucket().await,
        }
    }

    pub async fn source(&self) -> Client {
        self.db.client().await
    }

    pub fn deps(&self) -> Deps {
        Deps {
            raw: self.raw.clone(),
            processed: self.processed.clone(),
            deadline_margin: utils::deadline::DEFAULT_MARGIN,
        }
    }

    /// The ingest Lambda's dependencies over this source and raw bucket, no safety lag.
    pub async fn ingest_deps(&self) -> ingest::Deps {
        let sdk = sdk_config().await;
        let source = DbSource::Url(self.db.url.clone());
        ingest::Deps {
            db: Connector::new(source.clone(), aws_sdk_secretsmanager::Client::new(&sdk)),
            config: ingest::Config {
                source,
                bucket: self.raw.bucket().to_owned(),
                safety_lag: Duration::ZERO,
                max_rows_per_file: ingest::config::DEFAULT_MAX_ROWS_PER_FILE,
                deadline_margin: utils::deadline::DEFAULT_MARGIN,
                tables: utils::tables::TABLES.iter().collect(),
                landing_bucket: None,
                api_base_url: None,
                datasets: Vec::new(),
            },
            store: self.raw.clone(),
            landing: None,
            kms: aws_sdk_kms::Client::new(&sdk),
            api: ingest::api::ApiClient::new(aws_sdk_secretsmanager::Client::new(&sdk), None),
        }
    }

    /// Runs the real ingest Lambda over every table; its output, as Step Functions passes it.
    pub async fn ingest(&self) -> Value {
        tick().await;
        let out = ingest::handler(
            LambdaEvent::new(json!({}), Context::default()),
            &self.ingest_deps().await,
        )
        .await
        .expect("ingest");
        serde_json::to_value(out).unwrap()
    }

    pub async fn transform(&self, event: Value) -> Result<Output, transform::Error> {
        handler(LambdaEvent::new(event, Context::default()), &self.deps()).await
    }

    /// The rows of the files `out` lists for `table`, in file order.
    pub async fn output_rows(&self, out: &Output, table: &str) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        for key in &out.files[table] {
            rows.extend(file_rows(&self.processed, table, key).await);
        }
        rows
    }

    /// Ingest then transform.
    pub async fn round(&self) -> Output {
        let event = self.ingest().await;
        self.transform(event).await.expect("transform")
    }
}

/// A seeded source, its buckets and a warehouse: the whole pipeline.
pub struct Setup {
    pub p: Pipeline,
    pub wh: TestDb,
}

impl Setup {
    pub async fn new() -> Self {
        Setup {
            p: Pipeline::new(true).await,
            wh: TestDb::warehouse().await,
        }
    }

    /// The real load Lambda over this warehouse; its output.
    pub async fn load(&self, event: Value) -> load::Output {
        let deps = load_deps(
            &self.p.processed,
            &self.wh.url,
            load::bulk::DEFAULT_MIN_ROWS,
        )
        .await;
        load::handler(LambdaEvent::new(event, Context::default()), &deps)
            .await
            .expect("load")
    }

    /// What `etl` reaches with this setup's settings; `dbs` false: no database configured.
    pub async fn etl(&self, dbs: bool, lock_table: Option<&str>) -> etl::Pipeline {
        let config = etl::Config {
            ingest_bucket: self.p.raw.bucket().to_owned(),
            processed_bucket: self.p.processed.bucket().to_owned(),
            source: dbs.then(|| DbSource::Url(self.p.db.url.clone())),
            warehouse: dbs.then(|| DbSource::Url(self.wh.url.clone())),
            lock_table: lock_table.map(str::to_owned),
            landing_bucket: None,
        };
        etl::Pipeline::new(&config, &sdk_config().await)
    }

    /// The warehouse against the source: `facts` gains the source's current fact versions
    /// first.
    pub async fn assert_exact(&self, facts: &mut FactVersions, when: &str) {
        let source = self.p.source().await;
        record_versions(&source, facts).await;
        let tables = warehouse_rows(&self.wh.client().await).await;
        assert_star_schema(&source, &tables, facts, when).await;
    }
}

/// The load Lambda's dependencies: the processed bucket `processed`, the warehouse at `url`,
/// the bulk path from `bulk_min_rows` rows.
pub async fn load_deps(processed: &S3Store, url: &str, bulk_min_rows: u64) -> load::Deps {
    let warehouse = DbSource::Url(url.to_owned());
    load::Deps {
        db: Connector::new(
            warehouse.clone(),
            aws_sdk_secretsmanager::Client::new(&sdk_config().await),
        ),
        config: load::Config {
            warehouse,
            processed_bucket: processed.bucket().to_owned(),
            deadline_margin: utils::deadline::DEFAULT_MARGIN,
            bulk_min_rows,
            lock_timeout: load::config::DEFAULT_LOCK_TIMEOUT,
            datasets: &[],
        },
        store: processed.clone(),
    }
}

/// A value rendered as text: dates as YYYY-MM-DD, times as microseconds of the day, money
/// with two decimals, NULL as "NULL".
pub fn cell(array: &ArrayRef, row: usize) -> String {
    if array.is_null(row) {
        return "NULL".into();
    }
    match array.data_type() {
        DataType::Time64(_) => array
            .as_any()
            .downcast_ref::<Time64MicrosecondArray>()
            .expect("time")
            .value(row)
            .to_string(),
        // As PostgreSQL prints a timestamp: no `T`, no trailing zeros in the fraction.
        DataType::Timestamp(TimeUnit::Millisecond, None) => {
            let ms = array.as_primitive::<TimestampMillisecondType>().value(row);
            match chrono::DateTime::from_timestamp_millis(ms) {
                Some(at) => {
                    let fraction = format!(".{:03}", ms.rem_euclid(1000));
                    let fraction = fraction.trim_end_matches('0').trim_end_matches('.');
                    format!("{}{fraction}", at.format("%Y-%m-%d %H:%M:%S"))
                }
                None => array_value_to_string(array, row).unwrap(),
            }
        }
        _ => array_value_to_string(array, row).unwrap(),
    }
}

pub fn rows_of(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(move |r| b.columns().iter().map(|c| cell(c, r)).collect())
        })
        .collect()
}

/// `rows` of a dimension without its version columns (the source's `last_updated`, see
/// `WarehouseTable::version`), for expectations written out by hand; the comparisons with
/// the source in SQL check the versions.
pub fn unversioned(table: &str, rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    let table = warehouse_table(table).unwrap();
    let kept: Vec<usize> = (0..table.columns.len())
        .filter(|&i| !table.version().any(|v| v.name == table.columns[i].name))
        .collect();
    rows.into_iter()
        .map(|row| kept.iter().map(|&i| row[i].clone()).collect())
        .collect()
}

pub fn strings(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| r.iter().map(|s| s.to_string()).collect())
        .collect()
}

/// The rows of one processed file, checking it has the warehouse table's schema.
pub async fn file_rows(store: &S3Store, table: &str, key: &str) -> Vec<Vec<String>> {
    let file = read_object(store, key).await;
    let expected = warehouse_table(table).unwrap().arrow_schema();
    let types = |s: &Schema| -> Vec<(String, DataType, bool)> {
        s.fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
            .collect()
    };
    assert_eq!(types(&file.schema), types(&expected), "{key}");
    rows_of(&file.batches)
}
