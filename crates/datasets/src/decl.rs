//! A dataset's declaration: `datasets/<name>.json`, the one place that says where a dataset's
//! files land, how to read them, its typed columns and what to do with them. JSON, because
//! Terraform reads it natively (`jsondecode(file(...))`) as well as serde.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

/// One declared dataset.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    /// Lower-case letters, digits and `_`: it names the raw zone's prefix and the tables.
    pub name: String,
    pub description: String,
    pub source: Source,
    pub columns: Vec<Column>,
    /// The natural key, for `merge` and `insert-ignore`: declared column names.
    #[serde(default)]
    pub key: Vec<String>,
    pub write_mode: WriteMode,
    /// What a column in the file that is not declared does.
    #[serde(default)]
    pub on_new_column: Policy,
    /// What a declared column missing from the file does (`ignore`: it is NULL, so it must be
    /// nullable).
    #[serde(default)]
    pub on_missing_column: Policy,
    /// Table-level metadata (source, licence, ...), written into every Parquet file's footer.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The warehouse table the load writes, and the views over it. Without it, the dataset
    /// goes to the lake only.
    #[serde(default)]
    pub warehouse: Option<Warehouse>,
}

/// The dataset's table in the warehouse and the views the load keeps over it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Warehouse {
    /// The table's name (default: the dataset's). The load creates it from the declaration
    /// if it is missing, with a unique index on the key.
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub views: Vec<View>,
}

/// A materialized view the load creates if it is missing and refreshes after every load
/// that changes its table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct View {
    pub name: String,
    /// Its query.
    pub sql: String,
    /// Columns unique over its rows: a unique index on them lets a refresh run
    /// `CONCURRENTLY`, so readers of the view never wait for it.
    #[serde(default)]
    pub unique: Vec<String>,
}

/// Where the files land and how they are read, or the HTTP API the records are paged from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The source the dataset is one of (lowercase letters, digits and `_`): the lake
    /// registers it as `<source>/<dataset>`, its Glue table in the database
    /// `<lake database>_<source>` (Terraform). Without it, the lake's own database.
    #[serde(default)]
    pub name: Option<String>,
    /// The landing prefix, ending in `/` (empty for an API).
    #[serde(default)]
    pub prefix: String,
    /// The paged HTTP API the records come from, in place of landed files.
    #[serde(default)]
    pub api: Option<crate::api::Api>,
    pub format: Format,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub csv: CsvDialect,
    /// For an Excel workbook: the sheet and the row its header is on.
    #[serde(default)]
    pub xlsx: XlsxSheet,
    /// For JSON Lines records with an encrypted payload: where it and its key material are.
    #[serde(default)]
    pub encryption: Option<crate::crypt::Encryption>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    /// JSON Lines: an object per line, its members by column name.
    Jsonl,
    /// Parquet: its columns by name, each value read under the declared type.
    Parquet,
    /// An Excel workbook (Office Open XML): one sheet, a header row naming the columns.
    Xlsx,
    /// An API's pages: a JSON array of objects, their members by column name.
    Json,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    /// gzip, one member or several concatenated.
    Gzip,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsvDialect {
    pub delimiter: char,
    pub quote: char,
    /// The first record names the columns. Without a header, the columns are taken in their
    /// declared order.
    pub header: bool,
}

impl Default for CsvDialect {
    fn default() -> Self {
        CsvDialect {
            delimiter: ',',
            quote: '"',
            header: true,
        }
    }
}

/// Which sheet of a workbook holds the rows, and where its header is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XlsxSheet {
    /// The sheet's name (default: the workbook's first sheet).
    pub sheet: Option<String>,
    /// The row (1 is the first) that names the columns; the rows above it (a title, notes)
    /// are passed over, and the rows below it are the records.
    pub header_row: u32,
}

impl Default for XlsxSheet {
    fn default() -> Self {
        XlsxSheet {
            sheet: None,
            header_row: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteMode {
    /// Every row is added.
    Append,
    /// A row replaces the one with its key.
    Merge,
    /// A row whose key is there already is dropped (`ON CONFLICT DO NOTHING`).
    InsertIgnore,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    #[default]
    Fail,
    Ignore,
}

/// One declared column.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(default = "yes")]
    pub nullable: bool,
    /// chrono formats accepted for dates, times and timestamps, tried in order (each kind has
    /// ISO 8601 defaults).
    #[serde(default)]
    pub formats: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub unit: Option<String>,
}

fn yes() -> bool {
    true
}

/// A column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    SmallInt,
    Integer,
    BigInt,
    Decimal {
        precision: u8,
        scale: i8,
    },
    Text,
    Boolean,
    Date,
    /// Without a zone.
    Timestamp,
    /// With a zone, kept as UTC.
    TimestampTz,
    Time,
    /// A WKT `POINT (lon lat)`.
    Point,
}

impl Kind {
    /// The Arrow type it is written as.
    pub fn data_type(self) -> DataType {
        match self {
            Kind::SmallInt => DataType::Int16,
            Kind::Integer => DataType::Int32,
            Kind::BigInt => DataType::Int64,
            Kind::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
            Kind::Text => DataType::Utf8,
            Kind::Boolean => DataType::Boolean,
            Kind::Date => DataType::Date32,
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::Time => DataType::Time64(TimeUnit::Microsecond),
            Kind::Point => DataType::Struct(point_fields()),
        }
    }
}

/// A point's fields: longitude then latitude, as WKT orders them.
pub fn point_fields() -> Fields {
    Fields::from(vec![
        Field::new("lon", DataType::Float64, false),
        Field::new("lat", DataType::Float64, false),
    ])
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::SmallInt => f.write_str("smallint"),
            Kind::Integer => f.write_str("integer"),
            Kind::BigInt => f.write_str("bigint"),
            Kind::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            Kind::Text => f.write_str("text"),
            Kind::Boolean => f.write_str("boolean"),
            Kind::Date => f.write_str("date"),
            Kind::Timestamp => f.write_str("timestamp"),
            Kind::TimestampTz => f.write_str("timestamptz"),
            Kind::Time => f.write_str("time"),
            Kind::Point => f.write_str("point"),
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "smallint" => Kind::SmallInt,
            "integer" => Kind::Integer,
            "bigint" => Kind::BigInt,
            "text" => Kind::Text,
            "boolean" => Kind::Boolean,
            "date" => Kind::Date,
            "timestamp" => Kind::Timestamp,
            "timestamptz" => Kind::TimestampTz,
            "time" => Kind::Time,
            "point" => Kind::Point,
            _ => {
                return decimal(s).ok_or_else(|| {
                    format!(
                        "unknown type {s:?}: expected smallint, integer, bigint, decimal(p,s) with \
                     1 <= p <= 38 and 0 <= s <= p, text, boolean, date, timestamp, \
                     timestamptz, time or point"
                    )
                });
            }
        })
    }
}

fn decimal(s: &str) -> Option<Kind> {
    let inner = s.strip_prefix("decimal(")?.strip_suffix(')')?;
    let (p, s) = inner.split_once(',')?;
    let (precision, scale): (u8, i8) = (p.trim().parse().ok()?, s.trim().parse().ok()?);
    ((1..=38).contains(&precision) && scale >= 0 && scale as u8 <= precision)
        .then_some(Kind::Decimal { precision, scale })
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Dataset {
    /// Reads and checks one declaration file.
    pub fn load(path: &Path) -> Result<Dataset> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Declaration {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Dataset::parse(&text, &path.display().to_string())
    }

    /// Reads and checks one declaration's text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Dataset> {
        let invalid = |reason: String| Error::Declaration {
            path: path.to_owned(),
            reason,
        };
        let dataset: Dataset = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        dataset.check().map_err(invalid)?;
        Ok(dataset)
    }

    /// The warehouse table the load writes, if any.
    pub fn warehouse_table(&self) -> Option<&str> {
        let w = self.warehouse.as_ref()?;
        Some(w.table.as_deref().unwrap_or(&self.name))
    }

    /// Every declaration under `dir` (`*.json`), by name.
    pub fn load_dir(dir: &Path) -> Result<Vec<Dataset>> {
        let unreadable = |e: std::io::Error| Error::Declaration {
            path: dir.display().to_string(),
            reason: e.to_string(),
        };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(unreadable)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .map_err(unreadable)?;
        paths.retain(|p| p.extension().is_some_and(|e| e == "json"));
        paths.sort();
        paths.iter().map(|p| Dataset::load(p)).collect()
    }

    /// What serde cannot say: names, the key, the prefix, the dialect.
    fn check(&self) -> std::result::Result<(), String> {
        let plain = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !plain(&self.name) {
            return Err(format!(
                "name {:?}: expected lower-case letters, digits and _",
                self.name
            ));
        }
        if let Some(source) = &self.source.name
            && !plain(source)
        {
            return Err(format!(
                "source.name {source:?}: expected lower-case letters, digits and _ (a Glue \
                 database's name)"
            ));
        }
        if let Some(api) = &self.source.api {
            if !self.source.prefix.is_empty() {
                return Err(
                    "source: an API's records do not land: declare source.api or source.prefix, \
                     not both"
                        .into(),
                );
            }
            let extension = match self.source.format {
                Format::Json => ".json",
                Format::Csv => ".csv",
                _ => "",
            };
            if extension.is_empty() || self.source.compression != Compression::None {
                return Err("source.format: an API's pages are read as \"json\" or \"csv\"".into());
            }
            api.check()?;
            if self.source.format == Format::Csv
                && (!api.records.is_empty()
                    || matches!(api.paginator, crate::api::Paginator::Link { next: Some(_) }))
            {
                return Err(
                    "source.api: a CSV page is its records, with no member to point at: declare \
                     no records selector, and a link paginator without next (the Link header)"
                        .into(),
                );
            }
            if !api.resource.ends_with(extension) {
                return Err(format!(
                    "source.api.resource {:?}: source.format is {:?}, so its path ends in {extension}",
                    api.resource,
                    &extension[1..]
                ));
            }
            if self.write_mode == WriteMode::Append && api.cursor.lookback_seconds > 0 {
                return Err(
                    "write_mode \"append\": each window reads its lookback again, so rows would \
                     be added twice; declare merge or insert-ignore on a key, or \
                     source.api.cursor.lookback_seconds 0"
                        .into(),
                );
            }
            if let Some(c) = api
                .paging_members()
                .into_iter()
                .find(|m| self.column(m).is_some())
            {
                return Err(format!(
                    "source.api.cursor: {c:?} pages through the records; it is not a column"
                ));
            }
        } else if self.source.format == Format::Json {
            return Err(
                "source.format \"json\" is for an API's pages; a file of JSON records is \"jsonl\""
                    .into(),
            );
        } else if !self.source.prefix.ends_with('/') || self.source.prefix.starts_with('/') {
            return Err(format!(
                "source.prefix {:?}: expected a prefix like \"landing/trips/\"",
                self.source.prefix
            ));
        }
        if self.columns.is_empty() {
            return Err("columns: none declared".into());
        }
        for (i, c) in self.columns.iter().enumerate() {
            if !plain(&c.name) {
                return Err(format!(
                    "column {:?}: expected lower-case letters, digits and _",
                    c.name
                ));
            }
            if self.columns[..i].iter().any(|d| d.name == c.name) {
                return Err(format!("column {:?}: declared twice", c.name));
            }
            let timed = matches!(
                c.kind,
                Kind::Date | Kind::Timestamp | Kind::TimestampTz | Kind::Time
            );
            if !c.formats.is_empty() && !timed {
                return Err(format!(
                    "column {:?}: formats are for dates, times and timestamps, not {}",
                    c.name, c.kind
                ));
            }
        }
        for k in &self.key {
            if self.column(k).is_none() {
                return Err(format!("key column {k:?} is not declared"));
            }
        }
        if self.key.is_empty() && self.write_mode != WriteMode::Append {
            return Err(format!("write_mode {:?} needs a key", self.write_mode));
        }
        if let Some(w) = &self.warehouse {
            let names = w.table.iter().chain(w.views.iter().map(|v| &v.name));
            if let Some(bad) = names.into_iter().find(|n| !plain(n)) {
                return Err(format!(
                    "warehouse: name {bad:?}: expected lower-case letters, digits and _"
                ));
            }
            for v in &w.views {
                if v.sql.trim().is_empty() {
                    return Err(format!("warehouse view {:?}: its sql is empty", v.name));
                }
                if let Some(bad) = v.unique.iter().find(|c| !plain(c)) {
                    return Err(format!(
                        "warehouse view {:?}: unique column {bad:?}: expected lower-case \
                         letters, digits and _",
                        v.name
                    ));
                }
            }
        }
        if let Some(e) = &self.source.encryption {
            if self.source.format != Format::Jsonl {
                return Err(
                    "source.encryption: only JSON Lines records carry encrypted fields".into(),
                );
            }
            if let Some(c) = e.members().find(|m| self.column(m).is_some()) {
                return Err(format!(
                    "source.encryption: member {c:?} holds key material or the payload, not a column"
                ));
            }
        }
        let packed = matches!(self.source.format, Format::Parquet | Format::Xlsx);
        if packed && self.source.compression != Compression::None {
            return Err(
                "source.compression: Parquet and xlsx files are compressed within; declare \"none\""
                    .into(),
            );
        }
        if self.source.xlsx.header_row == 0 {
            return Err("source.xlsx.header_row: rows are numbered from 1".into());
        }
        let dialect = &self.source.csv;
        if !dialect.delimiter.is_ascii() || !dialect.quote.is_ascii() {
            return Err("source.csv: the delimiter and quote must be ASCII".into());
        }
        Ok(())
    }

    /// The Parquet columns written without a dictionary: those whose values rarely repeat
    /// (points' coordinates, timestamps, times, decimals), where building one only costs time
    /// before Parquet falls back to plain encoding anyway. A point's are its two fields.
    pub fn plain_columns(&self) -> Vec<String> {
        self.columns
            .iter()
            .flat_map(|c| match c.kind {
                Kind::Point => vec![format!("{}.lon", c.name), format!("{}.lat", c.name)],
                Kind::Timestamp | Kind::TimestampTz | Kind::Time | Kind::Decimal { .. } => {
                    vec![c.name.clone()]
                }
                _ => Vec::new(),
            })
            .collect()
    }

    /// The landing prefix its files arrive under; `None` for an API's dataset.
    pub fn landing_prefix(&self) -> Option<&str> {
        self.source
            .api
            .is_none()
            .then_some(self.source.prefix.as_str())
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The typed rows' schema: each field's description and unit in its metadata, the
    /// dataset's metadata in the schema's.
    pub fn schema(&self) -> Schema {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| {
                let metadata: std::collections::HashMap<String, String> =
                    [("description", &c.description), ("unit", &c.unit)]
                        .into_iter()
                        .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
                        .collect();
                Field::new(&c.name, c.kind.data_type(), c.nullable).with_metadata(metadata)
            })
            .collect();
        let mut metadata: std::collections::HashMap<String, String> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        metadata.insert("dataset".into(), self.name.clone());
        metadata.insert("description".into(), self.description.clone());
        Schema::new(fields).with_metadata(metadata)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn trips() -> Dataset {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets");
        Dataset::load(&dir.join("trips.json")).unwrap()
    }

    fn parse(v: serde_json::Value) -> std::result::Result<Dataset, String> {
        let d: Dataset = serde_json::from_value(v).map_err(|e| e.to_string())?;
        d.check()?;
        Ok(d)
    }

    fn minimal() -> serde_json::Value {
        json!({
            "name": "t", "description": "d",
            "source": {"prefix": "landing/t/", "format": "csv"},
            "columns": [{"name": "a", "type": "integer"}],
            "write_mode": "append"
        })
    }

    #[test]
    fn every_declaration_in_the_repository_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets");
        let all = Dataset::load_dir(&dir).unwrap();
        assert!(all.iter().any(|d| d.name == "trips"));
        let t = trips();
        assert_eq!(t.write_mode, WriteMode::InsertIgnore);
        assert_eq!(t.column("origin_coord").unwrap().kind, Kind::Point);
    }

    #[test]
    fn encryption_is_for_json_lines_and_its_members_are_not_columns() {
        let encryption = json!({"field": "payload", "encrypted_key": "meta.key",
                                "iv": "meta.iv", "key_id": "meta.key_id",
                                "kms_key": "alias/k"});
        let mut v = minimal();
        v["source"]["encryption"] = encryption.clone();
        let e = parse(v.clone()).unwrap_err();
        assert!(e.contains("only JSON Lines"), "{e}");
        v["source"]["format"] = json!("jsonl");
        let d = parse(v.clone()).unwrap();
        let e = d.source.encryption.unwrap();
        assert_eq!(e.mode, crate::crypt::Mode::Aes256Gcm);
        assert_eq!(
            e.members().collect::<Vec<_>>(),
            ["payload", "meta", "meta", "meta"]
        );
        v["columns"] = json!([{"name": "meta", "type": "text"}]);
        let e = parse(v).unwrap_err();
        assert!(e.contains("member \"meta\""), "{e}");
    }

    #[test]
    fn defaults_and_types() {
        let d = parse(minimal()).unwrap();
        assert_eq!(d.source.compression, Compression::None);
        assert_eq!(d.source.csv, CsvDialect::default());
        assert_eq!(
            (d.on_new_column, d.on_missing_column),
            (Policy::Fail, Policy::Fail)
        );
        assert!(d.columns[0].nullable);
        for (s, kind) in [
            (
                "decimal(10,2)",
                Kind::Decimal {
                    precision: 10,
                    scale: 2,
                },
            ),
            (
                "decimal(38, 0)",
                Kind::Decimal {
                    precision: 38,
                    scale: 0,
                },
            ),
            ("timestamptz", Kind::TimestampTz),
            ("point", Kind::Point),
        ] {
            assert_eq!(s.parse::<Kind>().unwrap(), kind);
        }
        assert_eq!(
            Kind::Decimal {
                precision: 10,
                scale: 2
            }
            .to_string(),
            "decimal(10,2)"
        );
    }

    #[test]
    fn mistakes_are_named() {
        let with = |path: &[&str], v: serde_json::Value| {
            let mut d = minimal();
            let mut at = &mut d;
            for p in &path[..path.len() - 1] {
                at = &mut at[*p];
            }
            at[path[path.len() - 1]] = v;
            parse(d).unwrap_err()
        };
        for (e, expected) in [
            (
                with(&["name"], json!("Trips")),
                "name \"Trips\": expected lower-case",
            ),
            (
                with(&["source", "prefix"], json!("trips")),
                "source.prefix \"trips\"",
            ),
            (
                with(&["source", "format"], json!("xml")),
                "unknown variant `xml`",
            ),
            (
                with(&["source", "delimiter"], json!(";")),
                "unknown field `delimiter`",
            ),
            (
                with(
                    &["columns"],
                    json!([{"name": "a", "type": "decimal(40,2)"}]),
                ),
                "unknown type \"decimal(40,2)\"",
            ),
            (
                with(&["columns"], json!([{"name": "a", "type": "int"}])),
                "unknown type \"int\"",
            ),
            (
                with(
                    &["columns"],
                    json!([{"name": "a", "type": "text"}, {"name": "a", "type": "text"}]),
                ),
                "column \"a\": declared twice",
            ),
            (
                with(
                    &["columns"],
                    json!([{"name": "a", "type": "text", "formats": ["%Y"]}]),
                ),
                "formats are for dates",
            ),
            (
                with(&["key"], json!(["b"])),
                "key column \"b\" is not declared",
            ),
            (
                with(&["write_mode"], json!("merge")),
                "write_mode Merge needs a key",
            ),
            (
                with(&["source", "name"], json!("Open Data")),
                "source.name \"Open Data\": expected lower-case letters",
            ),
        ] {
            assert!(e.contains(expected), "{e:?} lacks {expected:?}");
        }
    }

    #[test]
    fn an_api_source_has_no_prefix_reads_json_or_csv_and_pages_on_members_not_columns() {
        let api = json!({"base_url": "https://data.example.org", "resource": "/resource/x.json",
                         "cursor": {"initial": "2024-01-01T00:00:00", "lookback_seconds": 0}});
        let mut v = minimal();
        v["source"] = json!({"format": "json", "api": api});
        let d = parse(v.clone()).unwrap();
        assert_eq!(d.landing_prefix(), None);
        let mut csv = v.clone();
        csv["source"]["format"] = json!("csv");
        csv["source"]["api"]["resource"] = json!("/resource/x.csv");
        parse(csv.clone()).unwrap();
        csv["source"]["api"]["records"] = json!("/data");
        assert!(
            parse(csv)
                .unwrap_err()
                .contains("a CSV page is its records")
        );
        for (source, says) in [
            (
                json!({"prefix": "landing/t/", "format": "json", "api": api}),
                "not both",
            ),
            (
                json!({"format": "csv", "api": api}),
                "so its path ends in .csv",
            ),
            (
                json!({"format": "jsonl", "api": api}),
                "read as \"json\" or \"csv\"",
            ),
            (
                json!({"prefix": "landing/t/", "format": "json"}),
                "is for an API's pages",
            ),
        ] {
            let mut bad = v.clone();
            bad["source"] = source;
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        // Each window reads its lookback again: append would add those rows twice.
        let mut lookback = v.clone();
        lookback["source"]["api"]["cursor"]["lookback_seconds"] = json!(60);
        let e = parse(lookback.clone()).unwrap_err();
        assert!(e.contains("rows would be added twice"), "{e}");
        lookback["source"]["api"]["cursor"]["lookback_seconds"] = json!(0);
        parse(lookback).unwrap();
        let mut bad = v.clone();
        bad["source"]["api"]["cursor"]["id"] = json!("a");
        bad["columns"] = json!([{"name": "a", "type": "text"}]);
        let e = parse(bad).unwrap_err();
        assert!(e.contains("pages through the records"), "{e}");
        // Two API datasets never overlap as prefixes do.
        let mut other = d.clone();
        other.name = "u".into();
        crate::check_together(&[d, other], &[]).unwrap();
    }

    #[test]
    fn a_declaration_file_that_does_not_parse_names_itself() {
        let dir = std::env::temp_dir().join(format!("decl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.json");
        std::fs::write(&path, r#"{"name": "t"}"#).unwrap();
        let e = Dataset::load(&path).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.contains("bad.json") && e.contains("missing field"), "{e}");
    }

    #[test]
    fn the_schema_carries_descriptions_units_and_table_metadata() {
        let schema = trips().schema();
        let field = schema.field_with_name("datetime").unwrap();
        assert!(field.metadata().contains_key("description"));
        assert_eq!(schema.metadata()["dataset"], "trips");
        assert!(schema.metadata().contains_key("licence"));
        assert_eq!(
            schema.field_with_name("origin_coord").unwrap().data_type(),
            &DataType::Struct(point_fields())
        );
    }
}
