//! One processed file in one transaction: claimed in the ledger (key and ETag), applied (see
//! [`crate::apply`]), its rows changed recorded, committed; and the file as it is read, which
//! names itself in every error its bytes or values cause.

use arrow::array::{RecordBatch, new_null_array};
use arrow::datatypes::Schema;
use futures_util::TryStreamExt;
use tokio_postgres::Client;
use tracing::info;
use utils::parquet_io::{ParquetStream, open_parquet_version, schema_difference, unwrap_external};
use utils::store::S3Store;
use utils::warehouse::Kind;

use crate::apply::apply;
use crate::bulk::Bulk;
use crate::error::{Error, Result};
use crate::event::ProcessedFile;
use crate::schema::LEDGER;
use crate::{STAGE, views};

/// A processed file being loaded: the version (ETag) the ledger records is the one read.
#[derive(Clone, Copy)]
pub(crate) struct Loading<'a> {
    pub store: &'a S3Store,
    pub file: &'a ProcessedFile,
    pub etag: &'a str,
}

impl Loading<'_> {
    pub(crate) fn invalid(&self, reason: impl Into<String>) -> Error {
        invalid(self.store, self.file, reason)
    }

    /// Opens the file and checks its schema against the registry. A dimension file written
    /// before the dimensions had versions (their columns come last) is taken too, its rows
    /// without a version (see [`Loading::next_batch`]): such files may still be queued when
    /// the pipeline is upgraded.
    pub(crate) async fn open(&self) -> Result<ParquetStream> {
        let opened = open_parquet_version(self.store, &self.file.key, self.etag)
            .await
            .map_err(|e| self.read_error(e))?;
        let expected = self.file.table.arrow_schema();
        let problem = schema_difference(&opened.schema, &expected);
        let unversioned = || {
            let kept = expected.fields().len() - self.file.table.version().count();
            Schema::new(expected.fields()[..kept].to_vec())
        };
        match problem {
            Some(_) if schema_difference(&opened.schema, &unversioned()).is_none() => Ok(opened),
            Some(p) => {
                Err(self.invalid(format!("schema does not match the warehouse registry: {p}")))
            }
            None => Ok(opened),
        }
    }

    fn read_error(&self, e: utils::Error) -> Error {
        if e.is_transient() {
            Error::Shared(e)
        } else {
            self.invalid(e.to_string())
        }
    }

    /// The file's next batch, as the registry's schema types it.
    pub(crate) async fn next_batch(
        &self,
        opened: &mut ParquetStream,
    ) -> Result<Option<RecordBatch>> {
        let Some(batch) = opened
            .stream
            .try_next()
            .await
            .map_err(|e| self.read_error(unwrap_external(e)))?
        else {
            return Ok(None);
        };
        let schema = self.file.table.arrow_schema();
        let mut columns = batch.columns().to_vec();
        // A file without the versions: NULL, older than any version (see `apply_sql`).
        for field in &schema.fields()[columns.len()..] {
            columns.push(new_null_array(field.data_type(), batch.num_rows()));
        }
        RecordBatch::try_new(schema, columns)
            .map(Some)
            .map_err(|e| self.invalid(e.to_string()))
    }

    /// A database error while staging or applying a file: what the file's values caused is
    /// `InvalidInput` (or `MissingDimension`), the rest keeps its own type.
    pub(crate) fn db_error(&self, e: tokio_postgres::Error) -> Error {
        let Some(db) = e.as_db_error() else {
            return Error::from(e);
        };
        let code = db.code().code();
        let detail = utils::error::describe_db_error(&e);
        if code == "23503" {
            Error::MissingDimension {
                table: self.file.table.name,
                bucket: self.store.bucket().to_owned(),
                key: self.file.key.clone(),
                detail,
            }
        } else if code == "21000" {
            self.invalid(format!(
                "the file holds the same key more than once ({detail})"
            ))
        } else if code.starts_with("22") || code.starts_with("23") {
            self.invalid(detail)
        } else {
            Error::from(e)
        }
    }
}

fn invalid(store: &S3Store, file: &ProcessedFile, reason: impl Into<String>) -> Error {
    Error::InvalidInput {
        table: file.table.name,
        bucket: store.bucket().to_owned(),
        key: file.key.clone(),
        reason: reason.into(),
    }
}

/// Loads one file in one transaction: `Some(rows inserted or updated)`, or `None` when the
/// ledger already holds it.
pub(crate) async fn load_file(
    client: &mut Client,
    store: &S3Store,
    file: &ProcessedFile,
    bulk: &mut Bulk,
) -> Result<Option<(u64, bool)>> {
    let started = std::time::Instant::now();
    let table = file.table;
    let etag = store
        .etag(&file.key)
        .await?
        .ok_or_else(|| invalid(store, file, "the file does not exist"))?;
    let loading = Loading {
        store,
        file,
        etag: &etag,
    };
    // The footer and schema are checked before the transaction starts. Every read is of the
    // version whose ETag the ledger records.
    let opened = loading.open().await?;
    let bytes = opened.bytes;
    let count = |n: u64| i64::try_from(n).map_err(|_| loading.invalid(format!("{n} rows")));
    let rows = count(opened.rows)?;

    let tx = client.transaction().await?;
    if table.kind == Kind::Dimension {
        // One file of a dimension at a time: two upserting the same keys in different orders
        // would deadlock. Their order does not matter (see `apply_sql`).
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&format!("{LEDGER}:{}", table.name)],
        )
        .await?;
    }
    let claimed = tx
        .execute(
            &format!(
                "INSERT INTO {LEDGER} (file_key, etag, table_name, rows, changed)
                 VALUES ($1, $2, $3, $4, 0) ON CONFLICT DO NOTHING"
            ),
            &[&file.key, &etag, &table.name, &rows],
        )
        .await?;
    if claimed == 0 {
        tx.rollback().await?;
        info!(
            table = table.name,
            key = file.key.as_str(),
            "already loaded; skipped"
        );
        return Ok(None);
    }
    let checks = bulk.prepare(&tx, table, opened.rows).await?;
    let direct = bulk.direct(opened.rows).then_some(checks);
    let (changed, set_based) = apply(&tx, loading, opened, direct).await?;
    tx.execute(
        &format!("UPDATE {LEDGER} SET changed = $3 WHERE file_key = $1 AND etag = $2"),
        &[&file.key, &etag, &count(changed)?],
    )
    .await?;
    if changed > 0 {
        views::mark_changed(&tx, table.name).await?;
    }
    tx.commit().await?;
    let seconds = started.elapsed().as_secs_f64();
    info!(
        table = table.name,
        key = file.key.as_str(),
        rows,
        changed,
        foreign_keys_checked_set_based = set_based,
        seconds,
        rows_per_second = (rows as f64 / seconds.max(1e-6)).round() as u64,
        "loaded"
    );
    utils::metrics::emit(
        STAGE,
        Some(table.name),
        &[
            (utils::metrics::ROWS, rows as f64),
            (utils::metrics::BYTES, bytes as f64),
            (utils::metrics::CHANGED_ROWS, changed as f64),
        ],
    );
    Ok(Some((changed, set_based)))
}
