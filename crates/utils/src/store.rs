//! S3 object I/O for one bucket, shared by all three Lambdas.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tracing::instrument;

use crate::error::{Error, Result};
use crate::keys::{parse_file_key, table_prefix};

/// What a listing or a `HeadObject` says of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    /// As S3 gives it, quoted.
    pub etag: String,
    pub last_modified: DateTime<Utc>,
    pub size: u64,
}

fn time(t: &aws_sdk_s3::primitives::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos()).unwrap_or_default()
}

/// A `CopySource` key is URL-encoded, its `/` kept.
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Loads the AWS configuration the standard way (`AWS_REGION`, `AWS_ENDPOINT_URL`, credentials
/// chain).
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// An S3 client. With a custom endpoint (a local S3 API such as moto) it addresses buckets by
/// path, since `bucket.localhost` does not resolve everywhere.
pub fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let s3 = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(config.endpoint_url().is_some())
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}

/// True for SDK failures a retry can cure: timeouts, connection failures, unreadable
/// responses, throttling and 5xx answers.
pub fn is_transient_sdk_error<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            status >= 500
                || status == 429
                || matches!(
                    se.err().code(),
                    Some(
                        "SlowDown"
                            | "Throttling"
                            | "ThrottlingException"
                            | "RequestTimeout"
                            | "InternalError"
                            | "InternalServiceError"
                            | "ServiceUnavailable"
                    )
                )
        }
        _ => false,
    }
}

/// Whether a conditional request failed its condition (412 Precondition Failed).
fn precondition_failed<E>(e: &SdkError<E, HttpResponse>) -> bool {
    e.raw_response().map(|r| r.status().as_u16()) == Some(412)
}

/// `Code: message (HTTP status)` for service errors, the full cause chain otherwise.
pub fn describe_sdk_error<E>(e: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e {
        SdkError::ServiceError(se) => format!(
            "{}: {} (HTTP {})",
            se.err().code().unwrap_or("unknown error"),
            se.err().message().unwrap_or("no message"),
            se.raw().status().as_u16()
        ),
        other => DisplayErrorContext(other).to_string(),
    }
}

/// One bucket, and a count of the requests made through this handle (so callers can log, and
/// tests can prove, how many requests an operation costs).
#[derive(Clone, Debug)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    requests: Arc<AtomicU64>,
}

impl S3Store {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        S3Store {
            client,
            bucket: bucket.into(),
            requests: Arc::default(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Checks that an event's `bucket` is this store's; the error says both.
    pub fn expect_bucket(&self, bucket: &str) -> std::result::Result<(), String> {
        if bucket == self.bucket {
            Ok(())
        } else {
            Err(format!(
                "the event names bucket {bucket:?}, but this function works on {:?}",
                self.bucket
            ))
        }
    }

    /// Requests sent through this store (and its clones) so far.
    #[cfg(any(test, feature = "test-util"))]
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A state object at `key` that cannot be read as what it should hold.
    pub fn corrupt(&self, key: &str, reason: impl std::fmt::Display) -> Error {
        Error::CorruptState {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            reason: reason.to_string(),
        }
    }

    fn error<E>(&self, operation: &'static str, key: &str, e: SdkError<E, HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        Error::Storage {
            operation,
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            transient: is_transient_sdk_error(&e),
            message: describe_sdk_error(&e),
        }
    }

    /// A conditional GetObject's failure: an object replaced since its ETag was read fails
    /// transiently (its new version is for the next run), instead of mixing two versions.
    fn get_error<E>(&self, key: &str, etag: &str, e: SdkError<E, HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        if precondition_failed(&e) {
            Error::Storage {
                operation: "GetObject",
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                message: format!(
                    "the object was replaced since it was read: its ETag is no longer {etag}"
                ),
                transient: true,
            }
        } else {
            self.error("GetObject", key, e)
        }
    }

    /// The object's bytes, or `None` if there is no such key.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.get_version(key).await?.map(|(bytes, _)| bytes))
    }

    /// The object's bytes and ETag, or `None` if there is no such key: the version a
    /// [`S3Store::put_if`] can be conditional on.
    #[instrument(skip(self), fields(bucket = %self.bucket))]
    pub async fn get_version(&self, key: &str) -> Result<Option<(Bytes, String)>> {
        self.count();
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => {
                return Ok(None);
            }
            Err(e) => return Err(self.error("GetObject", key, e)),
        };
        let etag = out.e_tag().unwrap_or_default().to_owned();
        Ok(Some((self.body(key, out.body).await?, etag)))
    }

    /// Writes `body` only if the object is still the version read: the one whose ETag is
    /// `read`, or no object at all for `None` (`If-Match`, `If-None-Match: *`). `Ok(false)`
    /// when another writer got there first (412, 409 for a concurrent conditional write, 404
    /// when the version was deleted): read again, merge, try again.
    pub async fn put_if(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
        read: Option<&str>,
    ) -> Result<bool> {
        Ok(self
            .put_if_version(key, body, content_type, read)
            .await?
            .is_some())
    }

    /// [`S3Store::put_if`] that returns the new version's ETag (`None`: another writer got
    /// there first), for the next conditional write: read from the response, as a read after
    /// it could see a third writer's version.
    #[instrument(skip(self, body), fields(bucket = %self.bucket, bytes = body.len()))]
    pub async fn put_if_version(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
        read: Option<&str>,
    ) -> Result<Option<String>> {
        let request = self.put_object(key, body, content_type);
        let request = match read {
            Some(etag) => request.if_match(etag),
            None => request.if_none_match("*"),
        };
        match request.send().await {
            Ok(out) => out
                .e_tag()
                .map(|e| Some(e.to_owned()))
                .ok_or_else(|| Error::Storage {
                    operation: "PutObject",
                    bucket: self.bucket.clone(),
                    key: key.to_owned(),
                    message: "the response has no ETag".into(),
                    transient: true,
                }),
            Err(e)
                if matches!(
                    e.raw_response().map(|r| r.status().as_u16()),
                    Some(404 | 409)
                ) || precondition_failed(&e) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.error("PutObject", key, e)),
        }
    }

    /// Reads a GetObject response body to the end; a broken body is worth a retry.
    async fn body(&self, key: &str, body: ByteStream) -> Result<Bytes> {
        let body = body.collect().await.map_err(|e| Error::Storage {
            operation: "GetObject",
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            message: format!("reading the body: {e}"),
            transient: true,
        })?;
        Ok(body.into_bytes())
    }

    /// The bytes of `range` (an HTTP range such as `bytes=0-99` or `bytes=-8`) of an object
    /// that must exist; with `etag`, of that version only (`If-Match`): an object replaced
    /// since its ETag was read fails, transiently, instead of mixing two versions' bytes.
    #[instrument(skip(self), fields(bucket = %self.bucket))]
    pub async fn get_range(&self, key: &str, range: &str, etag: Option<&str>) -> Result<Bytes> {
        self.count();
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(range)
            .set_if_match(etag.map(str::to_owned))
            .send()
            .await
            .map_err(|e| self.get_error(key, etag.unwrap_or_default(), e))?;
        self.body(key, out.body).await
    }

    /// The object's ETag, or `None` if there is no such key.
    pub async fn etag(&self, key: &str) -> Result<Option<String>> {
        Ok(self.head(key).await?.map(|o| o.etag))
    }

    #[instrument(skip(self, body), fields(bucket = %self.bucket, bytes = body.len()))]
    pub async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<()> {
        self.put_object(key, body, content_type)
            .send()
            .await
            .map_err(|e| self.error("PutObject", key, e))?;
        Ok(())
    }

    fn put_object(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        self.count();
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
    }

    #[instrument(skip(self), fields(bucket = %self.bucket))]
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.count();
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error("DeleteObject", key, e))?;
        Ok(())
    }

    /// Every key under `prefix` that sorts after `start_after`, in order, following
    /// continuation tokens through as many pages as there are.
    pub async fn list_keys(&self, prefix: &str, start_after: Option<&str>) -> Result<Vec<String>> {
        let objects = self.list_objects_after(prefix, start_after).await?;
        Ok(objects.into_iter().map(|o| o.key).collect())
    }

    /// Every object under `prefix`, in key order, with its ETag, time and size (one
    /// `ListObjectsV2` page per thousand).
    pub async fn list_objects(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.list_objects_after(prefix, None).await
    }

    /// [`S3Store::list_objects`] of the keys that sort after `start_after`.
    #[instrument(skip(self), fields(bucket = %self.bucket))]
    async fn list_objects_after(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<Vec<ObjectInfo>> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            self.count();
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_start_after(start_after.map(str::to_owned))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.error("ListObjectsV2", prefix, e))?;
            for o in out.contents() {
                if let Some(key) = o.key() {
                    objects.push(ObjectInfo {
                        key: key.to_owned(),
                        etag: o.e_tag().unwrap_or_default().to_owned(),
                        last_modified: o.last_modified().map_or_else(Default::default, time),
                        size: o.size().unwrap_or_default().max(0) as u64,
                    });
                }
            }
            match out.next_continuation_token() {
                Some(next) if out.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => return Ok(objects),
            }
        }
    }

    /// The object's ETag, time and size, or `None` if there is no such key.
    #[instrument(skip(self), fields(bucket = %self.bucket))]
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        self.count();
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectInfo {
                key: key.to_owned(),
                etag: out.e_tag().unwrap_or_default().to_owned(),
                last_modified: out.last_modified().map_or_else(Default::default, time),
                size: out.content_length().unwrap_or_default().max(0) as u64,
            })),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_not_found()) => Ok(None),
            Err(e) => Err(self.error("HeadObject", key, e)),
        }
    }

    /// The body of the version `etag` of `key`, as a stream: an object replaced since is a
    /// transient error, as for [`S3Store::get_range`].
    #[instrument(skip(self), fields(bucket = %self.bucket))]
    pub async fn stream(&self, key: &str, etag: &str) -> Result<ByteStream> {
        self.count();
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .if_match(etag)
            .send()
            .await
            .map_err(|e| self.get_error(key, etag, e))?;
        Ok(out.body)
    }

    /// Copies `key` of bucket `from` to the same key of this bucket, server-side.
    #[instrument(skip(self), fields(bucket = %self.bucket))]
    pub async fn copy_from(&self, from: &str, key: &str) -> Result<()> {
        self.count();
        let source = format!(
            "{from}/{}",
            percent_encoding::utf8_percent_encode(key, COPY_SOURCE)
        );
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(key)
            .copy_source(source)
            .send()
            .await
            .map_err(|e| self.error("CopyObject", key, e))?;
        Ok(())
    }

    /// The data files of `table` (keys [`crate::keys::parquet_key`] wrote) that sort after
    /// `start_after`, oldest first, each with its time; other objects under the table's prefix
    /// are passed over.
    pub async fn data_files(
        &self,
        table: &str,
        start_after: Option<&str>,
    ) -> Result<Vec<(DateTime<Utc>, String)>> {
        let mut files: Vec<(DateTime<Utc>, String)> = self
            .list_keys(&table_prefix(table), start_after)
            .await?
            .into_iter()
            .filter_map(|k| parse_file_key(table, &k, "parquet").map(|t| (t, k)))
            .collect();
        files.sort();
        Ok(files)
    }

    pub(crate) async fn create_multipart_upload(
        &self,
        key: &str,
        content_type: &str,
    ) -> Result<String> {
        self.count();
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| self.error("CreateMultipartUpload", key, e))?;
        out.upload_id()
            .map(str::to_owned)
            .ok_or_else(|| Error::Storage {
                operation: "CreateMultipartUpload",
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                message: "no upload id in the response".into(),
                transient: true,
            })
    }

    pub(crate) async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
    ) -> Result<CompletedPart> {
        self.count();
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.error("UploadPart", key, e))?;
        Ok(CompletedPart::builder()
            .part_number(part_number)
            .set_e_tag(out.e_tag().map(str::to_owned))
            .build())
    }

    /// Completes a multipart upload; with `if_absent`, only if no object is at `key`
    /// (`If-None-Match: *`): `Ok(false)` when one is (the upload is left for the caller to
    /// abort).
    pub(crate) async fn complete_multipart_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        if_absent: bool,
    ) -> Result<bool> {
        self.count();
        let sent = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .set_if_none_match(if_absent.then(|| "*".to_owned()))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) if if_absent && precondition_failed(&e) => Ok(false),
            Err(e) => Err(self.error("CompleteMultipartUpload", key, e)),
        }
    }

    pub(crate) async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> Result<()> {
        self.count();
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| self.error("AbortMultipartUpload", key, e))?;
        Ok(())
    }
}
