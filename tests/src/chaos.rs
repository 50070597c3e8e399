//! A driver that runs the real Lambdas as the state machine does (per-table ingest, dimension
//! tables first, rounds until every table is read to the end, transform and load looped on
//! `complete`), with faults injected at seeded random points:
//!
//! - **kill**: the invocation is cancelled at a random moment (its future dropped at whatever
//!   await it is in: after an S3 write, either side of a watermark, mid-COPY), as when Lambda
//!   ends it at its timeout; the execution fails there, and the next one goes on;
//! - **drop**: the invocation does its work, its result is lost, Step Functions invokes it again;
//! - **twice**: the event is delivered twice, both invocations at once;
//!
//! and source changes between executions: dimension updates, new facts, updates of facts
//! already ingested, and a transaction that commits only after an execution read past its
//! start. After each execution the warehouse must equal the source once the pipeline has run
//! clean to the end.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, SystemTime};

use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use tokio_postgres::Client;
use utils::store::S3Store;
use utils::tables::TABLES;

use crate::expected::{FactVersions, assert_star_schema, record_versions, warehouse_rows};
use crate::pipeline::{Pipeline, load_deps};
use crate::{TestDb, sdk_config};

/// How a run is shaped.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub seed: u64,
    /// `sql/generate_source.sql`'s scale (1: about 48,000 rows).
    pub scale: u32,
    pub rows_per_file: u64,
    /// Executions with faults and source changes, before the clean ones that finish.
    pub executions: usize,
    /// The chance that an invocation meets a fault, in percent.
    pub fault_percent: u8,
    /// The longest an invocation may take before its deadline margin is reached.
    pub max_invocation: Duration,
}

/// What a fault did to an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    Kill,
    Drop,
    Twice,
}

/// The pipeline under test and the faults met so far.
pub struct Chaos {
    pub p: Pipeline,
    pub wh: TestDb,
    pub settings: Settings,
    rng: fastrand::Rng,
    /// Fact versions the warehouse must hold (each taken once ingest had read the one before).
    facts: FactVersions,
    /// Faults injected, by kind and stage.
    pub faults: BTreeMap<(Fault, &'static str), u32>,
    pub invocations: u32,
    /// Kills that came after the invocation had finished (no fault after all).
    pub kills_too_late: u32,
    /// A source transaction held open across an execution, committed after it.
    late: Option<Client>,
    next_id: i32,
}

/// Why an execution stopped early.
#[derive(Debug)]
pub enum Stopped {
    Killed(&'static str),
    Failed(String),
}

type Step<T> = Result<T, Stopped>;

impl Chaos {
    pub async fn new(settings: Settings) -> Self {
        let p = Pipeline::new(false).await;
        versioned(&p.processed).await;
        versioned(&p.raw).await;
        generate_source(&p.db.url, settings.scale);
        let wh = TestDb::warehouse().await;
        let mut chaos = Chaos {
            p,
            wh,
            settings,
            rng: fastrand::Rng::with_seed(settings.seed),
            facts: BTreeMap::new(),
            faults: BTreeMap::new(),
            invocations: 0,
            kills_too_late: 0,
            late: None,
            next_id: 1_000_000,
        };
        record_versions(&chaos.p.source().await, &mut chaos.facts).await;
        chaos
    }

    /// Runs the executions with faults and source changes, then clean ones until the pipeline
    /// has nothing left, and checks the warehouse and the processed zone.
    pub async fn run(&mut self) {
        for i in 0..self.settings.executions {
            if i > 0 {
                self.change_source().await;
            }
            let outcome = self.execution(true).await;
            if let Some(client) = self.late.take() {
                client.batch_execute("COMMIT").await.expect("commit late");
                record_versions(&self.p.source().await, &mut self.facts).await;
            }
            eprintln!("chaos: execution {i}: {outcome:?}");
        }
        for i in 0.. {
            assert!(
                i < 200,
                "the pipeline did not settle in 200 clean executions"
            );
            let settled = self
                .execution(false)
                .await
                .expect("a clean execution succeeds");
            if settled {
                break;
            }
        }
        self.assert_exact().await;
        self.assert_no_object_written_twice().await;
        let queued = utils::cursor::pending(&self.p.processed).await.unwrap();
        assert!(queued.is_empty(), "files left queued: {queued:?}");
    }

    pub async fn assert_exact(&self) {
        let source = self.p.source().await;
        let tables = warehouse_rows(&self.wh.client().await).await;
        assert_star_schema(&source, &tables, &self.facts, "after the chaos").await;
    }

    /// No processed data or quarantine file ever had a second version.
    pub async fn assert_no_object_written_twice(&self) {
        let client = utils::store::s3_client(&sdk_config().await);
        let mut versions: BTreeMap<String, u32> = BTreeMap::new();
        let mut marker = None;
        loop {
            let out = client
                .list_object_versions()
                .bucket(self.p.processed.bucket())
                .set_key_marker(marker.take())
                .send()
                .await
                .expect("list versions");
            for v in out.versions() {
                *versions.entry(v.key().unwrap().to_owned()).or_default() += 1;
            }
            match out.next_key_marker() {
                Some(next) if out.is_truncated() == Some(true) => marker = Some(next.to_owned()),
                _ => break,
            }
        }
        let twice: Vec<_> = versions
            .iter()
            .filter(|(k, n)| !k.starts_with("_state/") && **n > 1)
            .collect();
        assert!(twice.is_empty(), "written more than once: {twice:?}");
        assert!(
            versions.keys().any(|k| k.starts_with("fact_sales_order/")),
            "the run wrote processed files"
        );
    }

    /// One execution of the state machine; with `faults`, some invocations meet one. `Ok(true)`
    /// when it found nothing to do (every table read to the end, nothing transformed or left).
    pub async fn execution(&mut self, faults: bool) -> Step<bool> {
        let mut settled = true;
        loop {
            let (dimensions, facts): (Vec<_>, Vec<_>) = TABLES.iter().partition(|t| !t.is_fact());
            let mut results = [Vec::new(), Vec::new()];
            let mut incomplete = false;
            let mut failed = None;
            for (group, tables) in [dimensions, facts].into_iter().enumerate() {
                for table in tables {
                    let event = json!({"tables_to_query": [table.name]});
                    match self.ingest(event, faults).await {
                        Ok(out) => {
                            incomplete |= out["complete"] == json!(false);
                            settled &= out["has_new_data"] == json!(false);
                            results[group].push(json!({"output": out, "failed": false}));
                        }
                        // A Map iteration that failed (or was killed: the Map's Catch takes
                        // that too): recorded, the others go on.
                        Err(stopped) => {
                            failed.get_or_insert(format!("{stopped:?}"));
                            results[group].push(json!({"failed": true,
                                "output": {"has_new_data": false, "complete": true}}));
                        }
                    }
                }
            }
            let mut transform_input = json!(results);
            loop {
                let out = self.transform(transform_input, faults).await?;
                if out["has_new_data"] == json!(true) {
                    settled = false;
                    let mut load_input = out.clone();
                    loop {
                        let loaded = self.load(load_input, faults).await?;
                        if loaded["complete"] == json!(false) {
                            load_input = loaded["remaining"].clone();
                        } else {
                            break;
                        }
                    }
                }
                match &out["remaining"] {
                    Value::Null => break,
                    left => transform_input = left.clone(),
                }
            }
            if let Some(e) = failed {
                return Err(Stopped::Failed(e));
            }
            if !incomplete {
                return Ok(settled);
            }
        }
    }

    async fn ingest(&mut self, event: Value, faults: bool) -> Step<Value> {
        let mut deps = self.p.ingest_deps().await;
        deps.config.max_rows_per_file = self.settings.rows_per_file;
        deps.config.deadline_margin = Duration::ZERO;
        self.invoke("ingest", faults, |context| {
            let (deps, event) = (deps.clone(), event.clone());
            async move {
                ingest::handler(LambdaEvent::new(event, context), &deps)
                    .await
                    .map(|out| serde_json::to_value(out).unwrap())
                    .map_err(|e| (e.error_type(), e.to_string()))
            }
        })
        .await
    }

    async fn transform(&mut self, event: Value, faults: bool) -> Step<Value> {
        let mut deps = self.p.deps();
        deps.deadline_margin = Duration::ZERO;
        self.invoke("transform", faults, |context| {
            let (deps, event) = (deps.clone(), event.clone());
            async move {
                transform::handler(LambdaEvent::new(event, context), &deps)
                    .await
                    .map(|out| serde_json::to_value(out).unwrap())
                    .map_err(|e| (e.error_type(), e.to_string()))
            }
        })
        .await
    }

    async fn load(&mut self, event: Value, faults: bool) -> Step<Value> {
        // Files of at least half the file bound go the bulk path.
        let min_rows = self.settings.rows_per_file / 2;
        let mut deps = load_deps(&self.p.processed, &self.wh.url, min_rows).await;
        deps.config.deadline_margin = Duration::ZERO;
        self.invoke("load", faults, |context| {
            let (deps, event) = (deps.clone(), event.clone());
            async move {
                load::handler(LambdaEvent::new(event, context), &deps)
                    .await
                    .map(|out| serde_json::to_value(out).unwrap())
                    .map_err(|e| (e.error_type(), e.to_string()))
            }
        })
        .await
    }

    /// One Task state: the invocation `call` makes, with Step Functions' retries of retryable
    /// errors, and perhaps a fault.
    async fn invoke<F, Fut>(&mut self, stage: &'static str, faults: bool, call: F) -> Step<Value>
    where
        F: Fn(Context) -> Fut,
        Fut: Future<Output = Result<Value, (&'static str, String)>>,
    {
        for _attempt in 0..8 {
            let fault = if faults && self.rng.u8(0..100) < self.settings.fault_percent {
                Some(match self.rng.u8(0..3) {
                    0 => Fault::Kill,
                    1 => Fault::Drop,
                    _ => Fault::Twice,
                })
            } else {
                None
            };
            let context = self.context();
            self.invocations += 1;
            let result = match fault {
                None => call(context).await,
                Some(Fault::Kill) => {
                    let at = Duration::from_millis(self.rng.u64(0..=400));
                    match tokio::time::timeout(at, call(context)).await {
                        Ok(result) => {
                            self.kills_too_late += 1;
                            result
                        }
                        Err(_) => {
                            *self.faults.entry((Fault::Kill, stage)).or_default() += 1;
                            return Err(Stopped::Killed(stage));
                        }
                    }
                }
                Some(Fault::Drop) => {
                    *self.faults.entry((Fault::Drop, stage)).or_default() += 1;
                    // The work is done, the result lost: Lambda.ServiceException, retried.
                    let _ = call(context).await;
                    continue;
                }
                Some(Fault::Twice) => {
                    *self.faults.entry((Fault::Twice, stage)).or_default() += 1;
                    let again = self.context();
                    let (a, b) = tokio::join!(call(context), call(again));
                    // Either delivery's result may be the one passed on.
                    if self.rng.bool() { a } else { b }
                }
            };
            match result {
                Ok(out) => return Ok(out),
                Err((kind, message)) if utils::RETRYABLE_ERROR_TYPES.contains(&kind) => {
                    eprintln!("chaos: {stage}: {kind}, retried: {message}");
                }
                Err((kind, message)) => {
                    return Err(Stopped::Failed(format!("{stage}: {kind}: {message}")));
                }
            }
        }
        Err(Stopped::Failed(format!("{stage}: retries exhausted")))
    }

    /// An invocation context whose deadline margin is reached within the longest invocation.
    fn context(&mut self) -> Context {
        let max = self.settings.max_invocation.as_millis() as u64;
        let deadline = SystemTime::now() + Duration::from_millis(self.rng.u64(0..=max));
        let mut context = Context::default();
        context.deadline = deadline
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        context
    }

    /// Changes between executions: each kind at random. Fact rows are updated only once ingest
    /// has read their current version (its watermark is past it), so every version recorded
    /// is one the warehouse must hold.
    async fn change_source(&mut self) {
        let source = self.p.source().await;
        let now = crate::NOW_MS;
        let id = self.next_id;
        self.next_id += 10;
        let mut sql = String::new();
        if self.rng.bool() {
            let d = self.rng.i32(1..=8);
            sql += &format!(
                "UPDATE department SET department_name = 'Dept {id}', last_updated = {now}
                   WHERE department_id = {d};
                 UPDATE address SET city = 'City {id}', last_updated = {now}
                   WHERE address_id = {};",
                self.rng.i32(1..=30)
            );
        }
        if self.rng.bool() {
            sql += &format!(
                "INSERT INTO staff VALUES ({id}, 'New', 'Starter', 1, 'new{id}@terrifictotes.com',
                   {now}, {now});
                 INSERT INTO sales_order VALUES ({id}, {now}, {now}, 1, {id}, 1, 5, 2.50, 1,
                   '2025-01-01', '2025-01-02', 1);
                 INSERT INTO \"transaction\" VALUES ({id}, 'SALE', {id}, NULL, {now}, {now});
                 INSERT INTO payment VALUES ({id}, {now}, {now}, {id}, 1, 12.50, 1, 1, false,
                   '2025-01-03', 1, 2);"
            );
        }
        let payment = watermark(&self.p.raw, "payment").await;
        let sales = watermark(&self.p.raw, "sales_order").await;
        if let (Some(payment), Some(sales), true) = (payment, sales, self.rng.bool()) {
            sql += &format!(
                "UPDATE payment SET paid = NOT paid, last_updated = {now}
                   WHERE payment_id IN (SELECT payment_id FROM payment
                     WHERE last_updated < '{payment}' ORDER BY payment_id LIMIT 20 OFFSET {o});
                 UPDATE sales_order SET units_sold = units_sold + 1, last_updated = {now}
                   WHERE sales_order_id IN (SELECT sales_order_id FROM sales_order
                     WHERE last_updated < '{sales}' ORDER BY sales_order_id LIMIT 20 OFFSET {o});",
                o = self.rng.u32(0..500)
            );
        }
        source.batch_execute(&sql).await.expect("change the source");
        if self.rng.u8(0..4) == 0 {
            // A transaction that stamps its row now and commits after the next execution.
            let late = self.p.source().await;
            late.batch_execute(&format!(
                "BEGIN;
                 INSERT INTO purchase_order VALUES ({id1}, {now}, {now}, 1, 1, 'LATE', 1, 1.00, 1,
                   '2025-01-01', '2025-01-02', 1);",
                id1 = id + 1
            ))
            .await
            .expect("open a late transaction");
            self.late = Some(late);
        }
        record_versions(&source, &mut self.facts).await;
    }
}

/// The source table's ingest watermark, as SQL timestamp text.
async fn watermark(raw: &S3Store, table: &str) -> Option<String> {
    utils::watermark::read_state(raw, table)
        .await
        .unwrap()
        .map(|s| s.window_end.naive_utc().to_string())
}

/// Turns on versioning, so that a second version of an object shows.
async fn versioned(store: &S3Store) {
    let client = utils::store::s3_client(&sdk_config().await);
    client
        .put_bucket_versioning()
        .bucket(store.bucket())
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("enable versioning");
}

/// Fills the source with `sql/generate_source.sql` at `scale`, through psql.
fn generate_source(url: &str, scale: u32) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../sql/generate_source.sql");
    let status = std::process::Command::new("psql")
        .args([url, "-q", "-v", &format!("scale={scale}"), "-f", script])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run psql");
    assert!(status.success(), "generating the source failed");
}
