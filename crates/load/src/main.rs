use lambda_runtime::Diagnostic;
use load::{Config, Deps, handler};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    utils::logging::init_tracing();
    let sdk = utils::store::aws_config().await;
    let deps = Config::from_env()
        .map(|config| Deps::new(config, &sdk))
        .map_err(Diagnostic::from);
    utils::lambda::serve(deps, handler).await
}
