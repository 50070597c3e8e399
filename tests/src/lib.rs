//! Support for the integration tests: a fresh source database and a fresh bucket per test, on
//! the real PostgreSQL server and S3 API that `scripts/env.sh` provides.

pub mod chaos;
pub mod expected;
pub mod pipeline;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use arrow::array::{
    Array, BooleanArray, Decimal128Array, Int32Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use tokio_postgres::{Client, NoTls};
use utils::parquet_io::{ParquetContents, read_parquet};
use utils::store::S3Store;
use utils::tables::{PgType, TableSpec, quote_ident};

pub const OLTP_SCHEMA: &str = include_str!("../fixtures/oltp_schema.sql");
pub const SEED: &str = include_str!("../fixtures/seed.sql");
/// The star schema, as the project ships it for tests and the demo.
pub const WAREHOUSE_SCHEMA: &str = include_str!("../../sql/warehouse_schema.sql");
/// The materialized views answering the brief, applied after the star schema.
pub const WAREHOUSE_VIEWS: &str = include_str!("../../sql/warehouse_views.sql");

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through `make test` (scripts/env.sh)")
    })
}

/// The admin URL of the test server.
pub fn server_url() -> String {
    required_env("TEST_DATABASE_URL")
}

/// `server_url()` with another database name.
pub fn url_for(database: &str) -> String {
    let url = server_url();
    let (url, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    let authority = url
        .find("://")
        .expect("TEST_DATABASE_URL is a postgres:// URL")
        + 3;
    let base = match url[authority..].find('/') {
        Some(i) => &url[..authority + i],
        None => url,
    };
    match query {
        "" => format!("{base}/{database}"),
        q => format!("{base}/{database}?{q}"),
    }
}

pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test server: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique lower-case name for this process and call.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh database, dropped (with any sessions still in it) when this value drops, even when
/// the test panics.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// An empty database.
    pub async fn empty() -> Self {
        let name = unique_name("totesys_t").replace('-', "_");
        let admin = connect(&server_url()).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&name)))
            .await
            .expect("create test database");
        TestDb {
            url: url_for(&name),
            name,
        }
    }

    /// A database with the ToteSys OLTP schema, and the seed data if `seed`.
    pub async fn source(seed: bool) -> Self {
        let db = Self::empty().await;
        let client = db.client().await;
        client
            .batch_execute(OLTP_SCHEMA)
            .await
            .expect("apply schema");
        if seed {
            client.batch_execute(SEED).await.expect("seed");
        }
        db
    }

    /// A database with the warehouse's star schema, empty.
    pub async fn warehouse() -> Self {
        let db = Self::empty().await;
        db.client()
            .await
            .batch_execute(WAREHOUSE_SCHEMA)
            .await
            .expect("apply the warehouse schema");
        db
    }

    /// [`TestDb::warehouse`] with the project's materialized views.
    pub async fn warehouse_with_views() -> Self {
        let db = Self::warehouse().await;
        db.client()
            .await
            .batch_execute(WAREHOUSE_VIEWS)
            .await
            .expect("apply the warehouse views");
        db
    }

    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any async context we could await in, so use a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let admin = connect(&server_url()).await;
                let _ = admin
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        quote_ident(&name)
                    ))
                    .await;
            });
        })
        .join();
    }
}

pub async fn sdk_config() -> aws_config::SdkConfig {
    required_env("AWS_ENDPOINT_URL");
    utils::store::aws_config().await
}

/// A fresh, empty bucket on the local S3 API.
pub async fn bucket() -> S3Store {
    let sdk = sdk_config().await;
    let client = utils::store::s3_client(&sdk);
    let name = unique_name("raw");
    client
        .create_bucket()
        .bucket(&name)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest2)
                .build(),
        )
        .send()
        .await
        .expect("create bucket");
    S3Store::new(client, name)
}

/// Every key in the bucket.
pub async fn all_keys(store: &S3Store) -> Vec<String> {
    store.list_keys("", None).await.expect("list bucket")
}

pub async fn read_object(store: &S3Store, key: &str) -> ParquetContents {
    let bytes = store
        .get(key)
        .await
        .expect("get object")
        .unwrap_or_else(|| panic!("no object at {key}"));
    read_parquet(bytes).expect("a valid Parquet file")
}

/// A value compared between the source and the raw zone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cell {
    Null,
    Int(i64),
    /// Hundredths.
    Money(i128),
    /// Milliseconds since the epoch.
    Millis(i64),
    Text(String),
    Bool(bool),
}

/// The source's rows of `table` (optionally filtered by a SQL condition), read through a plain
/// text-protocol-free query that converts values in SQL rather than through the COPY decoder:
/// money as hundredths, timestamps as epoch milliseconds, enums as text. Sorted.
pub async fn source_rows(client: &Client, table: &TableSpec, filter: &str) -> Vec<Vec<Cell>> {
    let select: Vec<String> = table
        .columns
        .iter()
        .map(|c| {
            let col = quote_ident(c.name);
            match c.pg_type {
                PgType::Int4 => format!("{col}::int8"),
                PgType::Money => format!("({col} * 100)::int8"),
                PgType::Timestamp3 => {
                    format!("(extract(epoch FROM {col}) * 1000)::int8")
                }
                PgType::Text | PgType::Varchar(_) | PgType::Enum(_) => format!("{col}::text"),
                PgType::Bool => col,
            }
        })
        .collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {filter}",
        select.join(", "),
        quote_ident(table.name)
    );
    let rows = client.query(&sql, &[]).await.expect("query source");
    let mut out: Vec<Vec<Cell>> = rows
        .iter()
        .map(|row| {
            table
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| match c.pg_type {
                    PgType::Int4 => row.get::<_, Option<i64>>(i).map_or(Cell::Null, Cell::Int),
                    PgType::Money => row
                        .get::<_, Option<i64>>(i)
                        .map_or(Cell::Null, |v| Cell::Money(v.into())),
                    PgType::Timestamp3 => row
                        .get::<_, Option<i64>>(i)
                        .map_or(Cell::Null, Cell::Millis),
                    PgType::Text | PgType::Varchar(_) | PgType::Enum(_) => row
                        .get::<_, Option<String>>(i)
                        .map_or(Cell::Null, Cell::Text),
                    PgType::Bool => row.get::<_, Option<bool>>(i).map_or(Cell::Null, Cell::Bool),
                })
                .collect()
        })
        .collect();
    out.sort();
    out
}

/// The rows of raw-zone record batches, decoded per the registry's types. Sorted.
pub fn parquet_rows(table: &TableSpec, batches: &[RecordBatch]) -> Vec<Vec<Cell>> {
    let mut out = Vec::new();
    for batch in batches {
        assert_eq!(
            batch.num_columns(),
            table.columns.len(),
            "{table}: column count"
        );
        for row in 0..batch.num_rows() {
            let cells = table
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let array = batch.column(i);
                    if array.is_null(row) {
                        return Cell::Null;
                    }
                    let any = array.as_any();
                    match c.pg_type {
                        PgType::Int4 => Cell::Int(
                            any.downcast_ref::<Int32Array>()
                                .expect("Int32")
                                .value(row)
                                .into(),
                        ),
                        PgType::Money => Cell::Money(
                            any.downcast_ref::<Decimal128Array>()
                                .expect("Decimal128")
                                .value(row),
                        ),
                        PgType::Timestamp3 => Cell::Millis(
                            any.downcast_ref::<TimestampMillisecondArray>()
                                .expect("Timestamp(ms)")
                                .value(row),
                        ),
                        PgType::Text | PgType::Varchar(_) | PgType::Enum(_) => Cell::Text(
                            any.downcast_ref::<StringArray>()
                                .expect("Utf8")
                                .value(row)
                                .to_owned(),
                        ),
                        PgType::Bool => Cell::Bool(
                            any.downcast_ref::<BooleanArray>()
                                .expect("Boolean")
                                .value(row),
                        ),
                    }
                })
                .collect();
            out.push(cells);
        }
    }
    out.sort();
    out
}

/// SQL for "the current UTC wall time at millisecond precision", the way the application
/// stamps `last_updated`.
pub const NOW_MS: &str = "(clock_timestamp() AT TIME ZONE 'UTC')::timestamp(3)";

/// Sleeps long enough for the database clock to move past any millisecond already stamped.
pub async fn tick() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

/// The one key of a table's file list (a window of fewer rows than a file holds is one file).
pub fn only(keys: &[String]) -> &str {
    match keys {
        [key] => key,
        _ => panic!("expected one file, got {keys:?}"),
    }
}

/// An invocation context whose deadline is a minute away: with a margin over a minute, every
/// invocation is past its margin from the start and does one unit of work.
pub fn context_at_deadline() -> lambda_runtime::Context {
    let mut context = lambda_runtime::Context::default();
    let deadline = std::time::SystemTime::now() + Duration::from_secs(60);
    context.deadline = deadline
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    context
}

/// A margin past [`context_at_deadline`]'s deadline.
pub const PAST_MARGIN: Duration = Duration::from_secs(120);
