/// Why a transform failed. [`Error::error_type`] is the stable `errorType` Step Functions sees.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid event: {0}")]
    InvalidEvent(String),

    /// A raw file that cannot be used: missing, corrupt, or not the registry's schema. Nothing
    /// of the batch is written.
    #[error("raw file s3://{bucket}/{key} ({table}): {reason}")]
    InvalidInput {
        table: &'static str,
        bucket: String,
        key: String,
        reason: String,
    },

    #[error(transparent)]
    Shared(#[from] utils::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::InvalidEvent(_) => "InvalidEvent",
            Error::InvalidInput { .. } => "InvalidInput",
            Error::Shared(e) => e.error_type(),
        }
    }
}

utils::diagnostic_from!(Error);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_type_is_a_declared_one() {
        let errors = [
            Error::InvalidEvent("x".into()),
            Error::InvalidInput {
                table: "staff",
                bucket: "raw".into(),
                key: "staff/2024/11/14/093005123456.parquet".into(),
                reason: "not a Parquet file".into(),
            },
            Error::Shared(utils::Error::Configuration("x".into())),
        ];
        for e in errors {
            assert!(utils::ERROR_TYPES.contains(&e.error_type()), "{e}");
        }
    }
}
