//! Tracing setup shared by the Lambdas: JSON lines under Lambda (or when
//! `AWS_LAMBDA_LOG_FORMAT=JSON`), readable text locally. `RUST_LOG` filters; default `info`.

use tracing_subscriber::EnvFilter;

/// Set to `JSON` (as the deployment does) for JSON log lines outside Lambda too.
pub const LOG_FORMAT_VAR: &str = "AWS_LAMBDA_LOG_FORMAT";

pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var(LOG_FORMAT_VAR).is_ok_and(|f| f.eq_ignore_ascii_case("json"))
        || std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        builder.init();
    }
}
