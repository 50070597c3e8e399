use std::time::Duration;

use utils::Error::Configuration;
use utils::db::DbSource;
use utils::deadline::{margin_from, seconds_setting};
use utils::tables::{TABLES, TableSpec, table};

use crate::error::Result;

/// Seconds subtracted from the window end, by default, to absorb clock skew between the
/// application that stamps `last_updated` and the database.
pub const DEFAULT_SAFETY_LAG: Duration = Duration::from_secs(5);

/// Rows a raw file holds at most, by default (rows sharing one `last_updated` value are never
/// split, so a file can exceed it by those). `make bench` measured the choice: at 1M rows per
/// file the per-file costs (a multipart upload, a watermark write) are under 1% of the run,
/// and a file is a few seconds of work at every stage, well within the deadline margin.
pub const DEFAULT_MAX_ROWS_PER_FILE: u64 = 1_000_000;

/// The ingest Lambda's settings, read from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `SOURCE_DB_SECRET_ID` (preferred) or `SOURCE_DB_URL`.
    pub source: DbSource,
    /// `INGEST_BUCKET`: where raw Parquet and state objects go.
    pub bucket: String,
    /// `INGEST_SAFETY_LAG_SECONDS` (default 5).
    pub safety_lag: Duration,
    /// `INGEST_MAX_ROWS_PER_FILE` (default [`DEFAULT_MAX_ROWS_PER_FILE`]): a larger window is
    /// read as consecutive sub-windows, a file each.
    pub max_rows_per_file: u64,
    /// `DEADLINE_MARGIN_SECONDS` (default 60): no new file is started with less time left.
    pub deadline_margin: Duration,
    /// `INGEST_TABLES` (comma-separated; default every table of the registry): the tables
    /// deployed, which `{}` ingests and whose watermarks hold the fact tables back. Listing a
    /// fact table requires every dimension table.
    pub tables: Vec<&'static TableSpec>,
    /// `LANDING_BUCKET`: where declared datasets' files land (unset: no datasets ingested).
    pub landing_bucket: Option<String>,
    /// `API_BASE_URL`: replaces every API dataset's declared `base_url` (a local server).
    pub api_base_url: Option<String>,
    /// The declared datasets (`datasets/*.json`, built in).
    pub datasets: Vec<datasets::Dataset>,
}

impl Config {
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads settings through `env`, so tests need not touch the process environment.
    pub fn from_lookup(env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let source = DbSource::from_env(&env, "SOURCE_DB_SECRET_ID", "SOURCE_DB_URL")?;
        let bucket = env("INGEST_BUCKET")
            .filter(|b| !b.trim().is_empty())
            .ok_or_else(|| Configuration("INGEST_BUCKET is not set".into()))?;
        let safety_lag = seconds_setting(&env, "INGEST_SAFETY_LAG_SECONDS", DEFAULT_SAFETY_LAG)?;
        let max_rows_per_file = match env("INGEST_MAX_ROWS_PER_FILE") {
            None => DEFAULT_MAX_ROWS_PER_FILE,
            Some(s) => s
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    Configuration(format!(
                        "INGEST_MAX_ROWS_PER_FILE is {s:?}: expected a whole number of rows >= 1"
                    ))
                })?,
        };
        Ok(Config {
            source,
            bucket,
            safety_lag,
            max_rows_per_file,
            deadline_margin: margin_from(&env)?,
            tables: deployed_tables(env("INGEST_TABLES").as_deref())?,
            landing_bucket: env("LANDING_BUCKET").filter(|b| !b.trim().is_empty()),
            api_base_url: env("API_BASE_URL").filter(|b| !b.trim().is_empty()),
            datasets: datasets::bundled(&utils::tables::reserved_names())?,
        })
    }
}

/// The tables `INGEST_TABLES` names, in registry order (all for none).
pub fn deployed_tables(names: Option<&str>) -> Result<Vec<&'static TableSpec>> {
    let names: Vec<&str> = names
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return Ok(TABLES.iter().collect());
    }
    for name in &names {
        if table(name).is_err() {
            return Err(Configuration(format!(
                "INGEST_TABLES names {name:?}, which is not a source table"
            ))
            .into());
        }
    }
    let tables: Vec<&'static TableSpec> =
        TABLES.iter().filter(|t| names.contains(&t.name)).collect();
    if tables.iter().any(|t| t.is_fact()) {
        let missing: Vec<&str> = TABLES
            .iter()
            .filter(|t| !t.is_fact() && !names.contains(&t.name))
            .map(|t| t.name)
            .collect();
        if !missing.is_empty() {
            return Err(Configuration(format!(
                "INGEST_TABLES lists fact tables without {}: fact rows reference every \
                 dimension table",
                missing.join(", ")
            ))
            .into());
        }
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use utils::lambda::fixed_env;

    use super::*;

    #[test]
    fn reads_all_settings() {
        let c = Config::from_lookup(fixed_env(&[
            ("SOURCE_DB_SECRET_ID", "totesys-source"),
            ("INGEST_BUCKET", "raw"),
            ("INGEST_SAFETY_LAG_SECONDS", "2.5"),
            ("INGEST_MAX_ROWS_PER_FILE", "250000"),
            ("DEADLINE_MARGIN_SECONDS", "30"),
        ]))
        .unwrap();
        assert!(matches!(c.source, DbSource::Secret(ref s) if s == "totesys-source"));
        assert_eq!(c.bucket, "raw");
        assert_eq!(c.safety_lag, Duration::from_millis(2500));
        assert_eq!(c.max_rows_per_file, 250_000);
        assert_eq!(c.deadline_margin, Duration::from_secs(30));
    }

    #[test]
    fn missing_settings_are_named() {
        let e = Config::from_lookup(fixed_env(&[("INGEST_BUCKET", "raw")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "configuration: set SOURCE_DB_SECRET_ID (a Secrets Manager secret id) or \
             SOURCE_DB_URL (a PostgreSQL URL)"
        );
        assert_eq!(e.error_type(), "Configuration");
        let e = Config::from_lookup(fixed_env(&[("SOURCE_DB_URL", "postgres://x")])).unwrap_err();
        assert_eq!(e.to_string(), "configuration: INGEST_BUCKET is not set");
        let e = Config::from_lookup(fixed_env(&[
            ("SOURCE_DB_URL", "postgres://x"),
            ("INGEST_BUCKET", "raw"),
            ("INGEST_SAFETY_LAG_SECONDS", "-1"),
        ]))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "configuration: INGEST_SAFETY_LAG_SECONDS is \"-1\": expected a number of seconds >= 0"
        );
        for rows in ["0", "1e6", "-5"] {
            let e = Config::from_lookup(|k: &str| match k {
                "SOURCE_DB_URL" => Some("postgres://x".into()),
                "INGEST_BUCKET" => Some("raw".into()),
                "INGEST_MAX_ROWS_PER_FILE" => Some(rows.into()),
                _ => None,
            })
            .unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "configuration: INGEST_MAX_ROWS_PER_FILE is {rows:?}: expected a whole \
                     number of rows >= 1"
                )
            );
        }
    }

    #[test]
    fn defaults() {
        let c = Config::from_lookup(fixed_env(&[
            ("SOURCE_DB_URL", "postgres://x"),
            ("INGEST_BUCKET", "raw"),
        ]))
        .unwrap();
        assert_eq!(c.safety_lag, DEFAULT_SAFETY_LAG);
        assert_eq!(c.max_rows_per_file, DEFAULT_MAX_ROWS_PER_FILE);
        assert_eq!(c.deadline_margin, utils::deadline::DEFAULT_MARGIN);
        assert_eq!(c.tables.len(), TABLES.len());
    }

    #[test]
    fn the_deployed_tables_are_source_tables_and_facts_come_with_every_dimension() {
        let names = |tables: Vec<&'static TableSpec>| -> Vec<&str> {
            tables.iter().map(|t| t.name).collect()
        };
        assert_eq!(
            names(deployed_tables(Some(" staff, department ,")).unwrap()),
            ["department", "staff"]
        );
        assert_eq!(deployed_tables(Some("")).unwrap().len(), TABLES.len());
        let all: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
        assert_eq!(names(deployed_tables(Some(&all.join(","))).unwrap()), all);
        let e = deployed_tables(Some("staff,staf")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "configuration: INGEST_TABLES names \"staf\", which is not a source table"
        );
        let e = deployed_tables(Some("sales_order,staff")).unwrap_err();
        assert!(
            e.to_string().contains("without address, counterparty"),
            "{e}"
        );
        assert_eq!(e.error_type(), "Configuration");
    }
}
