use std::time::Duration;

use utils::Error::Configuration;
use utils::db::DbSource;

use crate::error::Result;

/// The load Lambda's settings, read from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `WAREHOUSE_DB_SECRET_ID` (preferred) or `WAREHOUSE_DB_URL`.
    pub warehouse: DbSource,
    /// `PROCESSED_BUCKET`: the star schema files transform writes.
    pub processed_bucket: String,
    /// `DEADLINE_MARGIN_SECONDS` (default 60): no new file is started with less time left.
    pub deadline_margin: Duration,
    /// `LOAD_BULK_MIN_ROWS` (default [`crate::bulk::DEFAULT_MIN_ROWS`]; 0 turns the bulk path
    /// off): files of at least this many rows load by the bulk path.
    pub bulk_min_rows: u64,
    /// `LOAD_LOCK_TIMEOUT_MS` (default [`DEFAULT_LOCK_TIMEOUT`]): the longest any statement of
    /// the load waits for a lock; a file that waits longer rolls back and is retried.
    pub lock_timeout: Duration,
    /// The declared datasets (`datasets/*.json`, built in), kept for the process's life.
    pub datasets: &'static [datasets::Dataset],
}

/// Long enough for the row locks of a concurrent load to clear, short enough that a DBA's
/// `ALTER TABLE` or an analyst's `LOCK` costs a retry, not the invocation.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

impl Config {
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads settings through `env`, so tests need not touch the process environment.
    pub fn from_lookup(env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let warehouse = DbSource::from_env(&env, "WAREHOUSE_DB_SECRET_ID", "WAREHOUSE_DB_URL")?;
        let processed_bucket = env("PROCESSED_BUCKET")
            .filter(|b| !b.trim().is_empty())
            .ok_or_else(|| Configuration("PROCESSED_BUCKET is not set".into()))?;
        let bulk_min_rows = match env("LOAD_BULK_MIN_ROWS") {
            None => crate::bulk::DEFAULT_MIN_ROWS,
            Some(s) => s.trim().parse::<u64>().map_err(|_| {
                Configuration(format!(
                    "LOAD_BULK_MIN_ROWS is {s:?}: expected a whole number of rows (0 turns \
                     the bulk path off)"
                ))
            })?,
        };
        let deadline_margin = utils::deadline::margin_from(&env)?;
        let lock_timeout = match env("LOAD_LOCK_TIMEOUT_MS") {
            None => DEFAULT_LOCK_TIMEOUT,
            Some(s) => match s.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(Configuration(format!(
                        "LOAD_LOCK_TIMEOUT_MS is {s:?}: expected a positive whole number of \
                         milliseconds"
                    ))
                    .into());
                }
            },
        };
        Ok(Config {
            warehouse,
            processed_bucket,
            deadline_margin,
            bulk_min_rows,
            lock_timeout,
            datasets: datasets::bundled(&utils::tables::reserved_names())
                .map_err(|e| Configuration(e.to_string()))?
                .leak(),
        })
    }
}

#[cfg(test)]
mod tests {
    use utils::lambda::fixed_env;

    use super::*;

    #[test]
    fn reads_the_settings_and_names_what_is_missing() {
        let c = Config::from_lookup(fixed_env(&[
            ("WAREHOUSE_DB_SECRET_ID", "totesys-warehouse"),
            ("PROCESSED_BUCKET", "processed"),
        ]))
        .unwrap();
        assert!(matches!(c.warehouse, DbSource::Secret(ref s) if s == "totesys-warehouse"));
        assert_eq!(c.processed_bucket, "processed");
        assert_eq!(c.bulk_min_rows, crate::bulk::DEFAULT_MIN_ROWS);
        assert_eq!(c.deadline_margin, utils::deadline::DEFAULT_MARGIN);
        assert_eq!(c.lock_timeout, DEFAULT_LOCK_TIMEOUT);
        let c = Config::from_lookup(fixed_env(&[
            ("WAREHOUSE_DB_URL", "postgres://x"),
            ("PROCESSED_BUCKET", "processed"),
            ("LOAD_BULK_MIN_ROWS", "0"),
            ("DEADLINE_MARGIN_SECONDS", "20"),
            ("LOAD_LOCK_TIMEOUT_MS", "250"),
        ]))
        .unwrap();
        assert_eq!(c.lock_timeout, Duration::from_millis(250));
        assert_eq!(c.bulk_min_rows, 0);
        assert_eq!(c.deadline_margin, Duration::from_secs(20));
        let e = Config::from_lookup(fixed_env(&[
            ("WAREHOUSE_DB_URL", "postgres://x"),
            ("PROCESSED_BUCKET", "processed"),
            ("LOAD_BULK_MIN_ROWS", "-1"),
        ]))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "configuration: LOAD_BULK_MIN_ROWS is \"-1\": expected a whole number of rows (0 \
             turns the bulk path off)"
        );
        let e = Config::from_lookup(fixed_env(&[
            ("WAREHOUSE_DB_URL", "postgres://x"),
            ("PROCESSED_BUCKET", "processed"),
            ("LOAD_LOCK_TIMEOUT_MS", "0"),
        ]))
        .unwrap_err();
        assert!(
            e.to_string().contains("LOAD_LOCK_TIMEOUT_MS is \"0\""),
            "{e}"
        );
        let e = Config::from_lookup(fixed_env(&[("PROCESSED_BUCKET", "p")])).unwrap_err();
        assert_eq!(e.error_type(), "Configuration");
        assert!(e.to_string().contains("WAREHOUSE_DB_SECRET_ID"), "{e}");
        let e =
            Config::from_lookup(fixed_env(&[("WAREHOUSE_DB_URL", "postgres://x")])).unwrap_err();
        assert_eq!(e.to_string(), "configuration: PROCESSED_BUCKET is not set");
    }
}
