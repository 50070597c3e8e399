use ingest::{Config, Deps, Error, handler};
use lambda_runtime::{LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    utils::logging::init_tracing();
    let sdk = utils::store::aws_config().await;
    // A configuration mistake is reported by every invocation with errorType Configuration,
    // which the state machine does not retry, rather than as an opaque init failure.
    let deps = Config::from_env().map(|config| Deps::new(config, &sdk));
    if let Err(e) = &deps {
        tracing::error!(error = %e, "invalid configuration");
    }
    run(service_fn(|event: LambdaEvent<Value>| {
        let deps = &deps;
        async move {
            match deps {
                Ok(deps) => handler(event, deps).await,
                Err(e) => Err(Error::Configuration(e.to_string())),
            }
        }
    }))
    .await
}
