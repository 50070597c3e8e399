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
}

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
        Ok(Config {
            warehouse,
            processed_bucket,
            deadline_margin: utils::deadline::margin_from(&env)?,
            bulk_min_rows,
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
        let c = Config::from_lookup(fixed_env(&[
            ("WAREHOUSE_DB_URL", "postgres://x"),
            ("PROCESSED_BUCKET", "processed"),
            ("LOAD_BULK_MIN_ROWS", "0"),
            ("DEADLINE_MARGIN_SECONDS", "20"),
        ]))
        .unwrap();
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
        let e = Config::from_lookup(fixed_env(&[("PROCESSED_BUCKET", "p")])).unwrap_err();
        assert_eq!(e.error_type(), "Configuration");
        assert!(e.to_string().contains("WAREHOUSE_DB_SECRET_ID"), "{e}");
        let e =
            Config::from_lookup(fixed_env(&[("WAREHOUSE_DB_URL", "postgres://x")])).unwrap_err();
        assert_eq!(e.to_string(), "configuration: PROCESSED_BUCKET is not set");
    }
}
