use std::time::Duration;

use utils::db::DbSource;

use utils::Error::Configuration;

use crate::error::Result;

/// Seconds subtracted from the window end, by default, to absorb clock skew between the
/// application that stamps `last_updated` and the database.
pub const DEFAULT_SAFETY_LAG: Duration = Duration::from_secs(5);

/// The ingest Lambda's settings, read from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `SOURCE_DB_SECRET_ID` (preferred) or `SOURCE_DB_URL`.
    pub source: DbSource,
    /// `INGEST_BUCKET`: where raw Parquet and state objects go.
    pub bucket: String,
    /// `INGEST_SAFETY_LAG_SECONDS` (default 5).
    pub safety_lag: Duration,
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
        let safety_lag = match env("INGEST_SAFETY_LAG_SECONDS") {
            None => DEFAULT_SAFETY_LAG,
            Some(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| {
                    Configuration(format!(
                        "INGEST_SAFETY_LAG_SECONDS is {s:?}: expected a number of seconds >= 0"
                    ))
                })?,
        };
        Ok(Config {
            source,
            bucket,
            safety_lag,
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
        ]))
        .unwrap();
        assert!(matches!(c.source, DbSource::Secret(ref s) if s == "totesys-source"));
        assert_eq!(c.bucket, "raw");
        assert_eq!(c.safety_lag, Duration::from_millis(2500));
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
    }

    #[test]
    fn lag_defaults_to_five_seconds() {
        let c = Config::from_lookup(fixed_env(&[
            ("SOURCE_DB_URL", "postgres://x"),
            ("INGEST_BUCKET", "raw"),
        ]))
        .unwrap();
        assert_eq!(c.safety_lag, DEFAULT_SAFETY_LAG);
    }
}
