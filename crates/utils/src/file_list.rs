//! The files one stage hands the next: `{"bucket": ..., "files": {table: [key, ...]}}`, the
//! shape of every stage's output and of the work an incomplete invocation leaves
//! (`"remaining"`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A table's keys as events give them: a list, oldest first, or (what outputs held before a
/// table's window could span several files) a single key, read as a list of one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Keys {
    One(String),
    Many(Vec<String>),
}

impl Keys {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Keys::One(key) => vec![key],
            Keys::Many(keys) => keys,
        }
    }
}

/// Files of one bucket, per table, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FileList {
    pub bucket: String,
    pub files: BTreeMap<String, Vec<String>>,
}

impl FileList {
    pub fn new(bucket: &str) -> Self {
        FileList {
            bucket: bucket.to_owned(),
            files: BTreeMap::new(),
        }
    }

    /// Adds `key` to `table`'s list.
    pub fn push(&mut self, table: &str, key: String) {
        self.files.entry(table.to_owned()).or_default().push(key);
    }

    pub fn is_empty(&self) -> bool {
        self.files.values().all(Vec::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_key_or_a_list() {
        let files: BTreeMap<String, Keys> = serde_json::from_value(
            json!({"a": "a/1.parquet", "b": ["b/1.parquet", "b/2.parquet"]}),
        )
        .unwrap();
        assert_eq!(files["a"].clone().into_vec(), ["a/1.parquet"]);
        assert_eq!(
            files["b"].clone().into_vec(),
            ["b/1.parquet", "b/2.parquet"]
        );
        assert!(serde_json::from_value::<Keys>(json!(1)).is_err());
    }

    #[test]
    fn a_list_serialises_as_the_stages_output_shape() {
        let mut list = FileList::new("raw");
        assert!(list.is_empty());
        list.push("staff", "staff/1".into());
        list.push("staff", "staff/2".into());
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            json!({"bucket": "raw", "files": {"staff": ["staff/1", "staff/2"]}})
        );
    }
}
