//! `etl dataset check`: a landed file read under its dataset's declaration on this machine, as
//! the pipeline will read it: how many rows become typed rows, which are quarantined and why,
//! and (with an output path) the typed rows as the Parquet file the raw zone would hold. An
//! export with encrypted fields is decrypted as ingest decrypts it: each data key by the key
//! service (KMS, with the caller's credentials), under the declared key only.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use datasets::crypt::DataKeys;
use datasets::{BatchLimits, Dataset, LandedFile};
use parquet::arrow::ArrowWriter;
use serde::Serialize;

use crate::{Error, Result};

/// What reading the file gave.
#[derive(Debug, Serialize)]
pub struct Checked {
    pub dataset: String,
    pub file: String,
    pub rows: u64,
    pub quarantined: Vec<QuarantinedRow>,
}

#[derive(Debug, Serialize)]
pub struct QuarantinedRow {
    pub line: u64,
    pub column: Option<String>,
    pub reason: String,
    pub value: String,
}

/// Reads `file` under the declaration at `declaration`, in bounded batches, its encrypted
/// fields (if declared) with `keys`; writes the typed rows to `parquet` if given (removed
/// again if the file turns out unreadable part way). Blocking: `keys` may call a service.
pub fn check(
    declaration: &Path,
    file: &Path,
    parquet: Option<&Path>,
    keys: Box<dyn DataKeys + '_>,
) -> Result<Checked> {
    let dataset = Dataset::load(declaration).map_err(|e| Error::Usage(e.to_string()))?;
    let name = file.display().to_string();
    let read = File::open(file).map_err(|e| Error::Usage(format!("{name}: {e}")))?;
    let mut writer = match parquet {
        Some(path) => {
            let out =
                File::create(path).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
            let schema = std::sync::Arc::new(dataset.schema());
            Some(ArrowWriter::try_new(out, schema, None).map_err(|e| written(path, e))?)
        }
        None => None,
    };
    let result = read_all(&dataset, BufReader::new(read), &name, writer.as_mut(), keys);
    if let (Some(path), Err(_)) = (parquet, &result) {
        let _ = std::fs::remove_file(path);
    }
    let checked = result?;
    if let (Some(path), Some(w)) = (parquet, writer) {
        w.close().map_err(|e| written(path, e))?;
    }
    Ok(checked)
}

fn read_all(
    dataset: &Dataset,
    read: impl std::io::Read + Send,
    name: &str,
    mut writer: Option<&mut ArrowWriter<File>>,
    keys: Box<dyn DataKeys + '_>,
) -> Result<Checked> {
    let invalid = |e: datasets::Error| Error::Usage(e.to_string());
    let mut file = LandedFile::open(read, dataset, name)
        .map_err(invalid)?
        .with_keys(keys);
    let mut checked = Checked {
        dataset: dataset.name.clone(),
        file: name.into(),
        rows: 0,
        quarantined: Vec::new(),
    };
    while let Some(batch) = file.next_batch(BatchLimits::default()).map_err(invalid)? {
        checked.rows += batch.rows.num_rows() as u64;
        checked
            .quarantined
            .extend(batch.quarantined.into_iter().map(|q| QuarantinedRow {
                line: q.line,
                column: q.column,
                reason: q.reason,
                value: q.value,
            }));
        if let Some(w) = writer.as_deref_mut() {
            w.write(&batch.rows)
                .map_err(|e| Error::Usage(format!("writing the typed rows: {e}")))?;
        }
    }
    Ok(checked)
}

/// KMS as ingest asks it (each data key once, under the declared key only), reached only when
/// a record's data key is asked for: a file without encrypted fields needs no AWS settings.
/// Used from a blocking thread of the runtime.
#[derive(Default)]
pub struct Kms(Option<ingest::dataset::KmsKeys>);

impl DataKeys for Kms {
    fn data_key(
        &mut self,
        key_id: &str,
        encrypted: &[u8],
    ) -> std::result::Result<Vec<u8>, datasets::crypt::KeyError> {
        let keys = self.0.get_or_insert_with(|| {
            let sdk = tokio::runtime::Handle::current().block_on(utils::store::aws_config());
            ingest::dataset::KmsKeys::new(aws_sdk_kms::Client::new(&sdk))
        });
        keys.data_key(key_id, encrypted)
    }
}

fn written(path: &Path, e: parquet::errors::ParquetError) -> Error {
    Error::Usage(format!("{}: {e}", path.display()))
}

impl Checked {
    pub fn render(&self) -> String {
        let mut out = format!(
            "{}: {} rows typed, {} quarantined (dataset {})\n",
            self.file,
            self.rows,
            self.quarantined.len(),
            self.dataset
        );
        for q in &self.quarantined {
            let column = q
                .column
                .as_deref()
                .map_or(String::new(), |c| format!(", column {c}"));
            out += &format!("  line {}{column}: {}: {:?}\n", q.line, q.reason, q.value);
        }
        out
    }
}
