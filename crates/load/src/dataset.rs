//! Declared datasets' files into their warehouse tables, each file exactly once.
//!
//! The table (and its views) is created from the declaration if it is missing; a table that is
//! there is the user's and is never altered. A file loads in one transaction, as a star schema
//! file does: claimed in the ledger by key and ETag (a file the ledger holds is skipped),
//! streamed row group by row group into a temporary staging table by `COPY`, and applied by
//! one statement under the declared write mode (see `datasets::pg::apply`), or, for `append`
//! and for a keyed file into an empty table (a first load) or of at least `LOAD_BULK_MIN_ROWS`
//! rows, copied straight into the table (inside a savepoint, staged after all where a key is
//! met twice or the table held one); a table whose rows changed is marked for its views'
//! refresh in the same transaction.

use bytes::Bytes;
use datasets::Dataset;
use datasets::decl::View;
use datasets::pg;
use futures_util::{SinkExt, TryStreamExt};
use parquet::arrow::async_reader::ParquetRecordBatchStream;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;
use tracing::{info, warn};
use utils::parquet_io::{
    S3ParquetReader, open_parquet_version, schema_difference, unwrap_external,
};
use utils::store::S3Store;

use crate::bulk::Bulk;
use crate::error::{Error, Result};
use crate::schema::LEDGER;
use crate::{STAGE, views};

/// The dataset whose processed files `key` is one of.
pub fn dataset_of<'d>(datasets: &'d [Dataset], key: &str) -> Option<&'d Dataset> {
    let name = key.split_once('/')?.0;
    datasets.iter().find(|d| d.name == name)
}

/// Creates the tables and views of `datasets` that are missing, one invocation at a time:
/// every table before any view, so a view may join the tables of several datasets.
pub async fn prepare(client: &mut Client, datasets: &[&Dataset]) -> Result<()> {
    let mut todo: Vec<(&Dataset, &str, Option<&View>)> = Vec::new();
    for d in datasets {
        todo.extend(d.warehouse_table().map(|t| (*d, t, None)));
    }
    for d in datasets {
        for v in d.warehouse.iter().flat_map(|w| &w.views) {
            todo.push((*d, &v.name, Some(v)));
        }
    }
    for (dataset, name, view) in todo {
        // Nothing to do, and no lock taken, when it is there.
        let present: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&pg::ident(name)])
            .await?
            .get(0);
        if present {
            continue;
        }
        let create = match view {
            None => pg::create_table(dataset, name),
            Some(view) => pg::create_view(view),
        };
        let sql =
            format!("BEGIN; SELECT pg_advisory_xact_lock(hashtext('{LEDGER}')); {create}; COMMIT");
        client.batch_execute(&sql).await.map_err(|e| {
            // A declaration's SQL the warehouse refuses is the deployment's to fix.
            if e.as_db_error().is_some() {
                Error::WarehouseSchema(format!(
                    "dataset {}: creating {name}: {}",
                    dataset.name,
                    utils::error::describe_db_error(&e)
                ))
            } else {
                Error::from(e)
            }
        })?;
        info!(dataset = dataset.name, name, "created as declared");
    }
    Ok(())
}

/// What became of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// Rows inserted or updated.
    Changed(u64),
    /// The ledger holds it already.
    Skipped,
    /// Queued before transform copied it: it stays queued.
    NotThereYet,
}

/// Whether `table` has no row (a first load).
async fn empty(tx: &tokio_postgres::Transaction<'_>, table: &str) -> Result<bool> {
    let sql = format!("SELECT NOT EXISTS (SELECT FROM {})", pg::ident(table));
    Ok(tx.query_one(&sql, &[]).await?.get(0))
}

/// Why a file's rows did not all go in.
enum Failed {
    /// Reading the file.
    Read(utils::Error),
    /// The warehouse refused them.
    Db(tokio_postgres::Error),
}

impl Failed {
    fn into_error(
        self,
        read_error: impl Fn(utils::Error) -> Error,
        refused: impl Fn(tokio_postgres::Error) -> Error,
    ) -> Error {
        match self {
            Failed::Read(e) => read_error(e),
            Failed::Db(e) => refused(e),
        }
    }
}

/// How a file's rows are sent.
#[derive(Clone, Copy)]
enum Format {
    /// Each value as PostgreSQL sends it: into a table (or its staging table, which has its
    /// column types) whose columns have the declared types.
    Binary,
    /// Text, which PostgreSQL casts to each column's type: into a table the user made with
    /// other types.
    Text,
}

/// How rows go into `table` (or its staging table): binary where each column has the type
/// the declaration gives it (as when the load made the table), else text.
async fn format_for(
    tx: &tokio_postgres::Transaction<'_>,
    dataset: &Dataset,
    table: &str,
) -> Result<Format> {
    let types: std::collections::HashMap<String, String> = tx
        .query(
            "SELECT attname::text, atttypid::regtype::text FROM pg_attribute
             WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped",
            &[&pg::ident(table)],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let same = dataset.columns.iter().all(|c| {
        types
            .get(&c.name)
            .is_some_and(|t| pg::binary_types(c.kind).contains(&t.as_str()))
    });
    Ok(if same { Format::Binary } else { Format::Text })
}

/// Streams the file's rows through `COPY`, a chunk at a time: the rows copied.
async fn copy_rows(
    client: &tokio_postgres::Transaction<'_>,
    dataset: &Dataset,
    table: &str,
    format: Format,
    stream: &mut ParquetRecordBatchStream<S3ParquetReader>,
) -> std::result::Result<u64, Failed> {
    let statement = match format {
        Format::Binary => pg::copy_in_binary(dataset, table),
        Format::Text => pg::copy_in(dataset, table),
    };
    let sink = client.copy_in(&statement).await.map_err(Failed::Db)?;
    let mut sink = std::pin::pin!(sink);
    let mut chunk = Vec::with_capacity(COPY_CHUNK + 64 * 1024);
    if let Format::Binary = format {
        chunk.extend_from_slice(pg::BINARY_HEADER);
    }
    while let Some(batch) = stream
        .try_next()
        .await
        .map_err(|e| Failed::Read(unwrap_external(e)))?
    {
        match format {
            Format::Binary => pg::copy_binary(&batch, &mut chunk),
            Format::Text => pg::copy_text(&batch, &mut chunk),
        }
        if chunk.len() >= COPY_CHUNK {
            sink.send(Bytes::from(std::mem::take(&mut chunk)))
                .await
                .map_err(Failed::Db)?;
        }
    }
    if let Format::Binary = format {
        chunk.extend_from_slice(pg::BINARY_TRAILER);
    }
    if !chunk.is_empty() {
        sink.send(Bytes::from(chunk)).await.map_err(Failed::Db)?;
    }
    sink.as_mut().finish().await.map_err(Failed::Db)
}

/// Loads one processed file of `dataset` in one transaction.
pub async fn load_file(
    client: &mut Client,
    store: &S3Store,
    dataset: &'static Dataset,
    table: &'static str,
    key: &str,
    bulk: &mut Bulk,
) -> Result<Loaded> {
    let started = std::time::Instant::now();
    let invalid = |reason: String| Error::InvalidInput {
        table,
        bucket: store.bucket().to_owned(),
        key: key.to_owned(),
        reason,
    };
    let Some(etag) = store.etag(key).await? else {
        // Transform queues a file before it copies it: it stays queued until it is there.
        warn!(
            dataset = dataset.name,
            key, "queued and not published yet; left queued"
        );
        return Ok(Loaded::NotThereYet);
    };
    let read_error = |e: utils::Error| {
        if e.is_transient() {
            Error::Shared(e)
        } else {
            invalid(e.to_string())
        }
    };
    let mut opened = open_parquet_version(store, key, &etag)
        .await
        .map_err(read_error)?;
    if let Some(problem) = schema_difference(&opened.schema, &dataset.schema()) {
        return Err(invalid(format!(
            "schema does not match dataset {}'s declaration: {problem}",
            dataset.name
        )));
    }
    let rows = i64::try_from(opened.rows).map_err(|_| invalid(format!("{} rows", opened.rows)))?;
    let refused = |e: tokio_postgres::Error| match e.as_db_error().map(|d| d.code().code()) {
        Some(code) if code.starts_with("22") || code.starts_with("23") => {
            invalid(utils::error::describe_db_error(&e))
        }
        _ => Error::from(e),
    };

    let mut tx = client.transaction().await?;
    let claimed = tx
        .execute(
            &format!(
                "INSERT INTO {LEDGER} (file_key, etag, table_name, rows, changed)
                 VALUES ($1, $2, $3, $4, 0) ON CONFLICT DO NOTHING"
            ),
            &[&key, &etag, &table, &rows],
        )
        .await?;
    if claimed == 0 {
        tx.rollback().await?;
        info!(dataset = dataset.name, key, "already loaded; skipped");
        return Ok(Loaded::Skipped);
    }
    // Rows matched by no key (append) go straight into the table: nothing to stage. So do a
    // keyed file's into an empty table (a first load) or a large one's (the staging table and
    // the `INSERT ... SELECT` cost as much again as the COPY), inside a savepoint: where no key
    // is met twice or held already, that is what the write mode would have done, without the
    // staging table; where one is, the unique index stops the COPY, which is undone, and the
    // file is staged as any other (and so are the table's later files this invocation).
    let keyed = pg::keyed(dataset);
    let mut changed = None;
    // The staging table has the table's column types, so one format serves both.
    let format = format_for(&tx, dataset, table).await?;
    if keyed && (bulk.dataset_direct(table, opened.rows) || empty(&tx, table).await?) {
        let direct = tx.savepoint("direct_copy").await?;
        match copy_rows(&direct, dataset, table, format, &mut opened.stream).await {
            Ok(copied) => {
                direct.commit().await?;
                changed = Some(copied);
            }
            Err(Failed::Db(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                direct.rollback().await?;
                bulk.key_met(table);
                info!(
                    dataset = dataset.name,
                    key,
                    "a key met twice or held already: the file is staged instead of copied \
                     straight in"
                );
                opened = open_parquet_version(store, key, &etag)
                    .await
                    .map_err(read_error)?;
            }
            Err(Failed::Db(e)) => return Err(refused(e)),
            Err(Failed::Read(e)) => return Err(read_error(e)),
        }
    }
    let changed = match changed {
        Some(copied) => copied,
        None if !keyed => copy_rows(&tx, dataset, table, format, &mut opened.stream)
            .await
            .map_err(|f| f.into_error(read_error, refused))?,
        None => {
            tx.batch_execute(&pg::create_stage(dataset, table)).await?;
            copy_rows(&tx, dataset, pg::STAGE, format, &mut opened.stream)
                .await
                .map_err(|f| f.into_error(read_error, refused))?;
            tx.execute(&pg::apply(dataset, table), &[])
                .await
                .map_err(refused)?
        }
    };
    tx.execute(
        &format!("UPDATE {LEDGER} SET changed = $3 WHERE file_key = $1 AND etag = $2"),
        &[&key, &etag, &(changed as i64)],
    )
    .await?;
    if changed > 0 {
        views::mark_changed(&tx, table).await?;
    }
    tx.commit().await?;
    let seconds = started.elapsed().as_secs_f64();
    info!(
        dataset = dataset.name,
        table, key, rows, changed, seconds, "loaded"
    );
    utils::metrics::emit(
        STAGE,
        Some(table),
        &[
            (utils::metrics::ROWS, rows as f64),
            (utils::metrics::BYTES, opened.bytes as f64),
            (utils::metrics::CHANGED_ROWS, changed as f64),
        ],
    );
    Ok(Loaded::Changed(changed))
}

/// How much `COPY` text is sent at once.
const COPY_CHUNK: usize = 1024 * 1024;
