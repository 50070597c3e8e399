/// Why an ingest failed. [`Error::error_type`] is the stable `errorType` Step Functions sees.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid event: {0}")]
    InvalidEvent(String),

    #[error("the source schema does not match the table registry: {0}")]
    SourceSchemaMismatch(String),

    #[error("table {table}, column {column}: {reason}")]
    InvalidSourceData {
        table: &'static str,
        column: &'static str,
        reason: String,
    },

    /// A failure while ingesting one table; the invocation fails with the inner error's type.
    #[error("table {table}: {source}")]
    Table {
        table: &'static str,
        #[source]
        source: Box<Error>,
    },

    #[error(transparent)]
    Shared(#[from] utils::Error),

    /// An API's request failed: throttled or failing past the retries (transient), or refused
    /// (a 4xx). `request` is the method, URL and query, never the token.
    #[error("{request}: {message}")]
    Api {
        request: String,
        status: Option<u16>,
        message: String,
        transient: bool,
    },

    /// A declaration or a landed file of a dataset.
    #[error(transparent)]
    Dataset(#[from] datasets::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::InvalidEvent(_) => "InvalidEvent",
            Error::SourceSchemaMismatch(_) => "SourceSchemaMismatch",
            Error::InvalidSourceData { .. } => "InvalidSourceData",
            Error::Table { source, .. } => source.error_type(),
            Error::Shared(e) => e.error_type(),
            Error::Dataset(e) => e.error_type(),
            Error::Api {
                transient: true, ..
            } => "TransientSourceError",
            // The token is refused: the deployment's to fix.
            Error::Api {
                status: Some(401 | 403),
                ..
            } => "Configuration",
            Error::Api { .. } => "SourceError",
        }
    }

    pub fn in_table(self, table: &'static str) -> Error {
        match self {
            already @ (Error::Table { .. } | Error::InvalidSourceData { .. }) => already,
            other => Error::Table {
                table,
                source: Box::new(other),
            },
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Shared(e.into())
    }
}

utils::diagnostic_from!(Error);

#[cfg(test)]
mod tests {
    use utils::lambda::Diagnostic;

    use super::*;

    #[test]
    fn table_errors_keep_the_inner_type_and_name_the_table() {
        let inner = Error::Shared(utils::Error::Storage {
            operation: "UploadPart",
            bucket: "raw".into(),
            key: "staff/2024/11/14/093005123456.parquet".into(),
            message: "dispatch failure".into(),
            transient: true,
        });
        let e = inner.in_table("staff");
        assert_eq!(e.error_type(), "TransientStorageError");
        let d = Diagnostic::from(e);
        assert_eq!(d.error_type, "TransientStorageError");
        assert_eq!(
            d.error_message,
            "table staff: S3 UploadPart s3://raw/staff/2024/11/14/093005123456.parquet: dispatch failure"
        );
    }

    #[test]
    fn every_error_type_is_a_declared_one() {
        let errors = [
            Error::Shared(utils::Error::Configuration("x".into())),
            Error::InvalidEvent("x".into()),
            Error::SourceSchemaMismatch("x".into()),
            Error::InvalidSourceData {
                table: "t",
                column: "c",
                reason: "r".into(),
            },
            Error::Shared(utils::Error::UnknownTable("x".into())),
        ];
        for e in errors {
            assert!(utils::ERROR_TYPES.contains(&e.error_type()), "{e}");
        }
    }
}
