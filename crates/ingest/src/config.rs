use std::time::Duration;

use utils::Error::Configuration;
use utils::db::DbSource;
use utils::deadline::{margin_from, seconds_setting};

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
        })
    }
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
    }
}
