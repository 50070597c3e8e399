//! What an invocation asks for: which processed files to load.
//!
//! Step Functions passes the transform Lambda's output; S3 sends an `ObjectCreated`
//! notification (read by [`utils::s3_event`]). A notification stands for the whole transform
//! run its object belongs to: every processed file with the same time in its key, so that the
//! run's dimensions load before its facts whichever notification comes first.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use utils::file_list::Keys;
use utils::keys::parse_file_key;
use utils::s3_event;
use utils::warehouse::{WAREHOUSE_TABLES, WarehouseTable, warehouse_table};

use crate::error::{Error, Result};

/// A processed data file: the warehouse table it holds and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessedFile {
    pub table: &'static WarehouseTable,
    pub key: String,
}

impl ProcessedFile {
    /// The processed file at `key` and its time, if `key` is a data file of a warehouse
    /// table (quarantine and state objects are not).
    pub fn from_key(key: &str) -> Option<(ProcessedFile, DateTime<Utc>)> {
        utils::warehouse::processed_file(key).map(|(table, at)| {
            (
                ProcessedFile {
                    table,
                    key: key.to_owned(),
                },
                at,
            )
        })
    }
}

/// What the event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Exactly these files, in the registry's order (dimensions first), each table's oldest
    /// first.
    Files {
        bucket: String,
        files: Vec<ProcessedFile>,
    },
    /// Every processed file of the transform run at `at`.
    Run { bucket: String, at: DateTime<Utc> },
    /// A notification for objects that are not data files (quarantine, state): nothing to do.
    Nothing,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransformOutput {
    bucket: String,
    files: BTreeMap<String, Keys>,
    // Accepted and not needed: the files say it all.
    #[serde(default, rename = "row_counts")]
    _row_counts: Option<IgnoredAny>,
    #[serde(default, rename = "quarantined")]
    _quarantined: Option<IgnoredAny>,
    #[serde(default, rename = "has_new_data")]
    _has_new_data: Option<IgnoredAny>,
    #[serde(default, rename = "complete")]
    _complete: Option<IgnoredAny>,
    #[serde(default, rename = "remaining")]
    _remaining: Option<IgnoredAny>,
    // Declared datasets' files published: the load takes them from its queue.
    #[serde(default, rename = "datasets")]
    _datasets: Option<IgnoredAny>,
}

pub fn parse_event(event: &Value) -> Result<Request> {
    if s3_event::is_notification(event) {
        return s3_request(event);
    }
    let output = TransformOutput::deserialize(event).map_err(|e| {
        Error::InvalidEvent(format!(
            "expected the transform output {{\"bucket\", \"files\": {{table: [key, ...]}}, ...}} or an \
             S3 notification: {e}"
        ))
    })?;
    let mut files = Vec::new();
    for (name, keys) in output.files {
        let table = warehouse_table(&name)?;
        for key in keys.into_vec() {
            if parse_file_key(table.name, &key, "parquet").is_none() {
                return Err(Error::InvalidEvent(format!(
                    "{key:?} is not a processed data key of table {name} \
                     ({name}/YYYY/MM/DD/HHMMSSffffff.parquet)"
                )));
            }
            if !files.iter().any(|f: &ProcessedFile| f.key == key) {
                files.push(ProcessedFile { table, key });
            }
        }
    }
    files.sort_by(|a, b| (position(a.table), &a.key).cmp(&(position(b.table), &b.key)));
    Ok(Request::Files {
        bucket: output.bucket,
        files,
    })
}

/// The table's place in the registry: dimensions come before facts.
pub fn position(table: &WarehouseTable) -> usize {
    WAREHOUSE_TABLES
        .iter()
        .position(|t| std::ptr::eq(t, table))
        .expect("a registry table")
}

fn s3_request(event: &Value) -> Result<Request> {
    let mut run: Option<(String, DateTime<Utc>)> = None;
    for (bucket, key) in s3_event::objects(event).map_err(Error::InvalidEvent)? {
        let Some((_, at)) = ProcessedFile::from_key(&key) else {
            // A declared dataset's file, `<dataset>/YYYY/MM/DD/HHMMSSffffff-<id>-<n>.parquet`,
            // stands for the queue as well (datasets are not in the registry: any such key
            // outside quarantine/ and _state/ is one); anything else is nothing to load.
            if let Some(at) = dataset_file_time(&key) {
                run.get_or_insert((bucket, at));
            }
            continue;
        };
        match &run {
            Some((b, t)) if *b != bucket || *t != at => {
                return Err(Error::InvalidEvent(format!(
                    "the notification's records belong to different transform runs \
                     (s3://{b} at {t}, s3://{bucket}/{key})"
                )));
            }
            _ => run = Some((bucket, at)),
        }
    }
    Ok(match run {
        Some((bucket, at)) => Request::Run { bucket, at },
        None => Request::Nothing,
    })
}

/// The time of a key laid out as a declared dataset's processed files are.
fn dataset_file_time(key: &str) -> Option<DateTime<Utc>> {
    let (name, _) = key.split_once('/')?;
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    (plain && name != "quarantine")
        .then(|| parse_file_key(name, key, "parquet"))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn transform_output_names_the_files_dimensions_first() {
        let event = json!({
            "bucket": "processed",
            "files": {
                "fact_sales_order": "fact_sales_order/2024/11/14/093005123456.parquet",
                "dim_staff": "dim_staff/2024/11/14/093005123456.parquet",
                "dim_date": "dim_date/2024/11/14/093005123456.parquet"
            },
            "row_counts": {"fact_sales_order": 3},
            "quarantined": {},
            "has_new_data": true
        });
        let Request::Files { bucket, files } = parse_event(&event).unwrap() else {
            panic!("a files request")
        };
        assert_eq!(bucket, "processed");
        let names: Vec<&str> = files.iter().map(|f| f.table.name).collect();
        assert_eq!(names, ["dim_date", "dim_staff", "fact_sales_order"]);
    }

    #[test]
    fn several_files_of_a_table_come_oldest_first_after_every_dimension() {
        let event = json!({"bucket": "processed", "files": {
            "fact_sales_order": [
                "fact_sales_order/2024/11/14/093005123456.parquet",
                "fact_sales_order/2024/11/14/080000000000.parquet"
            ],
            "dim_staff": ["dim_staff/2024/11/14/093005123456.parquet"],
            "dim_date": [
                "dim_date/2024/11/14/080000000000.parquet",
                "dim_date/2024/11/14/093005123456.parquet"
            ]
        }, "complete": false, "remaining": {"bucket": "raw", "files": {}}});
        let Request::Files { files, .. } = parse_event(&event).unwrap() else {
            panic!("a files request")
        };
        let keys: Vec<&str> = files.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "dim_date/2024/11/14/080000000000.parquet",
                "dim_date/2024/11/14/093005123456.parquet",
                "dim_staff/2024/11/14/093005123456.parquet",
                "fact_sales_order/2024/11/14/080000000000.parquet",
                "fact_sales_order/2024/11/14/093005123456.parquet",
            ]
        );
    }

    #[test]
    fn a_notification_stands_for_its_run_and_skips_quarantine_and_state() {
        let record =
            |key: &str| json!({"s3": {"bucket": {"name": "processed"}, "object": {"key": key}}});
        let event =
            json!({"Records": [record("fact_payment%2F2024%2F11%2F14%2F093005123456.parquet")]});
        assert_eq!(
            parse_event(&event).unwrap(),
            Request::Run {
                bucket: "processed".into(),
                at: Utc.timestamp_micros(1_731_576_605_123_456).unwrap()
            }
        );
        for key in [
            "quarantine/fact_payment/2024/11/14/093005123456.parquet",
            "quarantine/trips/2024/11/14/093005000000-09ad468e385f8ce8-00000.parquet",
            "_state/transform/staff.parquet",
            "_state/pending/trips/2024/11/14/093005000000-09ad468e385f8ce8-00000.parquet",
        ] {
            let event = json!({"Records": [record(key)]});
            assert_eq!(parse_event(&event).unwrap(), Request::Nothing, "{key}");
        }
        // A declared dataset's file stands for the queue.
        let event = json!({"Records": [record(
            "trips/2024/11/14/093005000000-09ad468e385f8ce8-00000.parquet"
        )]});
        assert!(matches!(
            parse_event(&event).unwrap(),
            Request::Run { bucket, .. } if bucket == "processed"
        ));
    }

    #[test]
    fn the_sample_events_parse() {
        let output: Value =
            serde_json::from_str(include_str!("../../../events/load-transform-output.json"))
                .unwrap();
        let Request::Files { files, .. } = parse_event(&output).unwrap() else {
            panic!("a files request")
        };
        assert_eq!(files.len(), 6);
        let notification: Value =
            serde_json::from_str(include_str!("../../../events/load-s3-notification.json"))
                .unwrap();
        assert!(matches!(
            parse_event(&notification).unwrap(),
            Request::Run { bucket, .. } if bucket == "totesys-processed"
        ));
    }

    #[test]
    fn malformed_events_are_invalid_events() {
        for (event, needle) in [
            (json!("x"), "expected the transform output"),
            (json!({"bucket": "p"}), "missing field `files`"),
            (
                json!({"bucket": "p", "files": {}, "more": 1}),
                "unknown field `more`",
            ),
            (
                json!({"bucket": "p", "files": {"dim_staff": "dim_date/2024/11/14/093005123456.parquet"}}),
                "is not a processed data key of table dim_staff",
            ),
            (
                json!({"Records": [{"s3": {}}]}),
                "expected an S3 notification",
            ),
        ] {
            let e = parse_event(&event).unwrap_err();
            assert_eq!(e.error_type(), "InvalidEvent", "{e}");
            assert!(e.to_string().contains(needle), "{e} lacks {needle}");
        }
        let e = parse_event(&json!({"bucket": "p", "files": {"dim_nope": "x"}})).unwrap_err();
        assert_eq!(e.error_type(), "UnknownTable");
    }
}
