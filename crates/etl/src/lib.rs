//! `etl`: the pipeline's state from a shell, and the operations that change it safely.
//!
//! It reads the configuration the Lambdas read (the buckets, the databases' secrets or URLs,
//! `AWS_ENDPOINT_URL` for a local S3 API) and reaches the same places: the raw zone's
//! watermarks and files, the processed zone, the warehouse's load ledger, the source. A
//! database it cannot reach is reported, not fatal, where the command can do without it.

pub mod dataset;
pub mod lock;
pub mod quarantine;
pub mod replay;
pub mod snapshots;
pub mod status;
pub mod text;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use tokio_postgres::Client;
use utils::db::{Connector, DbSource};
use utils::store::S3Store;

/// Why a command failed. Every message names what it was doing and with which object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Shared {
        what: String,
        #[source]
        source: utils::Error,
    },
    #[error("{what}: {source}")]
    Transform {
        what: String,
        #[source]
        source: Box<transform::Error>,
    },
    #[error(
        "the pipeline's lock (DynamoDB table {table}) is held by {}: a run is in progress; \
         nothing was changed, try again when it has ended",
        owner.as_deref().unwrap_or("another holder")
    )]
    Locked {
        table: String,
        owner: Option<String>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds what was being done to an error from the shared crates.
pub trait Context<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, utils::Error> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Shared {
            what: what(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, transform::Error> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Transform {
            what: what(),
            source: Box::new(source),
        })
    }
}

/// The settings `etl` shares with the Lambdas, read from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `INGEST_BUCKET`: the raw zone and the watermarks.
    pub ingest_bucket: String,
    /// `PROCESSED_BUCKET`: the star schema files, quarantine, transform's snapshots.
    pub processed_bucket: String,
    /// `SOURCE_DB_SECRET_ID` or `SOURCE_DB_URL`, if set: for the freshness lag.
    pub source: Option<DbSource>,
    /// `WAREHOUSE_DB_SECRET_ID` or `WAREHOUSE_DB_URL`, if set: for the load ledger.
    pub warehouse: Option<DbSource>,
    /// `PIPELINE_LOCK_TABLE` (Terraform's output `lock_table`), if set: the commands that move
    /// the pipeline's state take its lock.
    pub lock_table: Option<String>,
    /// `LANDING_BUCKET`, if set: where the declared datasets' files land, for `status`.
    pub landing_bucket: Option<String>,
}

impl Config {
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let bucket = |name: &str| {
            env(name).filter(|b| !b.trim().is_empty()).ok_or_else(|| {
                Error::Usage(format!(
                    "{name} is not set: etl reads the Lambdas' settings from the environment \
                     (INGEST_BUCKET, PROCESSED_BUCKET, SOURCE_DB_SECRET_ID or SOURCE_DB_URL, \
                     WAREHOUSE_DB_SECRET_ID or WAREHOUSE_DB_URL)"
                ))
            })
        };
        Ok(Config {
            ingest_bucket: bucket("INGEST_BUCKET")?,
            processed_bucket: bucket("PROCESSED_BUCKET")?,
            source: DbSource::from_env(&env, "SOURCE_DB_SECRET_ID", "SOURCE_DB_URL").ok(),
            warehouse: DbSource::from_env(&env, "WAREHOUSE_DB_SECRET_ID", "WAREHOUSE_DB_URL").ok(),
            lock_table: env("PIPELINE_LOCK_TABLE").filter(|t| !t.trim().is_empty()),
            landing_bucket: env("LANDING_BUCKET").filter(|b| !b.trim().is_empty()),
        })
    }
}

/// Every key under `prefix` in `store`, in order; a failure names the listing.
pub(crate) async fn list(store: &S3Store, prefix: &str) -> Result<Vec<String>> {
    store
        .list_keys(prefix, None)
        .await
        .doing(|| format!("listing s3://{}/{prefix}", store.bucket()))
}

/// What the commands reach: both buckets and, where configured, the two databases.
pub struct Pipeline {
    pub raw: S3Store,
    pub processed: S3Store,
    /// Where the declared datasets' files land, when configured.
    pub landing: Option<S3Store>,
    source: Option<Connector>,
    warehouse: Option<Connector>,
    lock: Option<lock::Lock>,
}

/// A database a command could not reach, and why.
pub type Reach = std::result::Result<Client, String>;

impl Pipeline {
    pub fn new(config: &Config, sdk: &aws_config::SdkConfig) -> Self {
        let s3 = utils::store::s3_client(sdk);
        let secrets = aws_sdk_secretsmanager::Client::new(sdk);
        let connector =
            |source: &Option<DbSource>| source.clone().map(|s| Connector::new(s, secrets.clone()));
        Pipeline {
            raw: S3Store::new(s3.clone(), config.ingest_bucket.clone()),
            landing: config
                .landing_bucket
                .as_ref()
                .map(|b| S3Store::new(s3.clone(), b.clone())),
            processed: S3Store::new(s3, config.processed_bucket.clone()),
            source: connector(&config.source),
            warehouse: connector(&config.warehouse),
            lock: config
                .lock_table
                .as_ref()
                .map(|table| lock::Lock::new(sdk, table)),
        }
    }

    /// Runs `work` holding the pipeline's lock for `command` (see [`lock`]), and releases it
    /// however the work ends. Without a lock table configured, warns and runs it as it is.
    pub async fn locked<T>(
        &self,
        command: &str,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let Some(lock) = &self.lock else {
            tracing::warn!(
                "PIPELINE_LOCK_TABLE is not set: {command} runs without the pipeline's lock; \
                 make sure no pipeline run is in progress"
            );
            return work.await;
        };
        let held = lock.acquire(command, chrono::Utc::now()).await?;
        let result = work.await;
        let released = held.release().await;
        let out = result?;
        released?;
        Ok(out)
    }

    /// The source database, or why not.
    pub async fn source(&self) -> Reach {
        connect(self.source.as_ref(), "SOURCE_DB_SECRET_ID or SOURCE_DB_URL").await
    }

    /// The warehouse, or why not.
    pub async fn warehouse(&self) -> Reach {
        connect(
            self.warehouse.as_ref(),
            "WAREHOUSE_DB_SECRET_ID or WAREHOUSE_DB_URL",
        )
        .await
    }
}

async fn connect(connector: Option<&Connector>, settings: &str) -> Reach {
    let Some(connector) = connector else {
        return Err(format!("not configured ({settings} is not set)"));
    };
    connector
        .connect("totesys-etl")
        .await
        .map_err(|e| e.to_string())
}

/// A time given on the command line: RFC 3339 (`2024-11-14T09:30:00Z`), or UTC
/// `2024-11-14 09:30:00[.ffffff]`, or a day, `2024-11-14` (its midnight, UTC).
pub fn parse_time_arg(text: &str) -> Result<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = utils::time::parse_time(text) {
        return Ok(t);
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    Err(Error::Usage(format!(
        "{text:?} is not a time: give 2024-11-14T09:30:00Z, 2024-11-14 09:30:00 (UTC) or \
         2024-11-14"
    )))
}

/// The registry's source tables named by `names` (each checked), or all of them.
pub fn source_tables(names: &[String]) -> Result<Vec<&'static utils::tables::TableSpec>> {
    if names.is_empty() {
        return Ok(utils::tables::TABLES.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            utils::tables::table(n).map_err(|_| {
                let known: Vec<&str> = utils::tables::TABLES.iter().map(|t| t.name).collect();
                Error::Usage(format!(
                    "{n:?} is not a source table: one of {}",
                    known.join(", ")
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use utils::lambda::fixed_env;

    #[test]
    fn times_in_the_usual_spellings() {
        let t = parse_time_arg("2024-11-14T09:30:00Z").unwrap();
        assert_eq!(parse_time_arg("2024-11-14 09:30:00").unwrap(), t);
        assert_eq!(parse_time_arg("2024-11-14T09:30:00.000").unwrap(), t);
        assert_eq!(
            parse_time_arg("2024-11-14T10:30:00+01:00").unwrap(),
            t,
            "an offset is honoured"
        );
        assert_eq!(
            utils::time::format_time(parse_time_arg("2024-11-14").unwrap()),
            "2024-11-14T00:00:00.000000Z"
        );
        let e = parse_time_arg("yesterday").unwrap_err().to_string();
        assert!(e.contains("\"yesterday\" is not a time"), "{e}");
    }

    #[test]
    fn the_buckets_are_required_and_the_databases_optional() {
        let c = Config::from_lookup(fixed_env(&[
            ("INGEST_BUCKET", "raw"),
            ("PROCESSED_BUCKET", "processed"),
            ("WAREHOUSE_DB_URL", "postgres://x"),
        ]))
        .unwrap();
        assert_eq!(
            (c.ingest_bucket.as_str(), c.processed_bucket.as_str()),
            ("raw", "processed")
        );
        assert!(c.source.is_none() && c.warehouse.is_some());
        let e = Config::from_lookup(fixed_env(&[("INGEST_BUCKET", "raw")])).unwrap_err();
        assert!(
            e.to_string().starts_with("PROCESSED_BUCKET is not set"),
            "{e}"
        );
    }

    #[test]
    fn tables_are_checked_against_the_registry() {
        assert_eq!(source_tables(&[]).unwrap().len(), 11);
        assert_eq!(source_tables(&["staff".into()]).unwrap()[0].name, "staff");
        let e = source_tables(&["staf".into()]).unwrap_err().to_string();
        assert!(
            e.contains("\"staf\" is not a source table: one of address"),
            "{e}"
        );
    }
}
