//! What an invocation asks for: which tables to ingest.

use serde_json::Value;
use utils::tables::{TABLES, TableSpec, table};

use crate::error::{Error, Result};

/// Accepts `{}` (the `deployed` tables), an EventBridge scheduled event (the same), or
/// `{"tables_to_query": ["sales_order", ...]}`. Tables come back in registry order (parents
/// first), each once. Anything else is an `InvalidEvent`; a name not in the registry is an
/// `UnknownTable`.
pub fn tables_from_event(
    event: &Value,
    deployed: &[&'static TableSpec],
) -> Result<Vec<&'static TableSpec>> {
    let Value::Object(fields) = event else {
        return Err(Error::InvalidEvent(format!(
            "expected a JSON object, got {}",
            json_kind(event)
        )));
    };
    let scheduled = fields.get("source").and_then(Value::as_str) == Some("aws.events")
        && fields.contains_key("detail-type");
    if scheduled {
        return Ok(deployed.to_vec());
    }
    if let Some(unexpected) = fields.keys().find(|k| *k != "tables_to_query") {
        return Err(Error::InvalidEvent(format!(
            "unexpected field {unexpected:?}: expected {{}}, an EventBridge scheduled event, \
             or {{\"tables_to_query\": [table, ...]}}"
        )));
    }
    let Some(requested) = fields.get("tables_to_query") else {
        return Ok(deployed.to_vec());
    };
    let Value::Array(names) = requested else {
        return Err(Error::InvalidEvent(format!(
            "tables_to_query must be a list of table names, got {}",
            json_kind(requested)
        )));
    };
    if names.is_empty() {
        return Err(Error::InvalidEvent(
            "tables_to_query is empty: omit it to ingest every table".into(),
        ));
    }
    let mut wanted = Vec::with_capacity(names.len());
    for name in names {
        let Value::String(name) = name else {
            return Err(Error::InvalidEvent(format!(
                "tables_to_query must hold table names, got {}",
                json_kind(name)
            )));
        };
        wanted.push(table(name)?);
    }
    Ok(TABLES
        .iter()
        .filter(|t| wanted.iter().any(|w| std::ptr::eq(*w, *t)))
        .collect())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn all() -> Vec<&'static TableSpec> {
        TABLES.iter().collect()
    }

    fn names(v: Value) -> Vec<&'static str> {
        tables_from_event(&v, &all())
            .unwrap()
            .iter()
            .map(|t| t.name)
            .collect()
    }

    #[test]
    fn empty_object_and_scheduled_event_mean_every_table() {
        assert_eq!(names(json!({})).len(), 11);
        let scheduled = json!({
            "version": "0", "id": "53dc4d37", "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "123456789012", "time": "2024-11-14T09:30:00Z",
            "region": "eu-west-2", "resources": ["arn:aws:events:eu-west-2:123456789012:rule/x"],
            "detail": {}
        });
        assert_eq!(names(scheduled).len(), 11);
        // The deployed tables, where fewer are.
        let deployed = [table("currency").unwrap(), table("design").unwrap()];
        let got = tables_from_event(&json!({}), &deployed).unwrap();
        assert_eq!(got, deployed);
    }

    #[test]
    fn requested_tables_come_back_once_in_registry_order() {
        assert_eq!(
            names(json!({"tables_to_query": ["payment", "staff", "payment"]})),
            ["staff", "payment"]
        );
    }

    #[test]
    fn malformed_events_are_invalid_events() {
        for (event, message) in [
            (
                json!([]),
                "invalid event: expected a JSON object, got a list",
            ),
            (
                json!("sales_order"),
                "invalid event: expected a JSON object, got a string",
            ),
            (
                json!({"tables_to_query": "staff"}),
                "invalid event: tables_to_query must be a list of table names, got a string",
            ),
            (
                json!({"tables_to_query": [1]}),
                "invalid event: tables_to_query must hold table names, got a number",
            ),
            (
                json!({"tables_to_query": []}),
                "invalid event: tables_to_query is empty: omit it to ingest every table",
            ),
            (
                json!({"table_to_query": ["staff"]}),
                "invalid event: unexpected field \"table_to_query\": expected {}, an \
                 EventBridge scheduled event, or {\"tables_to_query\": [table, ...]}",
            ),
        ] {
            let e = tables_from_event(&event, &all()).unwrap_err();
            assert_eq!(e.error_type(), "InvalidEvent");
            assert_eq!(e.to_string(), message);
        }
    }

    #[test]
    fn unknown_and_injection_shaped_names_are_unknown_tables() {
        for name in ["staffs", "staff\"; DROP TABLE staff; --"] {
            let e = tables_from_event(&json!({"tables_to_query": ["staff", name]}), &all())
                .unwrap_err();
            assert_eq!(e.error_type(), "UnknownTable");
            assert!(e.to_string().contains(&format!("{name:?}")), "{e}");
        }
    }
}
