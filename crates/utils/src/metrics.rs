//! The Lambdas' figures as CloudWatch metrics, written as Embedded Metric Format (EMF) log
//! lines: CloudWatch Logs extracts the metrics from the function's log group, so there is no
//! `PutMetricData` call and nothing is added to an invocation's time.
//!
//! Each line is one JSON object on standard output: the `_aws` metadata (a timestamp and one
//! metric directive: the namespace, one dimension set, the metrics with their units), the
//! dimension values and the metric values as top-level members (the EMF specification,
//! CloudWatch User Guide, "Specification: Embedded metric format"). The namespace is the
//! deployment's (`METRICS_NAMESPACE`, Terraform sets the project's name), which its dashboard
//! and alarms read; the names, units and dimensions are the constants below, which
//! `tests/tests/terraform.rs` checks against the dashboard and the alarms.

use std::sync::{Mutex, OnceLock, PoisonError};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

/// The environment variable that names the namespace.
pub const NAMESPACE_VAR: &str = "METRICS_NAMESPACE";
/// The namespace outside a deployment.
pub const DEFAULT_NAMESPACE: &str = "totesys";

/// A metric the Lambdas emit: its name, unit and the dimensions it is reported by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub unit: &'static str,
    pub dimensions: &'static [&'static str],
}

/// The stage (`ingest`, `transform`, `load`) and the table.
pub const BY_TABLE: &[&str] = &["Stage", "Table"];
/// The stage alone.
pub const BY_STAGE: &[&str] = &["Stage"];

/// Rows written (ingest: read from the source; transform: written to the processed zone;
/// load: read from processed files), per file.
pub const ROWS: Metric = Metric {
    name: "Rows",
    unit: "Count",
    dimensions: BY_TABLE,
};
/// Parquet bytes written (ingest, transform) or read (load), per file.
pub const BYTES: Metric = Metric {
    name: "Bytes",
    unit: "Bytes",
    dimensions: BY_TABLE,
};
/// Rows the load inserted or updated, per file.
pub const CHANGED_ROWS: Metric = Metric {
    name: "ChangedRows",
    unit: "Count",
    dimensions: BY_TABLE,
};
/// Fact rows transform set aside, per quarantine file.
pub const QUARANTINED_ROWS: Metric = Metric {
    name: "QuarantinedRows",
    unit: "Count",
    dimensions: BY_TABLE,
};
/// How far behind the source a table is. Ingest: now minus its watermark (the end of the last
/// window read). Transform: now minus what has reached the warehouse or waits only for the
/// load running next: the watermark, or with raw files left, the end of the last file
/// transformed; no later than the oldest file in the load's queue (end to end: a failing load
/// shows here too). A table caught up shows about the safety lag; one behind, how far.
pub const FRESHNESS_LAG: Metric = Metric {
    name: "FreshnessLagSeconds",
    unit: "Seconds",
    dimensions: BY_TABLE,
};
/// Files waiting for a stage after an invocation: transform, per source table, the raw files
/// it left; load, per warehouse table, the files left in its queue.
pub const FILES_WAITING: Metric = Metric {
    name: "FilesWaiting",
    unit: "Count",
    dimensions: BY_TABLE,
};
/// Load: a file rolled back because a lock wait outlasted `lock_timeout` or deadlocked (the
/// file is retried), per warehouse table.
pub const LOCK_TIMEOUTS: Metric = Metric {
    name: "LockTimeouts",
    unit: "Count",
    dimensions: BY_TABLE,
};
/// Load: a materialized view whose refresh failed (the files are committed; the view stays
/// pending for the next load).
pub const VIEW_REFRESH_FAILURES: Metric = Metric {
    name: "ViewRefreshFailures",
    unit: "Count",
    dimensions: BY_STAGE,
};
/// Ingest: an API request tried again after a throttle (429) or a failure (5xx, a timeout),
/// per dataset.
pub const HTTP_RETRIES: Metric = Metric {
    name: "HttpRetries",
    unit: "Count",
    dimensions: BY_TABLE,
};
/// An invocation's duration, per stage.
pub const DURATION: Metric = Metric {
    name: "DurationSeconds",
    unit: "Seconds",
    dimensions: BY_STAGE,
};

/// Every metric the Lambdas emit.
pub const METRICS: &[Metric] = &[
    ROWS,
    BYTES,
    CHANGED_ROWS,
    QUARANTINED_ROWS,
    FRESHNESS_LAG,
    FILES_WAITING,
    LOCK_TIMEOUTS,
    VIEW_REFRESH_FAILURES,
    HTTP_RETRIES,
    DURATION,
];

/// The stages, as the `Stage` dimension names them.
pub const STAGES: &[&str] = &["ingest", "transform", "load"];

/// The namespace of this process: `METRICS_NAMESPACE`, read once.
pub fn namespace() -> &'static str {
    static NAMESPACE: OnceLock<String> = OnceLock::new();
    NAMESPACE.get_or_init(|| {
        std::env::var(NAMESPACE_VAR)
            .ok()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
    })
}

/// One EMF document: `values` (all reported by the same dimensions) with the dimension values
/// `dimensions` (name, value), at `at`, in `namespace`.
///
/// # Panics
/// When a metric's dimensions are not exactly the names given: a programming error.
pub fn document(
    namespace: &str,
    at: DateTime<Utc>,
    dimensions: &[(&str, &str)],
    values: &[(Metric, f64)],
) -> Value {
    let keys: Vec<&str> = dimensions.iter().map(|(k, _)| *k).collect();
    let mut root = Map::new();
    for (metric, _) in values {
        assert_eq!(
            metric.dimensions, keys,
            "{} is reported by {:?}",
            metric.name, metric.dimensions
        );
    }
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": at.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [keys],
                "Metrics": values
                    .iter()
                    .map(|(m, _)| json!({"Name": m.name, "Unit": m.unit}))
                    .collect::<Vec<_>>(),
            }],
        }),
    );
    for (key, value) in dimensions {
        root.insert((*key).into(), Value::String((*value).into()));
    }
    for (metric, value) in values {
        root.insert(metric.name.into(), json!(value));
    }
    Value::Object(root)
}

/// Documents kept instead of written while a [`Captured`] lives (tests).
static CAPTURED: Mutex<Option<Vec<Value>>> = Mutex::new(None);

/// Writes one EMF line for `stage` (and `table`, when given) to standard output.
pub fn emit(stage: &str, table: Option<&str>, values: &[(Metric, f64)]) {
    let mut dimensions = vec![("Stage", stage)];
    if let Some(table) = table {
        dimensions.push(("Table", table));
    }
    let line = document(namespace(), Utc::now(), &dimensions, values);
    if let Some(kept) = CAPTURED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_mut()
    {
        kept.push(line);
        return;
    }
    // `println!`: a whole line at once (standard output is line-buffered), and the test
    // harness captures it.
    println!("{line}");
}

/// The units CloudWatch accepts (MetricDatum's `Unit`).
#[cfg(any(test, feature = "test-util"))]
pub const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Checks a document against the EMF specification's rules: the root is an object with an
/// `_aws` object holding a millisecond `Timestamp` and a non-empty `CloudWatchMetrics`
/// array of directives; each directive has a `Namespace` (1 to 255 characters), an array
/// of dimension sets (each at most 30 keys, each key a string member of the root, its
/// value 1 to 1024 characters) and 1 to 100 metric definitions (a `Name` of 1 to 1024
/// characters that is a number member of the root, an optional `Unit` CloudWatch knows),
/// and no member the specification does not define.
#[cfg(any(test, feature = "test-util"))]
pub fn validate(doc: &Value) -> Result<(), String> {
    let root = doc.as_object().ok_or("the root is not an object")?;
    let aws = root["_aws"].as_object().ok_or("_aws is not an object")?;
    for key in aws.keys() {
        if !["Timestamp", "CloudWatchMetrics"].contains(&key.as_str()) {
            return Err(format!("_aws has an unknown member {key}"));
        }
    }
    let ts = aws
        .get("Timestamp")
        .and_then(Value::as_i64)
        .ok_or("no integer Timestamp")?;
    if ts < 1_000_000_000_000 {
        return Err(format!("Timestamp {ts} is not in milliseconds"));
    }
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(Value::as_array)
        .filter(|d| !d.is_empty())
        .ok_or("no CloudWatchMetrics directives")?;
    for directive in directives {
        let d = directive
            .as_object()
            .ok_or("a directive is not an object")?;
        for key in d.keys() {
            if !["Namespace", "Dimensions", "Metrics"].contains(&key.as_str()) {
                return Err(format!("a directive has an unknown member {key}"));
            }
        }
        let ns = d
            .get("Namespace")
            .and_then(Value::as_str)
            .ok_or("no Namespace")?;
        if ns.is_empty() || ns.len() > 255 {
            return Err(format!("Namespace {ns:?} is not 1 to 255 characters"));
        }
        let sets = d
            .get("Dimensions")
            .and_then(Value::as_array)
            .ok_or("no Dimensions")?;
        for set in sets {
            let set = set.as_array().ok_or("a dimension set is not an array")?;
            if set.len() > 30 {
                return Err("a dimension set of more than 30 keys".into());
            }
            for key in set {
                let key = key.as_str().ok_or("a dimension key is not a string")?;
                let value = root.get(key).and_then(Value::as_str).ok_or(format!(
                    "dimension {key} is not a string member of the root"
                ))?;
                if value.is_empty() || value.len() > 1024 {
                    return Err(format!(
                        "dimension {key}'s value is not 1 to 1024 characters"
                    ));
                }
            }
        }
        let metrics = d
            .get("Metrics")
            .and_then(Value::as_array)
            .ok_or("no Metrics")?;
        if metrics.is_empty() || metrics.len() > 100 {
            return Err("not 1 to 100 metrics".into());
        }
        for m in metrics {
            let m = m.as_object().ok_or("a metric is not an object")?;
            let name = m
                .get("Name")
                .and_then(Value::as_str)
                .ok_or("a metric has no Name")?;
            if name.is_empty() || name.len() > 1024 {
                return Err(format!("metric name {name:?} is not 1 to 1024 characters"));
            }
            if !root.get(name).is_some_and(Value::is_number) {
                return Err(format!("metric {name} is not a number member of the root"));
            }
            if let Some(unit) = m.get("Unit") {
                let unit = unit.as_str().ok_or("Unit is not a string")?;
                if !UNITS.contains(&unit) {
                    return Err(format!("{unit} is not a CloudWatch unit"));
                }
            }
        }
    }
    Ok(())
}

/// While it lives, [`emit`] keeps its documents instead of writing them: for a test that
/// checks what the Lambdas emit (one at a time: the capture is process-wide).
#[cfg(any(test, feature = "test-util"))]
pub struct Captured(());

#[cfg(any(test, feature = "test-util"))]
impl Captured {
    pub fn start() -> Self {
        *CAPTURED.lock().unwrap_or_else(PoisonError::into_inner) = Some(Vec::new());
        Captured(())
    }

    /// The documents emitted since the capture started, and starts again.
    pub fn take(&self) -> Vec<Value> {
        CAPTURED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(Vec::new())
            .unwrap_or_default()
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Drop for Captured {
    fn drop(&mut self) {
        *CAPTURED.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Runs one invocation of `stage` and emits its `DurationSeconds`, whatever its result.
pub async fn timed<T>(stage: &str, invocation: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let result = invocation.await;
    emit(stage, None, &[(DURATION, started.elapsed().as_secs_f64())]);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_731_576_605_123).unwrap()
    }

    #[test]
    fn a_line_is_one_emf_document_with_its_dimensions_and_values() {
        let doc = document(
            "totesys",
            at(),
            &[("Stage", "ingest"), ("Table", "sales_order")],
            &[(ROWS, 20.0), (BYTES, 4096.0)],
        );
        validate(&doc).unwrap();
        assert_eq!(
            doc,
            json!({
                "_aws": {
                    "Timestamp": 1_731_576_605_123_i64,
                    "CloudWatchMetrics": [{
                        "Namespace": "totesys",
                        "Dimensions": [["Stage", "Table"]],
                        "Metrics": [
                            {"Name": "Rows", "Unit": "Count"},
                            {"Name": "Bytes", "Unit": "Bytes"}
                        ]
                    }]
                },
                "Stage": "ingest",
                "Table": "sales_order",
                "Rows": 20.0,
                "Bytes": 4096.0
            })
        );
        let stage = document("totesys", at(), &[("Stage", "load")], &[(DURATION, 1.5)]);
        validate(&stage).unwrap();
    }

    #[test]
    fn the_check_refuses_what_the_specification_refuses() {
        let good = document("ns", at(), &[("Stage", "load")], &[(DURATION, 1.0)]);
        let broken = |f: &dyn Fn(&mut Value)| {
            let mut doc = good.clone();
            f(&mut doc);
            validate(&doc).unwrap_err()
        };
        assert!(broken(&|d| d["Stage"] = json!(3)).contains("not a string member"));
        assert!(broken(&|d| d["DurationSeconds"] = json!("1")).contains("not a number member"));
        assert!(
            broken(&|d| d["_aws"]["Timestamp"] = json!(1_731_576_605)).contains("milliseconds")
        );
        assert!(
            broken(&|d| d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] = json!("Rows"))
                .contains("not a CloudWatch unit")
        );
        assert!(
            broken(&|d| d["_aws"]["CloudWatchMetrics"][0]["Namespace"] = json!(""))
                .contains("Namespace")
        );
    }

    #[test]
    fn every_metric_has_a_cloudwatch_unit_and_known_dimensions() {
        for m in METRICS {
            assert!(UNITS.contains(&m.unit), "{m:?}");
            assert!(
                m.dimensions == BY_TABLE || m.dimensions == BY_STAGE,
                "{m:?}"
            );
            let dims: Vec<(&str, &str)> = m.dimensions.iter().map(|d| (*d, "x")).collect();
            validate(&document("totesys", at(), &dims, &[(*m, 1.0)])).unwrap();
        }
    }

    #[test]
    #[should_panic(expected = "is reported by")]
    fn a_metric_with_the_wrong_dimensions_is_a_bug() {
        document("ns", at(), &[("Stage", "load")], &[(ROWS, 1.0)]);
    }
}
