use std::error::Error as StdError;

/// What can go wrong in the shared parts. Every variant knows whether a retry can help.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Configuration(String),

    #[error("unknown table {0:?}: not one of the ToteSys tables in the registry")]
    UnknownTable(String),

    #[error("invalid time {0}")]
    InvalidTime(String),

    /// The secret could not be read or does not hold usable credentials. The message never
    /// contains the secret's value.
    #[error("secret {secret_id}: {reason}")]
    Secret {
        secret_id: String,
        reason: String,
        transient: bool,
    },

    #[error("database: {}", describe_db_error(.0))]
    Database(#[from] tokio_postgres::Error),

    #[error("S3 {operation} s3://{bucket}/{key}: {message}")]
    Storage {
        operation: &'static str,
        bucket: String,
        key: String,
        message: String,
        transient: bool,
    },

    #[error("state object s3://{bucket}/{key} is corrupt: {reason}")]
    CorruptState {
        bucket: String,
        key: String,
        reason: String,
    },

    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the same call may succeed if retried later: a lost connection, a server
    /// that is starting or overloaded, a serialization failure, a throttled or failed request.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Database(e) => is_transient_db_error(e),
            Error::Secret { transient, .. } | Error::Storage { transient, .. } => *transient,
            Error::Parquet(parquet::errors::ParquetError::External(inner)) => inner
                .downcast_ref::<Error>()
                .is_some_and(Error::is_transient),
            _ => false,
        }
    }

    /// The stable name Step Functions matches in `Retry` and `Catch` (`errorType`). Only the
    /// `Transient*` names are worth a retry.
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::Configuration(_) => "Configuration",
            Error::UnknownTable(_) => "UnknownTable",
            Error::InvalidTime(_) => "InvalidInput",
            Error::Secret {
                transient: true, ..
            } => "TransientSecretError",
            // A missing secret or one without usable credentials is a deployment mistake.
            Error::Secret { .. } => "Configuration",
            Error::Database(_) if self.is_transient() => "TransientDatabaseError",
            Error::Database(_) => "DatabaseError",
            Error::Storage {
                transient: true, ..
            } => "TransientStorageError",
            Error::Storage { .. } => "StorageError",
            Error::CorruptState { .. } => "CorruptState",
            Error::Parquet(_) | Error::Arrow(_) if self.is_transient() => "TransientStorageError",
            Error::Parquet(_) | Error::Arrow(_) => "InvalidData",
        }
    }
}

/// Every `errorType` a Lambda of this project can return, for cross-checking the state
/// machine's `Retry`/`Catch` clauses.
pub const ERROR_TYPES: &[&str] = &[
    "Configuration",
    "UnknownTable",
    "InvalidInput",
    "InvalidEvent",
    "TransientSecretError",
    "TransientDatabaseError",
    "DatabaseError",
    "TransientStorageError",
    "StorageError",
    "CorruptState",
    "InvalidData",
    "SourceSchemaMismatch",
    "InvalidSourceData",
    "MissingDimension",
    "TransientSourceError",
    "SourceError",
];

/// The `errorType`s worth retrying: the `Transient*` ones and `MissingDimension` (fact rows that
/// reference dimension rows whose files have not been loaded yet). Every other type fails the
/// same way however often it is retried.
pub const RETRYABLE_ERROR_TYPES: &[&str] = &[
    "TransientSecretError",
    "TransientDatabaseError",
    "TransientStorageError",
    "MissingDimension",
    "TransientSourceError",
];

/// SQLSTATE classes and codes after which a retry can succeed.
fn is_transient_db_error(e: &tokio_postgres::Error) -> bool {
    let Some(code) = e.code() else {
        // No SQLSTATE: I/O, a refused or closed connection, a timeout, a TLS failure are worth
        // a retry; a bad configuration or a type mismatch is not.
        let kind = e.to_string();
        return e.is_closed()
            || [
                "error communicating with the server",
                "error connecting to server",
                "timeout waiting for server",
                "error performing TLS handshake",
            ]
            .contains(&kind.as_str());
    };
    let code = code.code();
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources (too many connections, out of memory)
        || matches!(
            code,
            "40001" // serialization_failure
                | "40P01" // deadlock_detected
                | "55P03" // lock_not_available
                | "57014" // query_canceled (statement timeout)
                | "57P01" // admin_shutdown
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now
        )
}

/// A database error with its SQLSTATE, detail and hint, or a client-side one with its chain of
/// causes: what `Display` alone omits.
pub fn describe_db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                s.push_str(&format!("; detail: {detail}"));
            }
            if let Some(hint) = db.hint() {
                s.push_str(&format!("; hint: {hint}"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut source = e.source();
            while let Some(inner) = source {
                s.push_str(&format!(": {inner}"));
                source = inner.source();
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_errors_are_configuration_unless_transient() {
        let secret = |transient| Error::Secret {
            secret_id: "s".into(),
            reason: "r".into(),
            transient,
        };
        assert_eq!(secret(false).error_type(), "Configuration");
        assert_eq!(secret(true).error_type(), "TransientSecretError");
        for t in [
            "Configuration",
            "TransientSecretError",
            "CorruptState",
            "InvalidData",
        ] {
            assert!(ERROR_TYPES.contains(&t), "{t}");
        }
    }

    #[test]
    fn retryable_types_are_the_transient_ones_and_missing_dimension() {
        for t in RETRYABLE_ERROR_TYPES {
            assert!(ERROR_TYPES.contains(t), "{t}");
        }
        for t in ERROR_TYPES {
            let retryable = t.starts_with("Transient") || *t == "MissingDimension";
            assert_eq!(RETRYABLE_ERROR_TYPES.contains(t), retryable, "{t}");
        }
    }

    #[test]
    fn storage_errors_say_where_and_carry_retryability() {
        let e = Error::Storage {
            operation: "PutObject",
            bucket: "b".into(),
            key: "k/1.parquet".into(),
            message: "SlowDown".into(),
            transient: true,
        };
        assert_eq!(e.to_string(), "S3 PutObject s3://b/k/1.parquet: SlowDown");
        assert!(e.is_transient());
        assert_eq!(e.error_type(), "TransientStorageError");
        assert!(!Error::UnknownTable("x".into()).is_transient());
        assert_eq!(Error::UnknownTable("x".into()).error_type(), "UnknownTable");
    }

    #[test]
    fn parquet_errors_wrapping_a_transient_upload_failure_stay_transient() {
        let upload = Error::Storage {
            operation: "UploadPart",
            bucket: "b".into(),
            key: "k".into(),
            message: "dispatch failure".into(),
            transient: true,
        };
        let wrapped = Error::Parquet(parquet::errors::ParquetError::External(Box::new(upload)));
        assert!(wrapped.is_transient());
        assert_eq!(wrapped.error_type(), "TransientStorageError");
    }
}
