//! What an invocation asks for: which raw files to transform.
//!
//! Two shapes arrive. Step Functions passes the ingest Lambda's output (or, after a Map state,
//! a list of them). S3 sends an `ObjectCreated` notification, read by [`utils::s3_event`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use utils::file_list::Keys;
use utils::keys::parse_file_key;
use utils::s3_event;
use utils::tables::{TABLES, TableSpec, table};

use crate::error::{Error, Result};
use crate::route::{Route, Streamed};

/// A raw file: which table it holds, where its rows go, and the window end its key is named
/// after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFile {
    pub table: &'static TableSpec,
    pub route: Route,
    pub key: String,
    pub window_end: DateTime<Utc>,
}

impl RawFile {
    pub fn new(table: &'static TableSpec, key: String, window_end: DateTime<Utc>) -> Result<Self> {
        Ok(RawFile {
            table,
            route: Route::of(table)?,
            key,
            window_end,
        })
    }
}

/// The table and window end of `key`, if it is a data file of one of the registry's tables.
pub fn raw_data_key(key: &str) -> Option<(&'static TableSpec, DateTime<Utc>)> {
    TABLES
        .iter()
        .find_map(|t| parse_file_key(t.name, key, "parquet").map(|end| (t, end)))
}

/// What the event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Exactly these files, from the ingest Lambda's output: in registry order, each table's
    /// oldest first (a table's window may span several files).
    Files { bucket: String, files: Vec<RawFile> },
    /// Raw files announced by S3. The batch is every raw file of the same window end, so
    /// that each invocation for one ingest run writes a superset of what the earlier ones
    /// wrote (see `lib.rs`).
    Window {
        bucket: String,
        window_end: DateTime<Utc>,
    },
    /// A notification for objects that are not raw data files (state objects): nothing to do.
    Nothing,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestOutput {
    bucket: String,
    files: BTreeMap<String, Keys>,
    // Accepted and not needed: the files say it all (what ingest left is ingest's business).
    #[serde(default, rename = "row_counts")]
    _row_counts: Option<IgnoredAny>,
    #[serde(default, rename = "has_new_data")]
    _has_new_data: Option<IgnoredAny>,
    #[serde(default, rename = "complete")]
    _complete: Option<IgnoredAny>,
    #[serde(default, rename = "remaining")]
    _remaining: Option<IgnoredAny>,
    // Declared datasets' files: transform takes them from its queue (see `crate::publish`).
    #[serde(default, rename = "datasets")]
    _datasets: Option<IgnoredAny>,
    #[serde(default, rename = "skipped_files")]
    _skipped_files: Option<IgnoredAny>,
}

pub fn parse_event(event: &Value) -> Result<Request> {
    match event {
        _ if s3_event::is_notification(event) => s3_request(event),
        Value::Object(_) | Value::Array(_) => {
            let mut outputs = Vec::new();
            collect_outputs(event, &mut outputs)?;
            files_request(outputs)
        }
        _ => Err(Error::InvalidEvent(format!(
            "expected the ingest output ({{\"bucket\", \"files\"}}), a list of them, or an S3 \
             notification, got {event}"
        ))),
    }
}

/// The ingest outputs in `event`: an output; a list of them or of lists (the state machine
/// passes its two Maps' results, the dimension tables' and the fact tables', as a list of two
/// lists); or a Map iteration's result, `{"failed": false, "output": {...}}`, whose output is
/// taken, or `{"failed": true, ...}` (a table whose ingest failed), which is left out.
fn collect_outputs(event: &Value, outputs: &mut Vec<IngestOutput>) -> Result<()> {
    match event {
        Value::Array(items) => items
            .iter()
            .try_for_each(|item| collect_outputs(item, outputs)),
        Value::Object(fields) if fields.contains_key("failed") => {
            match (fields.get("failed"), fields.get("output")) {
                (Some(Value::Bool(true)), _) => Ok(()),
                (Some(Value::Bool(false)), Some(output)) => {
                    outputs.push(parse_output(output)?);
                    Ok(())
                }
                _ => Err(Error::InvalidEvent(format!(
                    "expected a Map iteration's result {{\"failed\": bool, \"output\": ...}}, \
                     got {event}"
                ))),
            }
        }
        _ => {
            outputs.push(parse_output(event)?);
            Ok(())
        }
    }
}

fn parse_output(v: &Value) -> Result<IngestOutput> {
    IngestOutput::deserialize(v).map_err(|e| {
        Error::InvalidEvent(format!(
            "expected the ingest output {{\"bucket\", \"files\": {{table: [key, ...]}}, ...}}: {e}"
        ))
    })
}

fn files_request(outputs: Vec<IngestOutput>) -> Result<Request> {
    let mut bucket: Option<String> = None;
    let mut files: Vec<RawFile> = Vec::new();
    for output in outputs {
        match &bucket {
            Some(b) if *b != output.bucket => {
                return Err(Error::InvalidEvent(format!(
                    "the ingest outputs name two buckets, {b:?} and {:?}",
                    output.bucket
                )));
            }
            _ => bucket = Some(output.bucket.clone()),
        }
        for (name, keys) in output.files {
            let spec = table(&name)?;
            for key in keys.into_vec() {
                let window_end = parse_file_key(spec.name, &key, "parquet").ok_or_else(|| {
                    Error::InvalidEvent(format!(
                        "{key:?} is not a raw data key of table {name} \
                         ({name}/YYYY/MM/DD/HHMMSSffffff.parquet)"
                    ))
                })?;
                if !files.iter().any(|f| f.key == key) {
                    files.push(RawFile::new(spec, key, window_end)?);
                }
            }
        }
    }
    files.sort_by(|a, b| (position(a.table), &a.key).cmp(&(position(b.table), &b.key)));
    match bucket {
        Some(bucket) => Ok(Request::Files { bucket, files }),
        None => Err(Error::InvalidEvent(
            "an empty list of ingest outputs".into(),
        )),
    }
}

fn position(table: &TableSpec) -> usize {
    TABLES
        .iter()
        .position(|t| std::ptr::eq(t, table))
        .expect("a registry table")
}

/// `files` as batches, each of the files of one window end (at most one per table, in registry
/// order), taken oldest window end first; except that a fact file older than the newest
/// dimension file waits until every dimension file is done, in batches of its own after them.
/// Each batch is transformed as one (its dimensions before its facts, its snapshot merges in
/// order) and the batches in turn. So whatever part of the batches an invocation gets through
/// before its deadline, the facts it wrote reference dimension rows it or an earlier
/// invocation wrote (the load applies an output's dimensions before its facts). The outputs of
/// a batch are named after its window end (an output built from several files after the latest
/// of them), so each dimension's processed keys sort in the order the batches ran, the order
/// the load applies them in (batches pairing each table's first file, then each one's second,
/// would name a joined dimension's outputs out of that order); fact rows are inserted by
/// version, in any order. One window end (every steady run) is one batch, as before files were
/// bounded.
pub fn batches(mut files: Vec<RawFile>) -> Vec<Vec<RawFile>> {
    let fact = |f: &RawFile| matches!(f.route, Route::Stream(Streamed::Fact { .. }));
    let last_dimension = files
        .iter()
        .filter(|f| !fact(f))
        .map(|f| f.window_end)
        .max();
    let waits = |f: &RawFile| fact(f) && last_dimension.is_some_and(|end| f.window_end < end);
    files.sort_by_key(|f| (waits(f), f.window_end, position(f.table)));
    let mut batches: Vec<Vec<RawFile>> = Vec::new();
    for file in files {
        match batches.last_mut() {
            Some(batch)
                if batch[0].window_end == file.window_end && waits(&batch[0]) == waits(&file) =>
            {
                batch.push(file)
            }
            _ => batches.push(vec![file]),
        }
    }
    batches
}

fn s3_request(event: &Value) -> Result<Request> {
    let mut window: Option<(String, DateTime<Utc>)> = None;
    for (bucket, key) in s3_event::objects(event).map_err(Error::InvalidEvent)? {
        let Some((_, window_end)) = raw_data_key(&key) else {
            // State objects and anything else that is not a raw data file.
            continue;
        };
        match &window {
            Some((b, t)) if *b != bucket || *t != window_end => {
                return Err(Error::InvalidEvent(format!(
                    "the notification's records belong to different ingest runs \
                     (s3://{b} at {t}, s3://{bucket}/{key})"
                )));
            }
            _ => window = Some((bucket, window_end)),
        }
    }
    Ok(match window {
        Some((bucket, window_end)) => Request::Window { bucket, window_end },
        None => Request::Nothing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn t() -> DateTime<Utc> {
        Utc.timestamp_micros(1_731_576_605_123_456).unwrap()
    }

    #[test]
    fn ingest_output_names_the_files() {
        let event = json!({
            "bucket": "raw",
            "files": {
                "sales_order": "sales_order/2024/11/14/093005123456.parquet",
                "staff": "staff/2024/11/14/093005123456.parquet"
            },
            "row_counts": {"sales_order": 3, "staff": 1, "design": 0},
            "has_new_data": true
        });
        let Request::Files { bucket, files } = parse_event(&event).unwrap() else {
            panic!("files request")
        };
        assert_eq!(bucket, "raw");
        let names: Vec<&str> = files.iter().map(|f| f.table.name).collect();
        assert_eq!(names, ["staff", "sales_order"], "registry order");
        assert!(files.iter().all(|f| f.window_end == t()));
    }

    #[test]
    fn a_list_of_outputs_from_a_map_state_is_merged() {
        let event = json!([
            {"bucket": "raw", "files": {"staff": "staff/2024/11/14/093005123456.parquet"},
             "row_counts": {"staff": 1}, "has_new_data": true},
            {"bucket": "raw", "files": {}, "row_counts": {"design": 0}, "has_new_data": false},
            {"bucket": "raw", "files": {"payment": "payment/2024/11/14/093006000000.parquet"}}
        ]);
        let Request::Files { files, .. } = parse_event(&event).unwrap() else {
            panic!("files request")
        };
        assert_eq!(files.len(), 2);
        assert_eq!(files[1].key, "payment/2024/11/14/093006000000.parquet");
    }

    #[test]
    fn several_files_of_a_table_come_in_batches_by_window_end_older_facts_last() {
        let event = json!({"bucket": "raw", "files": {
            "sales_order": [
                "sales_order/2024/11/14/093005123456.parquet",
                "sales_order/2024/11/14/080000000000.parquet",
                "sales_order/2024/11/14/090000000000.parquet"
            ],
            "staff": ["staff/2024/11/14/093005123456.parquet"],
            "currency": "currency/2024/11/14/093005123456.parquet"
        }});
        let Request::Files { files, .. } = parse_event(&event).unwrap() else {
            panic!("files request")
        };
        let keys =
            |files: &[RawFile]| -> Vec<String> { files.iter().map(|f| f.key.clone()).collect() };
        assert_eq!(
            keys(&files),
            [
                "currency/2024/11/14/093005123456.parquet",
                "staff/2024/11/14/093005123456.parquet",
                "sales_order/2024/11/14/080000000000.parquet",
                "sales_order/2024/11/14/090000000000.parquet",
                "sales_order/2024/11/14/093005123456.parquet",
            ]
        );
        let batches: Vec<Vec<String>> = batches(files).iter().map(|b| keys(b)).collect();
        assert_eq!(
            batches,
            [
                vec![
                    "currency/2024/11/14/093005123456.parquet",
                    "staff/2024/11/14/093005123456.parquet",
                    "sales_order/2024/11/14/093005123456.parquet",
                ],
                vec!["sales_order/2024/11/14/080000000000.parquet"],
                vec!["sales_order/2024/11/14/090000000000.parquet"],
            ],
            "by window end, facts older than the last dimension file after it"
        );
    }

    #[test]
    fn the_state_machines_two_lists_of_map_results_are_taken_as_they_are() {
        let event = json!([
            [{"failed": false, "output": {"bucket": "raw", "files": {
                "staff": ["staff/2024/11/14/093005123456.parquet"]}}}],
            [
                {"failed": true, "table": "payment", "output": {"has_new_data": false},
                 "error": {"Error": "SourceSchemaMismatch", "Cause": "..."}},
                {"failed": false, "output": {"bucket": "raw", "files": {
                    "sales_order": ["sales_order/2024/11/14/093005123456.parquet"]},
                    "complete": true, "remaining": null}}
            ]
        ]);
        let Request::Files { files, .. } = parse_event(&event).unwrap() else {
            panic!("files request")
        };
        let names: Vec<&str> = files.iter().map(|f| f.table.name).collect();
        assert_eq!(names, ["staff", "sales_order"]);
        let e = parse_event(&json!([{"failed": "no"}])).unwrap_err();
        assert!(e.to_string().contains("a Map iteration's result"), "{e}");
    }

    #[test]
    fn no_files_is_an_empty_request() {
        let event = json!({"bucket": "raw", "files": {}, "row_counts": {}, "has_new_data": false});
        assert_eq!(
            parse_event(&event).unwrap(),
            Request::Files {
                bucket: "raw".into(),
                files: vec![]
            }
        );
    }

    #[test]
    fn aws_shaped_notification_with_an_encoded_key() {
        // As S3 sends it: every field, the key URL-encoded.
        let event = json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "eu-west-2",
            "eventTime": "2024-11-14T09:30:06.000Z", "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "AWS:AROA"},
            "requestParameters": {"sourceIPAddress": "10.0.0.1"},
            "responseElements": {"x-amz-request-id": "1", "x-amz-id-2": "2"},
            "s3": {
                "s3SchemaVersion": "1.0", "configurationId": "transform",
                "bucket": {"name": "raw", "ownerIdentity": {"principalId": "A"},
                           "arn": "arn:aws:s3:::raw"},
                "object": {"key": "sales_order/2024/11/14/093005123456.parquet", "size": 1024,
                           "eTag": "d41d8cd98f00b204e9800998ecf8427e", "sequencer": "0A1B"}
            }
        }]});
        assert_eq!(
            parse_event(&event).unwrap(),
            Request::Window {
                bucket: "raw".into(),
                window_end: t()
            }
        );
    }

    #[test]
    fn moto_shaped_notification_without_identity_or_zone() {
        // As moto sends it: no userIdentity/requestParameters, eventTime without a zone.
        let event = json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "eu-west-2",
            "eventTime": "2024-11-14T09:30:06.000", "eventName": "ObjectCreated:Put",
            "s3": {"s3SchemaVersion": "1.0", "configurationId": "x",
                   "bucket": {"name": "raw", "arn": "arn:aws:s3:::raw"},
                   "object": {"key": "payment%2F2024%2F11%2F14%2F093005123456.parquet",
                              "size": 10, "eTag": "x", "versionId": null}}
        }]});
        assert_eq!(
            parse_event(&event).unwrap(),
            Request::Window {
                bucket: "raw".into(),
                window_end: t()
            }
        );
    }

    #[test]
    fn the_sample_events_parse() {
        let output: Value =
            serde_json::from_str(include_str!("../../../events/transform-ingest-output.json"))
                .unwrap();
        let Request::Files { files, .. } = parse_event(&output).unwrap() else {
            panic!("files request")
        };
        assert_eq!(files.len(), 4);
        let notification: Value = serde_json::from_str(include_str!(
            "../../../events/transform-s3-notification.json"
        ))
        .unwrap();
        assert!(matches!(
            parse_event(&notification).unwrap(),
            Request::Window { bucket, .. } if bucket == "totesys-ingest"
        ));
    }

    #[test]
    fn notifications_for_state_objects_ask_for_nothing() {
        let event = json!({"Records": [{"s3": {
            "bucket": {"name": "raw"},
            "object": {"key": "_state/ingest/staff.json"}
        }}]});
        assert_eq!(parse_event(&event).unwrap(), Request::Nothing);
    }

    #[test]
    fn malformed_events_are_invalid_events() {
        for (event, needle) in [
            (json!("x"), "expected the ingest output"),
            (json!({"bucket": "raw"}), "missing field `files`"),
            (
                json!({"bucket": "raw", "files": {}, "extra": 1}),
                "unknown field `extra`",
            ),
            (
                json!({"bucket": "raw", "files": {"staff": "design/2024/11/14/093005123456.parquet"}}),
                "is not a raw data key of table staff",
            ),
            (json!([]), "an empty list"),
            (
                json!([{"bucket": "a", "files": {}}, {"bucket": "b", "files": {}}]),
                "two buckets",
            ),
            (
                json!({"Records": [{"s3": {}}]}),
                "expected an S3 notification",
            ),
            (
                json!({"Records": [
                    {"s3": {"bucket": {"name": "raw"},
                            "object": {"key": "staff/2024/11/14/093005123456.parquet"}}},
                    {"s3": {"bucket": {"name": "raw"},
                            "object": {"key": "staff/2024/11/14/093006123456.parquet"}}}
                ]}),
                "different ingest runs",
            ),
        ] {
            let e = parse_event(&event).unwrap_err();
            assert_eq!(e.error_type(), "InvalidEvent", "{e}");
            assert!(e.to_string().contains(needle), "{e} lacks {needle}");
        }
        let e = parse_event(&json!({"bucket": "raw", "files": {"staffs": "x"}})).unwrap_err();
        assert_eq!(e.error_type(), "UnknownTable");
    }
}
