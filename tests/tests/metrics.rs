//! What the Lambdas emit as CloudWatch Embedded Metric Format lines over one real round:
//! every line a valid EMF document, and the figures the outputs report. One test: the capture
//! is process-wide.

use std::collections::BTreeMap;

use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;
use totesys_tests::expected::order_with_a_bad_date;
use totesys_tests::pipeline::{Pipeline, load_deps};
use totesys_tests::*;
use utils::metrics::{Captured, validate};

/// Per (stage, table) the sum of `metric` over `docs`.
fn sums(docs: &[Value], metric: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for d in docs.iter().filter(|d| d.get(metric).is_some()) {
        let key = (
            d["Stage"].as_str().unwrap().to_owned(),
            d["Table"].as_str().unwrap_or("").to_owned(),
        );
        *out.entry(key).or_default() += d[metric].as_f64().unwrap();
    }
    out
}

fn of_stage(sums: &BTreeMap<(String, String), f64>, stage: &str) -> BTreeMap<String, u64> {
    sums.iter()
        .filter(|((s, _), v)| s == stage && **v > 0.0)
        .map(|((_, t), v)| (t.clone(), *v as u64))
        .collect()
}

fn counts(map: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    map.iter()
        .filter(|(_, n)| **n > 0)
        .map(|(t, n)| (t.clone(), *n))
        .collect()
}

#[tokio::test]
async fn each_stage_emits_its_rows_bytes_duration_lag_and_quarantine_as_emf() {
    let p = Pipeline::new(true).await;
    let wh = TestDb::warehouse().await;
    p.source()
        .await
        .batch_execute(&order_with_a_bad_date())
        .await
        .unwrap();
    let captured = Captured::start();

    let ingested = p.ingest().await;
    let docs = captured.take();
    let transformed = p.transform(ingested.clone()).await.unwrap();
    let docs_transform = captured.take();
    let deps = load_deps(&p.processed, &wh.url, load::bulk::DEFAULT_MIN_ROWS).await;
    let loaded = load::handler(
        LambdaEvent::new(
            serde_json::to_value(&transformed).unwrap(),
            Context::default(),
        ),
        &deps,
    )
    .await
    .unwrap();
    let docs_load = captured.take();
    let all: Vec<Value> = [&docs[..], &docs_transform, &docs_load].concat();

    for doc in &all {
        validate(doc).unwrap_or_else(|e| panic!("{e}: {doc}"));
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], "totesys");
    }
    let durations = sums(&all, "DurationSeconds");
    assert_eq!(
        durations
            .keys()
            .map(|(s, _)| s.as_str())
            .collect::<Vec<_>>(),
        ["ingest", "load", "transform"],
        "one duration per invocation"
    );
    assert_eq!(
        all.iter()
            .filter(|d| d.get("DurationSeconds").is_some())
            .count(),
        3
    );

    // ingest: the rows it read, each table's freshness lag.
    let rows = sums(&docs, "Rows");
    let expected: BTreeMap<String, u64> =
        serde_json::from_value(ingested["row_counts"].clone()).unwrap();
    assert_eq!(of_stage(&rows, "ingest"), counts(&expected));
    assert!(of_stage(&sums(&docs, "Bytes"), "ingest").len() == 11);
    let lags = sums(&docs, "FreshnessLagSeconds");
    assert_eq!(lags.len(), 11, "{lags:?}");
    assert!(lags.values().all(|s| (0.0..60.0).contains(s)), "{lags:?}");

    // transform: rows per warehouse table, and the quarantined row.
    assert_eq!(
        of_stage(&sums(&docs_transform, "Rows"), "transform"),
        counts(&transformed.row_counts)
    );
    assert_eq!(
        of_stage(&sums(&docs_transform, "QuarantinedRows"), "transform"),
        BTreeMap::from([("fact_sales_order".to_owned(), 1)])
    );
    // Per source table, nothing left to transform, and the warehouse's lag: up to the files
    // queued for the load, which are as old as the watermarks.
    let waiting = sums(&docs_transform, "FilesWaiting");
    assert_eq!(waiting.len(), 11, "{waiting:?}");
    assert!(waiting.values().all(|n| *n == 0.0), "{waiting:?}");
    let lags = sums(&docs_transform, "FreshnessLagSeconds");
    assert_eq!(lags.len(), 11, "{lags:?}");
    assert!(lags.values().all(|s| (0.0..60.0).contains(s)), "{lags:?}");

    // load: rows read and rows changed per table.
    assert_eq!(
        of_stage(&sums(&docs_load, "ChangedRows"), "load"),
        counts(&loaded.loaded)
    );
    assert_eq!(
        of_stage(&sums(&docs_load, "Rows"), "load"),
        counts(&transformed.row_counts)
    );
    assert!(
        of_stage(&sums(&docs_load, "Bytes"), "load")
            .values()
            .all(|b| *b > 0)
    );
    // Nothing left in the load's queue, per warehouse table.
    let waiting = sums(&docs_load, "FilesWaiting");
    assert_eq!(waiting.len(), 11, "{waiting:?}");
    assert!(waiting.values().all(|n| *n == 0.0), "{waiting:?}");
}
