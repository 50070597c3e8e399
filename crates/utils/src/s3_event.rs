//! S3 `ObjectCreated` notifications, read with a tolerant struct of our own: only the bucket
//! name and the key, because moto's notifications lack fields (`userIdentity`,
//! `requestParameters`, a zoned `eventTime`) that the strict `aws_lambda_events` type requires.

use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "Records")]
    records: Vec<Record>,
}

#[derive(Deserialize)]
struct Record {
    s3: Entity,
}

#[derive(Deserialize)]
struct Entity {
    bucket: Bucket,
    object: Object,
}

#[derive(Deserialize)]
struct Bucket {
    name: String,
}

#[derive(Deserialize)]
struct Object {
    key: String,
}

/// Whether `event` looks like an S3 notification rather than a Step Functions payload.
pub fn is_notification(event: &Value) -> bool {
    matches!(event, Value::Object(fields) if fields.contains_key("Records"))
}

/// The `(bucket, key)` of every record, keys URL-decoded. The error says what was expected.
pub fn objects(event: &Value) -> Result<Vec<(String, String)>, String> {
    let notification = Notification::deserialize(event).map_err(|e| {
        format!("expected an S3 notification (Records[].s3.bucket.name, .object.key): {e}")
    })?;
    notification
        .records
        .into_iter()
        .map(|r| Ok((r.s3.bucket.name, decode_key(&r.s3.object.key)?)))
        .collect()
}

/// Object keys in S3 notifications are URL-encoded, with `+` for a space.
pub fn decode_key(key: &str) -> Result<String, String> {
    percent_decode_str(&key.replace('+', " "))
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|e| format!("object key {key:?} is not UTF-8: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_url_decoded() {
        assert_eq!(decode_key("a+b%2Bc%2Fd").unwrap(), "a b+c/d");
        assert_eq!(
            decode_key("staff%2F2024%2F11%2F14%2F093005123456.parquet").unwrap(),
            "staff/2024/11/14/093005123456.parquet"
        );
        assert!(decode_key("%FF").is_err());
    }

    #[test]
    fn records_give_bucket_and_decoded_key() {
        let event = json!({"Records": [{"s3": {
            "bucket": {"name": "b", "arn": "arn:aws:s3:::b"},
            "object": {"key": "x%2Fy+z.parquet", "size": 1}
        }}]});
        assert!(is_notification(&event));
        assert_eq!(
            objects(&event).unwrap(),
            [("b".to_owned(), "x/y z.parquet".to_owned())]
        );
        assert!(!is_notification(&json!({"bucket": "b"})));
        assert!(
            objects(&json!({"Records": [{"s3": {}}]}))
                .unwrap_err()
                .contains("expected an S3 notification")
        );
    }
}
