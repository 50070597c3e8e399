//! What goes wrong with a declaration or a landed file, each naming the file.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// A declaration that does not parse or does not hold together.
    #[error("dataset declaration {path}: {reason}")]
    Declaration { path: String, reason: String },
    /// A landed file that cannot be read at all (corrupt compression, not CSV, empty):
    /// nothing of it is kept.
    #[error("{file}: cannot be read: {reason}")]
    Unreadable { file: String, reason: String },
    /// A landed file whose columns do not follow the declaration's policies.
    #[error("{file}: column {column:?}: {reason}")]
    Columns {
        file: String,
        column: String,
        reason: String,
    },
    /// The key service could not decrypt data keys (unreachable, throttled): nothing of the
    /// file is kept, and a retry reads it again.
    #[error("{file}: the key service failed: {reason}")]
    Keys { file: String, reason: String },
    /// A Parquet file or workbook could not be copied to local storage to be read (too big
    /// for the function's ephemeral storage): nothing of the file is kept, and it stays to be
    /// ingested once there is room.
    #[error("{file}: cannot be copied to local storage to be read: {reason}")]
    Scratch { file: String, reason: String },
}

impl Error {
    /// The name Step Functions matches on: only the key service's failure is worth a retry.
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::Declaration { .. } | Error::Scratch { .. } => "Configuration",
            Error::Unreadable { .. } | Error::Columns { .. } => "InvalidInput",
            Error::Keys { .. } => "TransientSecretError",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
