//! The Terraform under `terraform/` checked against the code it deploys, without AWS:
//! - each Lambda gets exactly the environment its config reads;
//! - every `ErrorEquals` name in the state machine is one the code returns (or one AWS defines),
//!   and only the retryable ones are retried;
//! - the template's placeholders are exactly what `templatefile()` is given;
//! - the table lists match the crates' registries, and the quarantine metric filter matches the
//!   line transform logs;
//! - the lake's Glue tables have the columns and types of the files the code writes, and their
//!   partition projection finds every file where `generate_file_key` puts it.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{DataType, Schema, TimeUnit};
use hcl::{Block, Body, Expression, ObjectKey};
use parquet::arrow::ArrowSchemaConverter;
use parquet::basic::{LogicalType, Type as PhysicalType};
use parquet::schema::types::ColumnDescriptor;
use serde_json::Value;

fn terraform_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../terraform")
}

fn parse(file: &str) -> Body {
    let path = terraform_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    hcl::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The blocks `kind "labels"...` of a body.
fn blocks<'a>(body: &'a Body, kind: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
    body.blocks().filter(move |b| b.identifier.as_str() == kind)
}

fn labelled<'a>(body: &'a Body, kind: &'a str, labels: &[&str]) -> &'a Block {
    blocks(body, kind)
        .find(|b| {
            b.labels
                .iter()
                .map(|l| l.as_str())
                .eq(labels.iter().copied())
        })
        .unwrap_or_else(|| panic!("no {kind} {labels:?}"))
}

fn attribute<'a>(body: &'a Body, name: &str) -> &'a Expression {
    body.attributes()
        .find(|a| a.key.as_str() == name)
        .map(|a| &a.expr)
        .unwrap_or_else(|| panic!("no attribute {name}"))
}

/// The attribute `name` of any `locals` block in `file`.
fn local(file: &str, name: &str) -> Expression {
    let body = parse(file);
    blocks(&body, "locals")
        .find_map(|b| b.body.attributes().find(|a| a.key.as_str() == name))
        .map(|a| a.expr.clone())
        .unwrap_or_else(|| panic!("no local.{name} in {file}"))
}

fn object(expr: &Expression) -> BTreeMap<String, &Expression> {
    let Expression::Object(object) = expr else {
        panic!("expected an object, got {expr}")
    };
    object
        .iter()
        .map(|(k, v)| {
            let key = match k {
                ObjectKey::Identifier(i) => i.to_string(),
                ObjectKey::Expression(Expression::String(s)) => s.clone(),
                other => panic!("computed key {other:?}"),
            };
            (key, v)
        })
        .collect()
}

fn strings(expr: &Expression) -> Vec<String> {
    let Expression::Array(items) = expr else {
        panic!("expected a list, got {expr}")
    };
    items
        .iter()
        .map(|e| match e {
            Expression::String(s) => s.clone(),
            other => panic!("expected a string, got {other}"),
        })
        .collect()
}

/// Every variable `config` asks the environment for, each answered with a plausible value.
fn variables_read(config: impl FnOnce(&dyn Fn(&str) -> Option<String>)) -> BTreeSet<String> {
    let read = RefCell::new(BTreeSet::new());
    config(&|name: &str| {
        read.borrow_mut().insert(name.to_owned());
        // A value each setting accepts, so that every read is reached.
        Some(
            if name.ends_with("_SECONDS") || name.ends_with("_ROWS") || name.ends_with("_FILE") {
                "5".into()
            } else if name.ends_with("_TABLES") {
                "staff".into()
            } else {
                name.to_lowercase()
            },
        )
    });
    read.into_inner()
}

/// What the deployment must set for a Lambda whose config reads `read`: the `*_DB_URL`
/// alternatives are for running outside AWS (the secret is set instead); a Lambda that opens a
/// database also reads the TLS root bundle in `utils::db::connect`; every Lambda's logging reads
/// the log format, and its metrics the namespace.
fn deployed_environment(read: BTreeSet<String>) -> BTreeSet<String> {
    let mut env: BTreeSet<String> = read
        .iter()
        .filter(|v| !v.ends_with("_DB_URL"))
        .cloned()
        .collect();
    for url in read.iter().filter(|v| v.ends_with("_DB_URL")) {
        let secret = url.replace("_DB_URL", "_DB_SECRET_ID");
        assert!(read.contains(&secret), "{url} is read without {secret}");
        env.insert(utils::db::ROOT_CERT_VAR.to_owned());
    }
    env.insert(utils::logging::LOG_FORMAT_VAR.to_owned());
    env.insert(utils::metrics::NAMESPACE_VAR.to_owned());
    env
}

#[test]
fn each_lambda_gets_exactly_the_environment_its_config_reads() {
    let expected: BTreeMap<&str, BTreeSet<String>> = [
        (
            "ingest",
            variables_read(|env| drop(ingest::Config::from_lookup(env))),
        ),
        (
            "transform",
            variables_read(|env| drop(transform::Config::from_lookup(env))),
        ),
        (
            "load",
            variables_read(|env| drop(load::Config::from_lookup(env))),
        ),
    ]
    .into_iter()
    .map(|(name, read)| (name, deployed_environment(read)))
    .collect();
    // The recording works: each config reads its buckets.
    assert!(expected["ingest"].contains("INGEST_BUCKET"));
    assert!(expected["ingest"].contains("SOURCE_DB_SECRET_ID"));
    assert!(expected["transform"].contains("PROCESSED_BUCKET"));
    assert!(expected["load"].contains("WAREHOUSE_DB_SECRET_ID"));

    let functions = local("lambda.tf", "functions");
    let functions = object(&functions);
    assert_eq!(
        functions.keys().map(String::as_str).collect::<Vec<_>>(),
        expected.keys().copied().collect::<Vec<_>>(),
        "the functions Terraform deploys"
    );
    for (name, function) in functions {
        let set: BTreeSet<String> = object(object(function)["environment"])
            .into_keys()
            .collect();
        assert_eq!(set, expected[name.as_str()], "environment of {name}");
    }
    let format = object(object(&local("lambda.tf", "functions"))["ingest"])["environment"].clone();
    assert_eq!(
        object(&format)[utils::logging::LOG_FORMAT_VAR].to_string(),
        "\"JSON\""
    );

    // ... and the function resource passes that map on as it is.
    let body = parse("lambda.tf");
    let resource = labelled(&body, "resource", &["aws_lambda_function", "pipeline"]);
    let environment = blocks(&resource.body, "environment")
        .next()
        .expect("environment block");
    assert_eq!(
        attribute(&environment.body, "variables").to_string(),
        "each.value.environment"
    );
    assert_eq!(
        attribute(&resource.body, "for_each").to_string(),
        "local.functions"
    );
}

/// The state machine template with the partition `aws` and every other placeholder replaced by
/// a number, as JSON.
fn state_machine() -> Value {
    rendered("state_machine.asl.json")
}

/// A template of `terraform/` with the partition `aws` and every other placeholder a number,
/// as JSON.
fn rendered(template: &str) -> Value {
    let text = std::fs::read_to_string(terraform_dir().join(template)).unwrap();
    let rendered = placeholder_re(&text)
        .into_iter()
        .fold(text.clone(), |t, name| {
            let value = if name == "partition" { "aws" } else { "1" };
            t.replace(&format!("${{{name}}}"), value)
        });
    serde_json::from_str(&rendered).expect("the rendered template is JSON")
}

/// The `${name}` placeholders of a template.
fn placeholder_re(text: &str) -> BTreeSet<String> {
    text.match_indices("${")
        .map(|(i, _)| {
            let rest = &text[i + 2..];
            let end = rest.find('}').expect("closed placeholder");
            rest[..end].to_owned()
        })
        .collect()
}

/// Every Task state, nested ones (Map iterations) included: name → state. A nested task
/// without a Catch of its own takes the Catch of the Map around it, where its errors go.
fn tasks(states: &Value, catch: Option<&Value>, out: &mut BTreeMap<String, Value>) {
    for (name, state) in states.as_object().expect("States") {
        if state["Type"] == "Task" {
            let mut state = state.clone();
            if let (None, Some(catch)) = (state.get("Catch"), catch) {
                state["Catch"] = catch.clone();
            }
            out.insert(name.clone(), state);
        }
        if let Some(nested) = state.pointer("/ItemProcessor/States") {
            tasks(nested, state.get("Catch"), out);
        }
    }
}

fn error_names(state: &Value, field: &str) -> Vec<String> {
    state[field]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rule| rule["ErrorEquals"].as_array().unwrap().iter())
        .map(|n| n.as_str().unwrap().to_owned())
        .collect()
}

/// Error names AWS defines that the state machine may name: the catch-all, the Lambda service's
/// own transient failures (throttling, service errors; AWS recommends retrying them), and the
/// lock's DynamoDB condition failure and missing execution.
const AWS_ERROR_NAMES: &[&str] = &[
    "States.ALL",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "DynamoDB.ConditionalCheckFailedException",
    "Sfn.ExecutionDoesNotExistException",
];

/// The error types the code returns that `state` retries, each checked to be a retryable one,
/// into `retried`; the other names it retries (AWS's own), returned.
fn retried_code_errors(name: &str, state: &Value, retried: &mut BTreeSet<String>) -> Vec<String> {
    let mut others = Vec::new();
    for error in error_names(state, "Retry") {
        if utils::ERROR_TYPES.contains(&error.as_str()) {
            assert!(
                utils::RETRYABLE_ERROR_TYPES.contains(&error.as_str()),
                "{name} retries {error}, which fails the same way every time"
            );
            retried.insert(error);
        } else {
            others.push(error);
        }
    }
    others
}

#[test]
fn the_state_machine_names_only_errors_the_code_returns_and_retries_only_transient_ones() {
    let definition = state_machine();
    let mut all = BTreeMap::new();
    tasks(&definition["States"], None, &mut all);
    let lambda_tasks: BTreeMap<&String, &Value> = all
        .iter()
        .filter(|(_, s)| s["Resource"] == "arn:aws:states:::lambda:invoke")
        .collect();
    assert_eq!(
        lambda_tasks.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        ["IngestDimension", "IngestFact", "Load", "Transform"]
    );

    for (name, state) in &all {
        for error in error_names(state, "Retry")
            .iter()
            .chain(&error_names(state, "Catch"))
        {
            assert!(
                utils::ERROR_TYPES.contains(&error.as_str())
                    || AWS_ERROR_NAMES.contains(&error.as_str()),
                "{name} names {error}, which no Lambda returns and AWS does not define"
            );
        }
    }

    let mut retried = BTreeSet::new();
    for (name, state) in &lambda_tasks {
        for error in retried_code_errors(name, state, &mut retried) {
            assert!(error.starts_with("Lambda."), "{name} retries {error}");
        }
        // Everything else ends in the failure path, which notifies.
        assert_eq!(error_names(state, "Catch"), ["States.ALL"], "{name}");
        assert!(state["Retry"].as_array().unwrap().iter().all(|r| {
            r["IntervalSeconds"].is_number()
                && r["BackoffRate"].is_number()
                && r["MaxAttempts"].is_number()
        }));
    }
    // The datasets' state machines retry what ingest raises for them (an API's transient
    // failures among them), and nothing that fails the same way every time.
    for template in ["dataset_backfill.asl.json", "dataset_api.asl.json"] {
        let mut tasks_of = BTreeMap::new();
        tasks(&rendered(template)["States"], None, &mut tasks_of);
        for (name, state) in &tasks_of {
            retried_code_errors(&format!("{template}: {name}"), state, &mut retried);
        }
    }
    let retryable: BTreeSet<String> = utils::RETRYABLE_ERROR_TYPES
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        retried, retryable,
        "every retryable error type is retried somewhere"
    );
    // MissingDimension only where it can happen: the load.
    for (name, state) in &lambda_tasks {
        let retries_missing = error_names(state, "Retry").contains(&"MissingDimension".to_owned());
        assert_eq!(retries_missing, name.as_str() == "Load", "{name}");
    }
}

#[test]
fn the_template_gets_exactly_its_placeholders() {
    let text = std::fs::read_to_string(terraform_dir().join("state_machine.asl.json")).unwrap();
    assert!(!text.contains("%{"), "no template directives");
    let body = parse("sfn.tf");
    let machine = labelled(&body, "resource", &["aws_sfn_state_machine", "pipeline"]);
    let Expression::FuncCall(call) = attribute(&machine.body, "definition") else {
        panic!("definition is not a templatefile() call")
    };
    assert_eq!(call.name.to_string(), "templatefile");
    let given: BTreeSet<String> = object(&call.args[1]).into_keys().collect();
    assert_eq!(given, placeholder_re(&text));
}

fn sorted(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort();
    names
}

#[test]
fn table_lists_match_the_registries() {
    let variables = parse("variables.tf");
    let tables = labelled(&variables, "variable", &["tables"]);
    assert_eq!(
        sorted(strings(attribute(&tables.body, "default"))),
        sorted(utils::tables::TABLES.iter().map(|t| t.name.to_owned())),
        "variable \"tables\" and utils::tables::TABLES"
    );
    assert_eq!(
        sorted(strings(&local("s3.tf", "warehouse_tables"))),
        sorted(
            utils::warehouse::WAREHOUSE_TABLES
                .iter()
                .map(|t| t.name.to_owned())
        ),
        "local.warehouse_tables and the warehouse registry"
    );
    // The fact tables: ingested after the others by the state machine, held to the others'
    // watermarks by ingest, transformed into fact tables by transform.
    let transformed_into_facts = utils::tables::TABLES.iter().filter(|t| {
        matches!(
            transform::route::Route::of(t),
            Ok(transform::route::Route::Stream(
                transform::route::Streamed::Fact { .. }
            ))
        )
    });
    let facts = sorted(strings(&local("sfn.tf", "fact_tables")));
    assert_eq!(
        facts,
        sorted(transformed_into_facts.map(|t| t.name.to_owned())),
        "local.fact_tables and transform's fact routes"
    );
    assert_eq!(
        facts,
        sorted(ingest::FACT_TABLES.iter().map(|t| t.to_string())),
        "local.fact_tables and ingest::FACT_TABLES"
    );
    // var.tables' validations name the registry's tables, and its fact tables.
    let variables = std::fs::read_to_string(terraform_dir().join("variables.tf")).unwrap();
    let start = variables.find("variable \"tables\"").unwrap();
    let block = &variables[start..start + variables[start..].find("\n}\n").unwrap()];
    let quoted = |names: &mut dyn Iterator<Item = &str>| {
        names.map(|n| format!("\"{n}\"")).collect::<Vec<_>>()
    };
    let validations: Vec<&str> = block.split("validation {").skip(1).collect();
    assert_eq!(validations.len(), 2, "{block}");
    for name in quoted(&mut utils::tables::TABLES.iter().map(|t| t.name)) {
        assert!(
            validations[0].contains(&name),
            "{name} in {}",
            validations[0]
        );
    }
    let (fact, dimension): (Vec<_>, Vec<_>) =
        utils::tables::TABLES.iter().partition(|t| t.is_fact());
    let second = validations[1];
    let (facts_part, dimensions_part) = second.split_once("setsubtract").unwrap();
    for name in quoted(&mut fact.iter().map(|t| t.name)) {
        assert!(facts_part.contains(&name), "{name}");
        assert!(!dimensions_part.contains(&name), "{name}");
    }
    for name in quoted(&mut dimension.iter().map(|t| t.name)) {
        assert!(dimensions_part.contains(&name), "{name}");
    }
}

#[test]
fn the_error_metric_filter_matches_the_error_lines() {
    // utils::lambda logs one line per failed invocation at level ERROR, and
    // utils::logging::json_subscriber puts `level` at the top level (both unit-tested there).
    let body = parse("monitoring.tf");
    let filter = labelled(
        &body,
        "resource",
        &["aws_cloudwatch_log_metric_filter", "error_lines"],
    );
    assert_eq!(
        attribute(&filter.body, "pattern"),
        &Expression::String("{ $.level = \"ERROR\" }".into())
    );
}

#[test]
fn the_quarantine_metric_filter_matches_what_transform_logs() {
    let body = parse("monitoring.tf");
    let filter = labelled(
        &body,
        "resource",
        &["aws_cloudwatch_log_metric_filter", "quarantined_rows"],
    );
    let Expression::String(pattern) = attribute(&filter.body, "pattern") else {
        panic!("pattern is not a plain string")
    };
    let message = pattern
        .strip_prefix("{ $.message = \"")
        .and_then(|p| p.strip_suffix("\" }"))
        .expect("a filter on the message");
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/transform/src/staging.rs"),
    )
    .unwrap();
    assert!(
        source.contains(&format!("\"{message}\"")) && source.contains("rows = written.rows"),
        "transform logs {message:?} with a rows field"
    );
}

/// The text of `local.<name>` in `file`, as HCL.
fn local_text(file: &str, name: &str) -> String {
    local(file, name).to_string()
}

/// The folder of an object key the code writes: `_state/ingest/t.json` → `_state/ingest`.
fn folder(key: &str) -> &str {
    key.rsplit_once('/').expect("a key in a folder").0
}

#[test]
fn roles_may_write_where_the_code_writes_its_state() {
    let ingest = folder(&utils::watermark::state_key("t")).to_owned();
    assert!(
        local_text("iam.tf", "ingest_state").contains(&format!("/{ingest}/*")),
        "ingest's role reaches {ingest}/"
    );
    let snapshots = folder(&transform::snapshot::snapshot_key("t")).to_owned();
    assert!(
        local_text("iam.tf", "transform_extras").contains(&format!("/{snapshots}/*")),
        "transform's role reaches {snapshots}/"
    );
    let cursor = folder(utils::cursor::TRANSFORM_CURSOR_KEY).to_owned();
    assert!(
        local_text("iam.tf", "transform_extras").contains(&format!("/{cursor}/*")),
        "transform's role reaches {cursor}/"
    );
    // Transform queues processed files there, load takes them off.
    let queue = local_text("iam.tf", "load_queue");
    assert!(
        queue.contains(&format!("/{}*", utils::cursor::PENDING_PREFIX)),
        "{queue}"
    );
    let iam = std::fs::read_to_string(terraform_dir().join("iam.tf")).unwrap();
    for (sid, action) in [
        ("QueueProcessedFiles", "s3:PutObject"),
        ("TakeFilesOffTheQueue", "s3:DeleteObject"),
    ] {
        let at = iam.find(&format!("\"{sid}\"")).expect(sid);
        let statement = &iam[at..at + iam[at..].find('}').unwrap()];
        assert!(statement.contains(action), "{statement}");
        assert!(statement.contains("local.load_queue"), "{statement}");
    }
    // The operators' policy writes what `etl replay` and `etl rebuild-snapshots` write.
    let body = parse("iam.tf");
    let operator = labelled(&body, "data", &["aws_iam_policy_document", "operator"]);
    let writes = blocks(&operator.body, "statement")
        .find(|s| strings(attribute(&s.body, "actions")) == ["s3:PutObject"])
        .expect("the operators' write statement");
    let resources = attribute(&writes.body, "resources").to_string();
    assert!(resources.contains("local.ingest_state"), "{resources}");
    assert!(
        resources.contains(&format!("/{snapshots}/*")),
        "{resources}"
    );
    assert!(resources.contains(&format!("/{cursor}/*")), "{resources}");
    // ... holding the pipeline's lock, the state machine's item.
    let lock = blocks(&operator.body, "statement")
        .find(|s| {
            attribute(&s.body, "resources")
                .to_string()
                .contains("aws_dynamodb_table.lock.arn")
        })
        .expect("the operators' lock statement");
    assert_eq!(
        strings(attribute(&lock.body, "actions")),
        [
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:DeleteItem"
        ]
    );
}

#[test]
fn s3_triggers_fire_on_table_prefixes_only() {
    // Table prefixes only, so neither _state/ nor quarantine/ objects trigger anything.
    let triggers = local("s3.tf", "s3_triggers");
    let triggers = object(&triggers);
    let trigger = |bucket: &str| {
        let t = object(triggers[bucket]);
        (t["function"].to_string(), t["prefixes"].to_string())
    };
    // ... and the datasets' queue for transform (whose markers come after their files), and the
    // datasets' processed prefixes for the load.
    let queue = utils::cursor::DATASET_PENDING_PREFIX.trim_end_matches('/');
    assert_eq!(
        trigger("ingest"),
        (
            "\"transform\"".to_owned(),
            format!(
                "concat(local.source_tables, length(local.dataset_names) > 0 ? [\"{queue}\"] : [])"
            )
        )
    );
    assert_eq!(
        trigger("processed"),
        (
            "\"load\"".to_owned(),
            "concat(local.warehouse_tables, local.dataset_names)".to_owned()
        )
    );
    assert_eq!(local_text("s3.tf", "source_tables"), "var.tables");
}

/// The `statement` blocks of `data "aws_iam_policy_document" "<name>"` in `file` whose
/// principals include the service `principal`.
fn statements_for(file: &str, name: &str, principal: &str) -> Vec<Block> {
    let body = parse(file);
    let document = labelled(&body, "data", &["aws_iam_policy_document", name]);
    blocks(&document.body, "statement")
        .filter(|s| {
            blocks(&s.body, "principals").any(|p| {
                attribute(&p.body, "identifiers")
                    .to_string()
                    .contains(&format!("\"{principal}\""))
            })
        })
        .cloned()
        .collect()
}

fn depends_on(file: &str, labels: &[&str]) -> Vec<String> {
    let body = parse(file);
    let Expression::Array(items) =
        attribute(&labelled(&body, "resource", labels).body, "depends_on")
    else {
        panic!("{labels:?}: depends_on is not a list")
    };
    items.iter().map(|e| e.to_string()).collect()
}

#[test]
fn eventbridge_may_use_the_topic_key_and_keeps_what_it_cannot_deliver() {
    // EventBridge publishing to a KMS-encrypted topic does not support aws:SourceAccount (SNS
    // developer guide, key management): under that condition every status message is dropped.
    let events = statements_for("kms.tf", "kms", "events.amazonaws.com");
    assert!(
        !events.is_empty(),
        "the key policy lets EventBridge use the key"
    );
    for statement in &events {
        assert_eq!(
            blocks(&statement.body, "condition").count(),
            0,
            "no condition"
        );
        let actions = strings(attribute(&statement.body, "actions"));
        for action in ["kms:Decrypt", "kms:GenerateDataKey*"] {
            assert!(actions.contains(&action.to_owned()), "{action}");
        }
    }

    // The topic policy too: EventBridge's user guide says condition blocks are not supported
    // in SNS topic policies for EventBridge. CloudWatch's statement keeps its condition.
    let events = statements_for("monitoring.tf", "alarms_topic", "events.amazonaws.com");
    assert_eq!(events.len(), 1, "one statement lets EventBridge publish");
    assert_eq!(
        blocks(&events[0].body, "condition").count(),
        0,
        "no condition"
    );
    assert_eq!(
        strings(attribute(&events[0].body, "actions")),
        ["sns:Publish"]
    );
    let principals = |s: &Block| -> Vec<String> {
        blocks(&s.body, "principals")
            .flat_map(|p| strings(attribute(&p.body, "identifiers")))
            .collect()
    };
    assert_eq!(principals(&events[0]), ["events.amazonaws.com"]);
    let cloudwatch = statements_for("monitoring.tf", "alarms_topic", "cloudwatch.amazonaws.com");
    assert_eq!(cloudwatch.len(), 1);
    assert_eq!(principals(&cloudwatch[0]), ["cloudwatch.amazonaws.com"]);
    let condition = blocks(&cloudwatch[0].body, "condition")
        .next()
        .expect("CloudWatch's statement keeps its condition");
    assert_eq!(
        attribute(&condition.body, "variable").to_string(),
        "\"aws:SourceAccount\""
    );

    // Only the runs that did not succeed are sent (one a success every few minutes buries
    // them).
    let monitoring = parse("monitoring.tf");
    let rule = labelled(
        &monitoring,
        "resource",
        &["aws_cloudwatch_event_rule", "execution_status"],
    );
    let pattern = attribute(&rule.body, "event_pattern").to_string();
    assert!(
        pattern.contains("[\"FAILED\", \"TIMED_OUT\", \"ABORTED\"]"),
        "{pattern}"
    );
    assert!(!pattern.contains("SUCCEEDED"), "{pattern}");
    // Of every state machine there is.
    assert!(
        pattern.contains("local.watched_state_machines"),
        "{pattern}"
    );
    let watched = local_text("monitoring.tf", "watched_state_machines");
    let mut machines = Vec::new();
    for entry in std::fs::read_dir(terraform_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".tf") {
            let body = parse(&name);
            machines.extend(
                blocks(&body, "resource")
                    .filter(|b| b.labels[0].as_str() == "aws_sfn_state_machine")
                    .map(|b| b.labels[1].as_str().to_owned()),
            );
        }
    }
    assert!(machines.len() >= 3, "{machines:?}");
    for m in machines {
        assert!(
            watched.contains(&format!("aws_sfn_state_machine.{m}[*].arn")),
            "{m}: {watched}"
        );
    }

    // What the topic still refuses is retried, then kept in the dead-letter queue, which
    // EventBridge may write to for this rule, and the rule's failures alarm.
    let target = labelled(
        &monitoring,
        "resource",
        &["aws_cloudwatch_event_target", "execution_status"],
    );
    assert_eq!(blocks(&target.body, "retry_policy").count(), 1);
    let dead_letter = blocks(&target.body, "dead_letter_config")
        .next()
        .expect("a dead-letter queue");
    assert_eq!(
        attribute(&dead_letter.body, "arn").to_string(),
        "aws_sqs_queue.dead_letter.arn"
    );
    let lambda = parse("lambda.tf");
    let queue_policy = labelled(&lambda, "data", &["aws_iam_policy_document", "dead_letter"]);
    let statement = blocks(&queue_policy.body, "dynamic")
        .find(|d| d.labels.iter().any(|l| l.as_str() == "statement"))
        .expect("the statement for EventBridge");
    assert_eq!(
        attribute(&statement.body, "for_each").to_string(),
        "aws_cloudwatch_event_rule.execution_status"
    );
    let alarms = local_text("monitoring.tf", "event_rule_alarms");
    assert!(
        alarms.contains("aws_cloudwatch_event_rule.execution_status")
            && alarms.contains("\"FailedInvocations\""),
        "{alarms}"
    );
}

#[test]
fn no_function_reserves_concurrency_unless_asked() {
    // Lambda keeps 100 executions unreserved and new accounts often have a quota of 10: a
    // reservation there fails the apply. The state machine's lock runs one pipeline at a time.
    let variables = parse("variables.tf");
    let settings = labelled(&variables, "variable", &["lambda_settings"]);
    let defaults = attribute(&settings.body, "default");
    for (function, setting) in object(defaults) {
        assert!(
            !object(setting).contains_key("concurrency"),
            "{function} reserves concurrency by default"
        );
    }
    let functions = local("lambda.tf", "functions");
    for (function, settings) in object(&functions) {
        let concurrency = object(settings)["concurrency"].to_string();
        let variable = format!("var.lambda_settings.{function}.concurrency");
        // s3 mode: nothing but the reservation keeps two ingests or transforms apart.
        let expected = match function.as_str() {
            "load" => variable,
            _ => format!("local.use_s3_triggers ? 1 : {variable}"),
        };
        assert_eq!(concurrency, expected, "{function}");
    }
}

#[test]
fn resources_wait_for_the_permissions_aws_checks_when_creating_them() {
    // Step Functions checks log delivery at create; Lambda checks that a VPC-attached
    // function's role may create network interfaces.
    assert!(
        depends_on("sfn.tf", &["aws_sfn_state_machine", "pipeline"])
            .contains(&"aws_iam_role_policy.state_machine".to_owned())
    );
    let lambda = depends_on("lambda.tf", &["aws_lambda_function", "pipeline"]);
    for policy in [
        "aws_iam_role_policy.lambda",
        "aws_iam_role_policy_attachment.lambda_vpc",
    ] {
        assert!(lambda.contains(&policy.to_owned()), "{policy}");
    }
}

#[test]
fn the_state_goes_to_a_backend_and_the_provider_to_the_checked_releases() {
    let versions = parse("versions.tf");
    let terraform = blocks(&versions, "terraform")
        .next()
        .expect("terraform block");
    let backend = blocks(&terraform.body, "backend")
        .next()
        .expect("a backend: without one the state, passwords included, is a local file");
    assert_eq!(backend.labels[0].as_str(), "s3");
    assert_eq!(
        backend.body.iter().count(),
        0,
        "partial configuration, given at init"
    );

    // make check validates against the 6.69 schema (tf-offline: cdktn-provider-aws 25.8.1).
    let providers = blocks(&terraform.body, "required_providers")
        .next()
        .unwrap();
    let aws = object(attribute(&providers.body, "aws"));
    assert_eq!(aws["version"].to_string(), "\"~> 6.69.0\"");
}

#[test]
fn the_secrets_recovery_window_is_a_setting() {
    // A destroy and apply within a fixed 7-day window fails: the name is still taken.
    let secrets = parse("secrets.tf");
    let secret = labelled(&secrets, "resource", &["aws_secretsmanager_secret", "db"]);
    assert_eq!(
        attribute(&secret.body, "recovery_window_in_days").to_string(),
        "var.secret_recovery_window_days"
    );
}

/// The Glue (Hive DDL) type of a column of this Arrow type, as Athena reads it from the Parquet
/// the code writes. Hive has no time type: Athena's reader (Trino's) reads an INT64 annotated
/// TIME(MICROS) into a bigint, the microseconds since midnight.
fn hive_type(arrow: &DataType) -> String {
    match arrow {
        DataType::Int32 => "int".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Utf8 => "string".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 => "date".into(),
        DataType::Time64(TimeUnit::Microsecond) => "bigint".into(),
        other => panic!("no Athena type for the Arrow type {other}: add one here and in lake.tf"),
    }
}

/// Whether Athena reads a Parquet column stored as `column` into a `hive` column: the pairs its
/// Parquet reader accepts (Trino's ColumnReaderFactory) for the types the lake uses.
fn athena_reads(hive: &str, column: &ColumnDescriptor) -> bool {
    let physical = column.physical_type();
    let logical = column.logical_type_ref();
    match (hive, logical) {
        ("int", None) => physical == PhysicalType::INT32,
        ("int", Some(LogicalType::Integer(int))) => {
            physical == PhysicalType::INT32 && int.bit_width == 32 && int.is_signed
        }
        ("bigint", None | Some(LogicalType::Integer(_) | LogicalType::Time(_))) => {
            physical == PhysicalType::INT64
        }
        ("date", Some(LogicalType::Date)) => physical == PhysicalType::INT32,
        ("timestamp", Some(LogicalType::Timestamp(_))) => physical == PhysicalType::INT64,
        ("string", Some(LogicalType::String)) => physical == PhysicalType::BYTE_ARRAY,
        ("boolean", None) => physical == PhysicalType::BOOLEAN,
        (decimal, Some(LogicalType::Decimal(d))) => {
            decimal == format!("decimal({},{})", d.precision, d.scale)
                && matches!(
                    physical,
                    PhysicalType::INT32
                        | PhysicalType::INT64
                        | PhysicalType::FIXED_LEN_BYTE_ARRAY
                        | PhysicalType::BYTE_ARRAY
                )
        }
        _ => false,
    }
}

/// `local.<name>` of lake.tf: table → [(column, Glue type)], in order.
fn lake_columns(name: &str) -> BTreeMap<String, Vec<(String, String)>> {
    object(&local("lake.tf", name))
        .into_iter()
        .map(|(table, columns)| {
            let Expression::Array(columns) = columns else {
                panic!("{name}.{table} is not a list")
            };
            let columns = columns
                .iter()
                .map(|pair| match strings(pair).as_slice() {
                    [column, glue] => (column.clone(), glue.clone()),
                    other => panic!("{name}.{table}: {other:?} is not [name, type]"),
                })
                .collect();
            (table, columns)
        })
        .collect()
}

/// Checks one zone's Glue columns against the Arrow schemas the code writes for it.
fn assert_zone_columns(
    zone: &str,
    glue: BTreeMap<String, Vec<(String, String)>>,
    written: BTreeMap<String, Arc<Schema>>,
) {
    assert_eq!(
        glue.keys().collect::<Vec<_>>(),
        written.keys().collect::<Vec<_>>(),
        "the tables of local.{zone}"
    );
    for (table, schema) in written {
        let expected: Vec<(String, String)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), hive_type(f.data_type())))
            .collect();
        assert_eq!(glue[&table], expected, "local.{zone}.{table}");
        assert!(
            expected.iter().all(|(c, _)| c != "dt"),
            "{table} has a column named like the partition key"
        );
        // The Parquet the writer makes of that schema is what Athena reads as those types.
        let parquet = ArrowSchemaConverter::new().convert(&schema).unwrap();
        for (column, (name, hive)) in parquet.columns().iter().zip(&expected) {
            assert_eq!(column.name(), name);
            assert!(
                athena_reads(hive, column),
                "{table}.{name}: Athena does not read {:?} {:?} as {hive}",
                column.physical_type(),
                column.logical_type_ref()
            );
        }
    }
}

#[test]
fn the_lake_tables_have_the_columns_and_types_the_code_writes() {
    let raw = utils::tables::TABLES
        .iter()
        .map(|t| (t.name.to_owned(), t.arrow_schema()))
        .collect();
    assert_zone_columns("raw_columns", lake_columns("raw_columns"), raw);
    let processed = utils::warehouse::WAREHOUSE_TABLES
        .iter()
        .map(|t| (t.name.to_owned(), t.arrow_schema()))
        .collect();
    assert_zone_columns(
        "processed_columns",
        lake_columns("processed_columns"),
        processed,
    );

    // Every table of both zones is in the catalog, with those columns.
    let lake = local_text("lake.tf", "lake_tables");
    for expected in [
        "for t in local.source_tables : \"raw_${t}\"",
        "columns = local.raw_columns[t]",
        "for t in local.warehouse_tables : t",
        "columns = local.processed_columns[t]",
    ] {
        assert!(lake.contains(expected), "{expected} in {lake}");
    }
    let body = parse("lake.tf");
    let table = labelled(&body, "resource", &["aws_glue_catalog_table", "lake"]);
    assert_eq!(
        attribute(&table.body, "for_each").to_string(),
        "local.lake_tables"
    );
    let storage = blocks(&table.body, "storage_descriptor").next().unwrap();
    let columns = blocks(&storage.body, "dynamic")
        .next()
        .expect("dynamic columns");
    assert_eq!(columns.labels[0].as_str(), "columns");
    assert_eq!(
        attribute(&columns.body, "for_each").to_string(),
        "each.value.columns"
    );
}

/// A quoted HCL string attribute's raw text, interpolations included.
fn template(expr: &Expression) -> String {
    match expr {
        Expression::String(s) => s.clone(),
        Expression::TemplateExpr(t) => match t.as_ref() {
            hcl::TemplateExpr::QuotedString(s) => s.clone(),
            other => panic!("not a quoted string: {other}"),
        },
        other => panic!("not a string: {other}"),
    }
}

#[test]
fn partition_projection_finds_every_file_the_code_writes() {
    let body = parse("lake.tf");
    let table = labelled(&body, "resource", &["aws_glue_catalog_table", "lake"]);
    let parameters = object(attribute(&table.body, "parameters"));
    let parameter = |name: &str| template(parameters[name]);
    let partition = blocks(&table.body, "partition_keys").collect::<Vec<_>>();
    assert_eq!(partition.len(), 1, "one partition key");
    let key = template(attribute(&partition[0].body, "name"));
    assert_eq!(template(attribute(&partition[0].body, "type")), "string");
    assert_eq!(parameter("projection.enabled"), "true");
    assert_eq!(parameter(&format!("projection.{key}.type")), "date");
    assert_eq!(parameter(&format!("projection.{key}.interval")), "1");
    assert_eq!(
        parameter(&format!("projection.{key}.interval.unit")),
        "DAYS"
    );
    assert!(parameter(&format!("projection.{key}.range")).ends_with(",NOW"));

    // The template, for one table of one bucket: s3://BUCKET/TABLE/${key}/.
    let bucket = "${aws_s3_bucket.data[each.value.bucket].id}";
    let location = template(parameters["storage.location.template"])
        .replace(bucket, "bucket")
        .replace("${each.value.prefix}", "sales_order");
    // The storage location is where every projected partition lives.
    let storage = blocks(&table.body, "storage_descriptor").next().unwrap();
    let base = template(attribute(&storage.body, "location"))
        .replace(bucket, "bucket")
        .replace("${each.value.prefix}", "sales_order");
    assert_eq!(base, "s3://bucket/sales_order/");
    // The projected day, as Athena renders it (Java's pattern letters: yyyy MM dd only).
    let java = parameter(&format!("projection.{key}.format"));
    let pattern = java
        .replace("yyyy", "%Y")
        .replace("MM", "%m")
        .replace("dd", "%d");
    assert!(
        !pattern.contains(|c: char| c.is_ascii_alphabetic() && c != 'Y' && c != 'm' && c != 'd'),
        "{java}"
    );
    for micros in [
        1_731_576_605_123_456_i64,
        1_704_067_199_999_000,
        1_709_251_200_000_001,
    ] {
        let t = chrono::DateTime::from_timestamp_micros(micros).unwrap();
        let partition = location.replace(&format!("$${{{key}}}"), &t.format(&pattern).to_string());
        let key = utils::keys::parquet_key("sales_order", t);
        let file = format!("s3://bucket/{key}");
        let name = file
            .strip_prefix(&partition)
            .unwrap_or_else(|| panic!("{file} is not under the projected partition {partition}"));
        assert!(!name.contains('/'), "{file}: directly in {partition}");
    }

    // lake_first_day is a day in the projection's format.
    let variables = parse("variables.tf");
    let first = labelled(&variables, "variable", &["lake_first_day"]);
    let day = template(attribute(&first.body, "default"));
    assert!(
        chrono::NaiveDate::parse_from_str(&day, &pattern).is_ok(),
        "{day}"
    );
    assert_eq!(
        parameter(&format!("projection.{key}.range")),
        "${var.lake_first_day},NOW"
    );
}

/// The identifiers that follow each occurrence of `prefix` in `text`.
fn identifiers_after(text: &str, prefix: &str) -> Vec<String> {
    text.match_indices(prefix)
        .map(|(i, _)| {
            text[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

fn metric(name: &str) -> utils::metrics::Metric {
    *utils::metrics::METRICS
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("the dashboard or an alarm reads {name}, which no Lambda emits"))
}

#[test]
fn the_dashboard_and_the_freshness_alarm_read_the_metrics_the_lambdas_emit() {
    use utils::metrics::{BY_STAGE, BY_TABLE, FRESHNESS_LAG, METRICS, STAGES};
    // Every Lambda writes its metrics into the deployment's namespace.
    for (name, function) in object(&local("lambda.tf", "functions")) {
        let env = object(object(function)["environment"]);
        assert_eq!(
            env[utils::metrics::NAMESPACE_VAR].to_string(),
            "var.project",
            "{name}"
        );
    }

    let widgets = local_text("dashboard.tf", "dashboard_widgets");
    // SEARCH expressions over {namespace,Stage,Table}: metrics reported by stage and table.
    assert_eq!(
        template(&local("dashboard.tf", "by_table")),
        format!("{{${{var.project}},{}}}", BY_TABLE.join(","))
    );
    let searched = identifiers_after(&widgets, "MetricName=\"");
    assert!(searched.len() >= 5, "{searched:?}");
    for name in &searched {
        assert_eq!(metric(name).dimensions, BY_TABLE, "{name}");
    }
    // Metrics named in full: [namespace, name, "Stage", stage], reported by stage alone.
    let by_stage = identifiers_after(&widgets, "[var.project, \"");
    assert!(!by_stage.is_empty());
    for name in &by_stage {
        assert_eq!(metric(name).dimensions, BY_STAGE, "{name}");
    }
    assert!(
        widgets.contains(&format!("for stage in [\"{}\"]", STAGES.join("\", \""))),
        "the durations of every stage"
    );
    for stage in identifiers_after(&widgets, "Stage=\"") {
        assert!(STAGES.contains(&stage.as_str()), "{stage}");
    }
    // Every metric the Lambdas emit is on the dashboard.
    for m in METRICS {
        assert!(
            searched.iter().chain(&by_stage).any(|n| n == m.name),
            "{} is not on the dashboard",
            m.name
        );
    }

    // The freshness alarm: one per source table, on transform's end-to-end lag by stage and
    // table.
    let body = parse("dashboard.tf");
    let alarm = labelled(
        &body,
        "resource",
        &["aws_cloudwatch_metric_alarm", "freshness"],
    );
    assert_eq!(
        attribute(&alarm.body, "for_each").to_string(),
        "toset(local.source_tables)"
    );
    assert_eq!(
        attribute(&alarm.body, "namespace").to_string(),
        "var.project"
    );
    assert_eq!(
        template(attribute(&alarm.body, "metric_name")),
        FRESHNESS_LAG.name
    );
    let dimensions = object(attribute(&alarm.body, "dimensions"));
    assert_eq!(dimensions.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut d = FRESHNESS_LAG.dimensions.to_vec();
        d.sort();
        d
    });
    assert_eq!(dimensions["Stage"].to_string(), "\"transform\"");
    assert_eq!(dimensions["Table"].to_string(), "each.key");
    let Expression::Array(actions) = attribute(&alarm.body, "alarm_actions") else {
        panic!("alarm_actions is not a list")
    };
    assert_eq!(
        actions.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        ["aws_sns_topic.alarms.arn"]
    );
    // Missing data never breaches: a new alarm waits for the first figures instead of firing
    // before the first run; a table no transform reports goes to INSUFFICIENT_DATA, notified.
    assert_eq!(
        attribute(&alarm.body, "treat_missing_data").to_string(),
        "var.schedule_enabled ? \"missing\" : \"notBreaching\""
    );
    assert_eq!(
        attribute(&alarm.body, "insufficient_data_actions").to_string(),
        "var.schedule_enabled ? [aws_sns_topic.alarms.arn] : []"
    );
}

#[test]
fn the_athena_scan_alarm_sums_the_dimension_sets_athena_reports() {
    // Athena reports ProcessedBytes by QueryState, QueryType and WorkGroup together: an alarm
    // on {WorkGroup} alone matches no series and can never fire.
    let body = parse("lake.tf");
    let alarm = labelled(
        &body,
        "resource",
        &["aws_cloudwatch_metric_alarm", "athena_bytes_scanned"],
    );
    assert!(
        blocks(&alarm.body, "dimensions").next().is_none()
            && !alarm
                .body
                .attributes()
                .any(|a| a.key.as_str() == "dimensions"),
        "no single-series dimensions"
    );
    let states = strings(&local("lake.tf", "athena_query_states"));
    for state in ["SUCCEEDED", "FAILED", "CANCELLED"] {
        assert!(states.contains(&state.to_owned()), "{state}");
    }
    let queries = blocks(&alarm.body, "dynamic")
        .next()
        .expect("one query per state");
    let content = blocks(&queries.body, "content").next().unwrap();
    let metric = blocks(&content.body, "metric").next().unwrap();
    assert_eq!(
        template(attribute(&metric.body, "metric_name")),
        "ProcessedBytes"
    );
    let dimensions = object(attribute(&metric.body, "dimensions"));
    assert_eq!(
        dimensions.keys().map(String::as_str).collect::<Vec<_>>(),
        ["QueryState", "QueryType", "WorkGroup"]
    );
    assert_eq!(dimensions["QueryType"].to_string(), "\"DML\"");
    assert_eq!(
        attribute(&metric.body, "period").to_string(),
        "86400",
        "a day"
    );
    let total = blocks(&alarm.body, "metric_query").next().expect("the sum");
    let expression = attribute(&total.body, "expression").to_string();
    assert!(
        expression.contains("FILL(${lower(state)}, 0)"),
        "{expression}"
    );
    assert_eq!(attribute(&total.body, "return_data").to_string(), "true");
}

#[test]
fn analysts_may_run_athena_queries_as_athena_asks() {
    let body = parse("lake.tf");
    let document = labelled(&body, "data", &["aws_iam_policy_document", "analyst"]);
    let statements: Vec<&Block> = blocks(&document.body, "statement").collect();
    let grants = |action: &str, resource: &str| {
        statements.iter().any(|s| {
            strings(attribute(&s.body, "actions")).contains(&action.to_owned())
                && attribute(&s.body, "resources")
                    .to_string()
                    .contains(resource)
                && (blocks(&s.body, "condition").next().is_none())
        })
    };
    // Athena's own catalog look-ups, SHOW DATABASES, and the console.
    assert!(grants("glue:GetDatabase", ":database/default"));
    assert!(grants("glue:CreateDatabase", ":database/default"));
    assert!(grants("glue:GetDatabases", ":database/*"));
    // The datasets' tables, in their sources' databases (datasets.tf) as in the lake's.
    for action in ["glue:GetDatabase", "glue:GetTable", "glue:GetPartitions"] {
        assert!(
            grants(action, "aws_glue_catalog_database.lake.arn"),
            "{action}"
        );
        assert!(
            grants(action, "aws_glue_catalog_database.dataset_source : db.arn"),
            "{action}"
        );
        assert!(grants(action, "table/${db.name}/*"), "{action}");
    }
    for action in [
        "athena:ListWorkGroups",
        "athena:ListDataCatalogs",
        "athena:ListEngineVersions",
    ] {
        assert!(grants(action, "*"), "{action}");
    }
    // GetBucketLocation under no s3:prefix condition (its requests carry none).
    assert!(grants("s3:GetBucketLocation", "local.bucket_arn.processed"));
    for s in &statements {
        if blocks(&s.body, "condition")
            .any(|c| attribute(&c.body, "variable").to_string() == "\"s3:prefix\"")
        {
            assert_eq!(strings(attribute(&s.body, "actions")), ["s3:ListBucket"]);
        }
    }
}

#[test]
fn the_glue_types_cover_every_declared_type() {
    let types = object(&local("datasets.tf", "hive_types"))
        .into_keys()
        .collect::<BTreeSet<_>>();
    let declared: BTreeSet<String> = [
        "smallint",
        "integer",
        "bigint",
        "text",
        "boolean",
        "date",
        "timestamp",
        "timestamptz",
        "time",
        "point",
    ]
    .into_iter()
    .map(|t| {
        // Each is a type the declarations accept, spelled as they spell it.
        let kind: datasets::decl::Kind = t.parse().unwrap();
        kind.to_string()
    })
    .collect();
    assert_eq!(types, declared);
    // decimal(p,s) is taken as it is written.
    let columns = local_text("datasets.tf", "dataset_columns");
    assert!(
        columns.contains("startswith(c.type, \"decimal(\")"),
        "{columns}"
    );
}

/// The state machine `name` of `<name>.tf` is given exactly the placeholders of its template,
/// `<name>.asl.json`, and the template uses no directive.
fn template_gets_exactly_its_placeholders(name: &str) {
    let text = std::fs::read_to_string(terraform_dir().join(format!("{name}.asl.json"))).unwrap();
    assert!(!text.contains("%{"), "no template directives");
    let body = parse(&format!("{name}.tf"));
    let machine = labelled(&body, "resource", &["aws_sfn_state_machine", name]);
    let Expression::FuncCall(call) = attribute(&machine.body, "definition") else {
        panic!("definition is not a templatefile() call")
    };
    let given: BTreeSet<String> = object(&call.args[1]).into_keys().collect();
    assert_eq!(given, placeholder_re(&text), "{name}");
}

#[test]
fn the_dataset_backfill_template_gets_exactly_its_placeholders() {
    template_gets_exactly_its_placeholders("dataset_backfill");
}

/// What the first load's Distributed Map sends ingest is what ingest reads as landed keys,
/// its transient errors are retried, and a batch is run again until ingest has all of it.
#[test]
fn the_dataset_backfill_hands_ingest_its_batches_and_runs_each_until_it_is_in() {
    let machine = rendered("dataset_backfill.asl.json");
    let map = &machine["States"]["Files"];
    assert_eq!(
        map["ItemReader"]["Resource"],
        "arn:aws:states:::s3:listObjectsV2"
    );
    assert_eq!(map["ItemReader"]["Parameters"]["Prefix.$"], "$.prefix");
    assert_eq!(
        map["ItemProcessor"]["ProcessorConfig"]["Mode"],
        "DISTRIBUTED"
    );
    assert!(map["MaxConcurrency"].as_u64().unwrap() >= 1);
    // A batch as the Map builds it: listObjectsV2 items through the ItemSelector, batched.
    assert_eq!(map["ItemSelector"]["key.$"], "$$.Map.Item.Value.Key");
    let keys = [
        "landing/trips/a.csv",
        "landing/trips/",
        "landing/trips/b.csv",
    ];
    let batch = serde_json::json!({"Items": keys.iter().map(|k| serde_json::json!({"key": k})).collect::<Vec<_>>()});
    let states = &map["ItemProcessor"]["States"];
    let ingest = &states["Ingest"];
    let payload = ingest["Parameters"]["Payload"].as_object().unwrap();
    assert_eq!(payload.len(), 1);
    assert_eq!(payload["landed.$"], "$.Items[*].key");
    let landed: Vec<Value> = batch["Items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["key"].clone())
        .collect();
    let event = serde_json::json!({ "landed": landed });
    let datasets = datasets::bundled(&utils::tables::reserved_names()).unwrap();
    let request = ingest::dataset::request_from_event(&event, Some("landing"), &datasets)
        .unwrap()
        .unwrap();
    assert_eq!(
        request,
        ingest::dataset::Request::Keys(keys.iter().map(|k| k.to_string()).collect())
    );

    // The transient errors ingest raises for datasets, and Lambda's own, are retried.
    let retried = error_names(ingest, "Retry");
    for transient in [
        "TransientStorageError",
        "TransientSecretError",
        "Lambda.TooManyRequestsException",
    ] {
        assert!(
            retried.contains(&transient.to_owned()),
            "{transient}: {retried:?}"
        );
    }
    // A file that cannot be read is recorded by ingest, so the batch is run again (the next
    // invocation passes it by); so is a batch ingest left at its deadline.
    let catch = &ingest["Catch"][0];
    assert_eq!(catch["ErrorEquals"], serde_json::json!(["InvalidInput"]));
    assert_eq!(catch["Next"], "Ingest");
    assert_eq!(ingest["ResultSelector"]["complete.$"], "$.Payload.complete");
    let all_in = &states[ingest["Next"].as_str().unwrap()];
    assert_eq!(all_in["Choices"][0]["Variable"], "$.ingested.complete");
    assert_eq!(all_in["Choices"][0]["BooleanEquals"], false);
    assert_eq!(all_in["Choices"][0]["Next"], "Ingest");
    // The Map's results (thousands) are not kept in the execution's state.
    assert_eq!(map.get("ResultPath"), Some(&Value::Null));
}

#[test]
fn the_dataset_api_template_gets_exactly_its_placeholders() {
    template_gets_exactly_its_placeholders("dataset_api");
}

/// What an API dataset's schedule starts, the plan and the Map's items, are what ingest reads
/// as a plan and as a range; a range is run again until ingest has read it to its end.
#[test]
fn the_dataset_api_machine_plans_then_reads_each_range_until_it_is_in() {
    use ingest::api::Work;
    let datasets = datasets::bundled(&utils::tables::reserved_names()).unwrap();
    let request = |event: Value| {
        ingest::dataset::request_from_event(&event, None, &datasets)
            .unwrap()
            .unwrap()
    };
    // The schedule's input, as dataset_api.tf builds it.
    let body = parse("dataset_api.tf");
    let target = labelled(
        &body,
        "resource",
        &["aws_cloudwatch_event_target", "dataset_api"],
    );
    let input = attribute(&target.body, "input").to_string();
    assert!(
        input.contains("api") && input.contains("dataset = each.key"),
        "{input}"
    );
    assert!(input.contains("concurrency"), "{input}");
    let start = serde_json::json!({"api": {"dataset": "nyc_crashes"}, "concurrency": 4});

    let machine = rendered("dataset_api.asl.json");
    let plan = &machine["States"]["Plan"];
    assert_eq!(
        plan["Parameters"]["Payload"],
        serde_json::json!({"api.$": "$.api"})
    );
    assert_eq!(
        request(serde_json::json!({"api": start["api"]})),
        ingest::dataset::Request::Api {
            dataset: "nyc_crashes".into(),
            work: Work::Plan
        }
    );
    assert_eq!(
        plan["ResultSelector"]["ranges.$"],
        "$.Payload.api_plan.ranges"
    );
    let planned = &machine["States"][plan["Next"].as_str().unwrap()];
    assert_eq!(plan["ResultSelector"]["complete.$"], "$.Payload.complete");
    assert_eq!(planned["Choices"][0]["Variable"], "$.plan.complete");
    assert_eq!(planned["Choices"][0]["BooleanEquals"], false);
    assert_eq!(planned["Choices"][0]["Next"], "Plan");
    let map = &machine["States"][planned["Default"].as_str().unwrap()];
    assert_eq!(map["ItemsPath"], "$.plan.ranges");
    assert_eq!(map["MaxConcurrencyPath"], "$.concurrency");
    assert_eq!(
        map["ItemSelector"],
        serde_json::json!({"api": {"dataset.$": "$.plan.dataset", "range.$": "$$.Map.Item.Value"}})
    );
    assert_eq!(
        request(serde_json::json!({"api": {"dataset": "nyc_crashes", "range": 2}})),
        ingest::dataset::Request::Api {
            dataset: "nyc_crashes".into(),
            work: Work::Range(2)
        }
    );
    let states = &map["ItemProcessor"]["States"];
    let read = &states["Read"];
    assert_eq!(
        read["Parameters"]["Payload"],
        serde_json::json!({"api.$": "$.api"})
    );
    let retried = error_names(read, "Retry");
    for transient in [
        "TransientSourceError",
        "TransientStorageError",
        "TransientSecretError",
        "Lambda.TooManyRequestsException",
    ] {
        assert!(
            retried.contains(&transient.to_owned()),
            "{transient}: {retried:?}"
        );
    }
    assert_eq!(error_names(plan, "Retry"), retried);
    let again = &states[read["Next"].as_str().unwrap()];
    assert_eq!(again["Choices"][0]["Variable"], "$.read.complete");
    assert_eq!(again["Choices"][0]["BooleanEquals"], false);
    assert_eq!(again["Choices"][0]["Next"], "Read");
    assert_eq!(read["ResultSelector"]["complete.$"], "$.Payload.complete");
}
