use lambda_runtime::{Diagnostic, LambdaEvent, run, service_fn};
use serde_json::Value;
use transform::{Config, Deps, handler};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    utils::logging::init_tracing();
    let sdk = utils::store::aws_config().await;
    // A configuration mistake is reported by every invocation with errorType Configuration,
    // which the state machine does not retry, rather than as an opaque init failure.
    let deps = Config::from_env()
        .map(|config| Deps::new(&config, &sdk))
        .map_err(Diagnostic::from);
    if let Err(problem) = &deps {
        tracing::error!(
            error = problem.error_message.as_str(),
            "invalid configuration"
        );
    }
    run(service_fn(|event: LambdaEvent<Value>| {
        let deps = &deps;
        async move {
            match deps {
                Ok(deps) => handler(event, deps).await.map_err(Diagnostic::from),
                Err(problem) => Err(problem.clone()),
            }
        }
    }))
    .await
}
