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

    /// `files`, (table, key) pairs in order, as a list of `bucket`.
    pub fn of<'a>(bucket: &str, files: impl IntoIterator<Item = (&'a str, String)>) -> Self {
        let mut list = FileList::new(bucket);
        for (table, key) in files {
            list.push(table, key);
        }
        list
    }

    /// Adds `key` to `table`'s list.
    pub fn push(&mut self, table: &str, key: String) {
        self.files.entry(table.to_owned()).or_default().push(key);
    }

    /// How many keys the list holds.
    pub fn len(&self) -> usize {
        self.files.values().map(Vec::len).sum()
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
        assert!(FileList::new("raw").is_empty());
        let list = FileList::of(
            "raw",
            [("staff", "staff/1".into()), ("staff", "staff/2".into())],
        );
        assert_eq!(list.len(), 2);
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            json!({"bucket": "raw", "files": {"staff": ["staff/1", "staff/2"]}})
        );
    }
}
