use std::time::Duration;

use utils::Error::Configuration;

use crate::error::Result;

/// The transform Lambda's settings, read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `INGEST_BUCKET`: where the raw files are; events naming another bucket are refused.
    pub ingest_bucket: String,
    /// `PROCESSED_BUCKET`: where the star schema, quarantine and the dimension snapshots go.
    pub processed_bucket: String,
    /// `DEADLINE_MARGIN_SECONDS` (default 60): no new batch is started with less time left.
    pub deadline_margin: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads settings through `env`, so tests need not touch the process environment.
    pub fn from_lookup(env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let bucket = |name: &str| {
            env(name)
                .filter(|b| !b.trim().is_empty())
                .ok_or_else(|| Configuration(format!("{name} is not set")))
        };
        let config = Config {
            ingest_bucket: bucket("INGEST_BUCKET")?,
            processed_bucket: bucket("PROCESSED_BUCKET")?,
            deadline_margin: utils::deadline::margin_from(&env)?,
        };
        if config.ingest_bucket == config.processed_bucket {
            return Err(Configuration(
                "INGEST_BUCKET and PROCESSED_BUCKET must be different buckets".into(),
            )
            .into());
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use utils::lambda::fixed_env;

    use super::*;

    #[test]
    fn reads_both_buckets_and_names_what_is_missing() {
        let c = Config::from_lookup(fixed_env(&[
            ("INGEST_BUCKET", "raw"),
            ("PROCESSED_BUCKET", "processed"),
        ]))
        .unwrap();
        assert_eq!(c.ingest_bucket, "raw");
        assert_eq!(c.processed_bucket, "processed");
        assert_eq!(c.deadline_margin, utils::deadline::DEFAULT_MARGIN);
        let e = Config::from_lookup(fixed_env(&[("INGEST_BUCKET", "raw")])).unwrap_err();
        assert_eq!(e.to_string(), "configuration: PROCESSED_BUCKET is not set");
        assert_eq!(e.error_type(), "Configuration");
        let e = Config::from_lookup(fixed_env(&[
            ("INGEST_BUCKET", "same"),
            ("PROCESSED_BUCKET", "same"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("different"), "{e}");
    }
}
