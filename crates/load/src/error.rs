/// Why a load failed. [`Error::error_type`] is the stable `errorType` Step Functions sees.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid event: {0}")]
    InvalidEvent(String),

    /// The warehouse is not the schema the load expects: found before anything is written.
    #[error("the warehouse does not match the warehouse registry: {0}")]
    WarehouseSchema(String),

    /// A processed file that cannot be loaded as it is: missing, corrupt, of another schema,
    /// or with values the warehouse refuses.
    #[error("{table}: s3://{bucket}/{key}: {reason}")]
    InvalidInput {
        table: &'static str,
        bucket: String,
        key: String,
        reason: String,
    },

    /// Fact rows reference a dimension row the warehouse does not hold yet: the file came
    /// before its dimensions. Nothing of it was committed; a later retry loads it.
    #[error(
        "{table}: s3://{bucket}/{key}: a referenced dimension row is not loaded yet ({detail})"
    )]
    MissingDimension {
        table: &'static str,
        bucket: String,
        key: String,
        detail: String,
    },

    /// A failure while loading one file; the invocation fails with the inner error's type.
    #[error("{table}: s3://{bucket}/{key}: {source}")]
    File {
        table: &'static str,
        bucket: String,
        key: String,
        #[source]
        source: Box<Error>,
    },

    #[error(transparent)]
    Shared(#[from] utils::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::InvalidEvent(_) => "InvalidEvent",
            Error::WarehouseSchema(_) => "Configuration",
            Error::InvalidInput { .. } => "InvalidInput",
            Error::MissingDimension { .. } => "MissingDimension",
            Error::File { source, .. } => source.error_type(),
            Error::Shared(e) => e.error_type(),
        }
    }
}

impl Error {
    /// A lock wait cut by `lock_timeout`, or a deadlock PostgreSQL broke: transient.
    pub fn is_lock_wait(&self) -> bool {
        match self {
            Error::File { source, .. } => source.is_lock_wait(),
            Error::Shared(utils::Error::Database(e)) => e
                .code()
                .is_some_and(|c| matches!(c.code(), "55P03" | "40P01")),
            _ => false,
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
    use super::*;

    #[test]
    fn every_error_type_is_a_declared_one() {
        let file = |source| Error::File {
            table: "fact_payment",
            bucket: "p".into(),
            key: "k".into(),
            source: Box::new(source),
        };
        let errors = [
            Error::InvalidEvent("x".into()),
            Error::WarehouseSchema("x".into()),
            Error::InvalidInput {
                table: "dim_staff",
                bucket: "p".into(),
                key: "k".into(),
                reason: "r".into(),
            },
            Error::MissingDimension {
                table: "fact_payment",
                bucket: "p".into(),
                key: "k".into(),
                detail: "d".into(),
            },
            file(Error::Shared(utils::Error::Configuration("x".into()))),
        ];
        for e in errors {
            assert!(utils::ERROR_TYPES.contains(&e.error_type()), "{e}");
        }
    }
}
