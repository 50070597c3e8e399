//! The wiring every Lambda binary shares.

use std::rc::Rc;

pub use lambda_runtime::Diagnostic;
use lambda_runtime::{LambdaEvent, service_fn};
use serde::Serialize;
use serde_json::Value;

/// Implements `From<$error> for Diagnostic` for a Lambda crate's error type: its
/// `error_type()` as the `errorType` Step Functions matches, its `Display` as the message.
/// (Each crate must write the impl itself, the orphan rule permitting; this writes it once.)
#[macro_export]
macro_rules! diagnostic_from {
    ($error:ty) => {
        impl From<$error> for $crate::lambda::Diagnostic {
            fn from(e: $error) -> Self {
                $crate::lambda::Diagnostic {
                    error_type: e.error_type().to_owned(),
                    error_message: e.to_string(),
                }
            }
        }
    };
}

/// An environment of fixed pairs, for each Lambda's `Config::from_lookup` in tests.
#[cfg(any(test, feature = "test-util"))]
pub fn fixed_env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    }
}

/// Runs the Lambda runtime loop with `handler`, given the dependencies built once at cold
/// start. A configuration mistake (`deps` is an error) is returned by every invocation, with
/// its own `errorType` (Configuration, which the state machine does not retry), rather than as
/// an opaque init failure.
pub async fn serve<D, O, E, F>(
    deps: Result<D, Diagnostic>,
    handler: F,
) -> Result<(), lambda_runtime::Error>
where
    O: Serialize,
    E: Into<Diagnostic>,
    F: AsyncFn(LambdaEvent<Value>, &D) -> Result<O, E>,
{
    if let Err(problem) = &deps {
        tracing::error!(
            error = problem.error_message.as_str(),
            "invalid configuration"
        );
    }
    // Built once and kept for the life of the process; each invocation borrows them.
    let shared = Rc::new((deps, handler));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let shared = Rc::clone(&shared);
        async move {
            let (deps, handler) = &*shared;
            let result = match deps {
                Ok(deps) => handler(event, deps).await.map_err(Into::into),
                Err(problem) => Err(problem.clone()),
            };
            if let Err(problem) = &result {
                log_failure(problem);
            }
            result
        }
    }))
    .await
}

/// One ERROR line per failed invocation, with its `errorType`: the deployment's metric filter
/// (`{ $.level = "ERROR" }`) counts them.
fn log_failure(problem: &Diagnostic) {
    tracing::error!(
        error_type = problem.error_type.as_str(),
        error = problem.error_message.as_str(),
        "invocation failed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::tests::json_lines;

    #[test]
    fn a_failed_invocation_logs_one_error_line_with_its_type() {
        let problem = Diagnostic {
            error_type: "InvalidInput".into(),
            error_message: "fact_payment/2024/11/14/094000123456.parquet: corrupt".into(),
        };
        let lines = json_lines(|| log_failure(&problem));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["level"], "ERROR");
        assert_eq!(lines[0]["error_type"], "InvalidInput");
        assert_eq!(lines[0]["message"], "invocation failed");
        assert_eq!(lines[0]["error"], problem.error_message);
    }
}
