//! Tracing setup shared by the Lambdas: JSON lines under Lambda (or when
//! `AWS_LAMBDA_LOG_FORMAT=JSON`), readable text locally. `RUST_LOG` filters; default `info`.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

/// Set to `JSON` (as the deployment does) for JSON log lines outside Lambda too.
pub const LOG_FORMAT_VAR: &str = "AWS_LAMBDA_LOG_FORMAT";

pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var(LOG_FORMAT_VAR).is_ok_and(|f| f.eq_ignore_ascii_case("json"))
        || std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    if json {
        json_subscriber(filter, std::io::stdout).init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .init();
    }
}

/// Human-readable log lines on standard error, filtered by `RUST_LOG` (default `info`): for
/// tools whose standard output is data (`make bench` with `BENCH_LOG=1`).
pub fn init_tracing_stderr() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
}

/// One JSON object per line, the event's fields (`message` and its own, such as `rows`) at the
/// top level beside `level` and `timestamp`: the shape the deployment's metric filters read
/// (`{ $.level = "ERROR" }`, `{ $.message = "..." }` with `$.rows`).
pub fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_writer(writer)
        .finish()
}

/// Progress through the units of a long run (a table's files, an invocation's batches or
/// files), logged after each unit when there is more than one: `{"message": "progress",
/// "stage", "done", "of", "rows", "seconds", "rows_per_second"}`, so a person watching a
/// backfill's logs sees it move and at what rate.
#[derive(Debug)]
pub struct Progress {
    stage: &'static str,
    table: Option<&'static str>,
    of: usize,
    done: usize,
    rows: u64,
    started: std::time::Instant,
}

impl Progress {
    pub fn new(stage: &'static str, table: Option<&'static str>, of: usize) -> Self {
        Progress {
            stage,
            table,
            of,
            done: 0,
            rows: 0,
            started: std::time::Instant::now(),
        }
    }

    /// One more unit done, of `rows` rows.
    pub fn step(&mut self, rows: u64) {
        self.done += 1;
        self.rows += rows;
        if self.of < 2 {
            return;
        }
        let seconds = self.started.elapsed().as_secs_f64();
        tracing::info!(
            stage = self.stage,
            table = self.table,
            done = self.done,
            of = self.of,
            rows = self.rows,
            seconds,
            rows_per_second = (self.rows as f64 / seconds.max(1e-6)).round() as u64,
            "progress"
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use serde_json::Value;

    use super::*;

    /// Runs `f` with the JSON subscriber writing into memory; returns the lines it wrote.
    pub(crate) fn json_lines(f: impl FnOnce()) -> Vec<Value> {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = json_subscriber(EnvFilter::new("info"), move || writer.clone());
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    #[test]
    fn progress_is_logged_after_each_unit_of_a_run_of_several() {
        let lines = json_lines(|| {
            let mut one = Progress::new("load", None, 1);
            one.step(10);
            let mut files = Progress::new("load", None, 2);
            files.step(1);
            let mut run = Progress::new("ingest", Some("sales_order"), 2);
            run.step(5);
            run.step(7);
        });
        assert_eq!(lines.len(), 3, "nothing for a run of one: {lines:?}");
        assert!(lines[0].get("table").is_none(), "no table: {lines:?}");
        let last = &lines[2];
        assert_eq!(last["message"], "progress");
        assert_eq!(last["stage"], "ingest");
        assert_eq!(last["table"], "sales_order");
        assert_eq!(
            (last["done"].as_u64(), last["of"].as_u64()),
            (Some(2), Some(2))
        );
        assert_eq!(last["rows"], 12);
        assert!(last["rows_per_second"].as_u64().is_some() && last["seconds"].as_f64().is_some());
    }

    #[test]
    fn event_fields_are_top_level_beside_the_level() {
        let lines = json_lines(|| {
            tracing::warn!(table = "fact_payment", rows = 3u64, "fact rows quarantined");
            tracing::debug!("filtered out");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "fact rows quarantined");
        assert_eq!(line["rows"], 3);
        assert_eq!(line["table"], "fact_payment");
        assert!(line["timestamp"].is_string());
    }
}
