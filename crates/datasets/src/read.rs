//! A landed file (CSV or JSON Lines, plain or gzip, one member or several) read as typed
//! batches of bounded size, each with the rows it quarantined. Every value is taken as text and
//! parsed under its column's declaration (arrow's CSV reader fails a whole batch on one bad
//! value); a JSON number keeps its exact text.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use csv::{ByteRecord, ReaderBuilder};
use flate2::read::MultiGzDecoder;
use serde_json::value::RawValue;

use crate::cast::{Columns, Value, parse};
use crate::crypt::{self, DataKeys};
use crate::decl::{Compression, Dataset, Format, Policy};
use crate::error::{Error, Result};

/// A row that could not be typed, with where it was and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub file: String,
    /// The line the record starts on (1 is the first line, the header where there is one).
    pub line: u64,
    /// The column whose value did not parse (`None`: the record as a whole).
    pub column: Option<String>,
    pub reason: String,
    /// The value as it was in the file (lossy where it was not UTF-8).
    pub value: String,
}

/// One batch: the rows that parsed and the ones that did not.
#[derive(Debug)]
pub struct Batch {
    pub rows: RecordBatch,
    pub quarantined: Vec<Quarantined>,
    /// The bytes of input (decompressed) the batch's records took.
    pub bytes: usize,
}

/// Rows and bytes a batch holds at most: the bound on a reader's memory.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub rows: usize,
    pub bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            rows: 64 * 1024,
            bytes: 16 * 1024 * 1024,
        }
    }
}

/// A landed file being read.
pub struct LandedFile<'d> {
    dataset: &'d Dataset,
    file: String,
    schema: SchemaRef,
    records: Records<'d>,
}

type Input<'d> = Box<dyn Read + Send + 'd>;

enum Records<'d> {
    Csv {
        reader: csv::Reader<Input<'d>>,
        /// For each declared column, its field in a record (`None`: missing, read as NULL).
        fields: Vec<Option<usize>>,
        /// How many fields a record has.
        width: usize,
        record: ByteRecord,
    },
    Jsonl {
        reader: BufReader<Input<'d>>,
        line: u64,
        /// The record being read, reused from one to the next.
        raw: Vec<u8>,
        /// The key service, for encrypted payloads.
        keys: Option<Box<dyn DataKeys + 'd>>,
    },
}

/// One record's values by declared column (`None`: NULL), or why it has none.
type Texts<'r> = std::result::Result<Vec<Option<Cow<'r, str>>>, Quarantined>;

impl<'d> LandedFile<'d> {
    /// Starts reading `read`, the landed file named `file`: decompresses it as declared and,
    /// for a CSV file, reads the header and matches it with the declared columns under the
    /// declared policies.
    pub fn open(read: impl Read + Send + 'd, dataset: &'d Dataset, file: &str) -> Result<Self> {
        let read: Input<'d> = match dataset.source.compression {
            Compression::None => Box::new(read),
            Compression::Gzip => Box::new(MultiGzDecoder::new(read)),
        };
        let records = match dataset.source.format {
            Format::Csv => open_csv(read, dataset, file)?,
            Format::Jsonl => Records::Jsonl {
                reader: BufReader::new(read),
                line: 0,
                raw: Vec::new(),
                keys: None,
            },
        };
        Ok(LandedFile {
            dataset,
            file: file.into(),
            schema: Arc::new(dataset.schema()),
            records,
        })
    }

    /// Reads encrypted payloads with `keys` (a declaration with `source.encryption` needs it).
    pub fn with_keys(mut self, service: Box<dyn DataKeys + 'd>) -> Self {
        if let Records::Jsonl { keys, .. } = &mut self.records {
            *keys = Some(service);
        }
        self
    }

    /// The next batch, `None` at the end of the file. A read error (a corrupt gzip stream, a
    /// broken connection) is an `Unreadable` error: nothing of the file is to be kept.
    pub fn next_batch(&mut self, limits: BatchLimits) -> Result<Option<Batch>> {
        let LandedFile {
            dataset,
            file,
            schema,
            records,
        } = self;
        let mut columns = Columns::new(&dataset.columns);
        let mut quarantined = Vec::new();
        // Quarantined records count towards the limits too: a file of bad rows is bounded alike.
        let (mut bytes, mut seen) = (0, 0);
        while seen < limits.rows && bytes < limits.bytes {
            let Some((size, line, texts)) = records.next(dataset, file)? else {
                break;
            };
            seen += 1;
            bytes += size;
            let texts = match texts {
                Ok(texts) => texts,
                Err(q) => {
                    quarantined.push(q);
                    continue;
                }
            };
            let mut row: Vec<Value<'_>> = Vec::with_capacity(texts.len());
            let bad = dataset
                .columns
                .iter()
                .zip(&texts)
                .find_map(
                    |(column, text)| match parse(column, text.as_deref().unwrap_or("")) {
                        Ok(v) => {
                            row.push(v);
                            None
                        }
                        Err(reason) => Some((column, reason, text.as_deref().unwrap_or(""))),
                    },
                );
            match bad {
                None => columns.push(&row),
                Some((column, reason, value)) => quarantined.push(Quarantined {
                    file: file.clone(),
                    line,
                    column: Some(column.name.clone()),
                    reason,
                    value: value.to_string(),
                }),
            }
        }
        if seen == 0 {
            return Ok(None);
        }
        let rows = RecordBatch::try_new(schema.clone(), columns.finish())
            .expect("the builders follow the declared schema");
        Ok(Some(Batch {
            rows,
            quarantined,
            bytes,
        }))
    }
}

impl Records<'_> {
    /// The next record's size in bytes, the line it starts on and its values, `None` at the
    /// end.
    fn next(&mut self, dataset: &Dataset, file: &str) -> Result<Option<(usize, u64, Texts<'_>)>> {
        let unreadable = |reason: String| Error::Unreadable {
            file: file.into(),
            reason,
        };
        let quarantine = |line, reason: String, value: &[u8]| Quarantined {
            file: file.into(),
            line,
            column: None,
            reason,
            value: lossy(value),
        };
        match self {
            Records::Csv {
                reader,
                fields,
                width,
                record,
            } => {
                if !reader
                    .read_byte_record(record)
                    .map_err(|e| unreadable(e.to_string()))?
                {
                    return Ok(None);
                }
                let line = record.position().map_or(0, |p| p.line());
                let size = record.as_slice().len();
                if record.len() != *width {
                    let reason = format!("{} fields, expected {width}", record.len());
                    // The fields as they were, joined by the declared delimiter.
                    let delimiter = [dataset.source.csv.delimiter as u8];
                    let fields: Vec<&[u8]> = record.iter().collect();
                    let value = fields.join(&delimiter[..]);
                    return Ok(Some((size, line, Err(quarantine(line, reason, &value)))));
                }
                let mut texts = Vec::with_capacity(fields.len());
                for (column, field) in dataset.columns.iter().zip(fields.iter()) {
                    let raw = field.map_or(&b""[..], |i| &record[i]);
                    match std::str::from_utf8(raw) {
                        Ok(text) => texts.push(Some(Cow::Borrowed(text))),
                        Err(_) => {
                            let mut q = quarantine(line, "not UTF-8".into(), raw);
                            q.column = Some(column.name.clone());
                            return Ok(Some((size, line, Err(q))));
                        }
                    }
                }
                Ok(Some((size, line, Ok(texts))))
            }
            Records::Jsonl {
                reader,
                line,
                raw,
                keys,
            } => {
                loop {
                    raw.clear();
                    let n = reader
                        .read_until(b'\n', raw)
                        .map_err(|e| unreadable(e.to_string()))?;
                    if n == 0 {
                        return Ok(None);
                    }
                    *line += 1;
                    if !raw.trim_ascii().is_empty() {
                        break;
                    }
                }
                let size = raw.len();
                match std::str::from_utf8(raw.trim_ascii()) {
                    Ok(text) => {
                        let keys = keys.as_deref_mut().map(|k| k as &mut dyn DataKeys);
                        let texts = json_texts(dataset, file, *line, text, keys)?;
                        Ok(Some((size, *line, texts)))
                    }
                    Err(_) => {
                        let q = quarantine(*line, "not UTF-8".into(), raw);
                        Ok(Some((size, *line, Err(q))))
                    }
                }
            }
        }
    }
}

/// One JSON Lines record's values: a member's exact text (a string unescaped), `None` for
/// null or absent. A member that is not declared fails the file under `on_new_column = fail`.
/// An encrypted payload's members (see [`crate::crypt`]) are read as the record's own.
fn json_texts<'r>(
    dataset: &Dataset,
    file: &str,
    line: u64,
    text: &'r str,
    keys: Option<&mut dyn DataKeys>,
) -> Result<Texts<'r>> {
    let quarantine = |column: Option<&str>, reason: String, value: &str| Quarantined {
        file: file.into(),
        line,
        column: column.map(str::to_owned),
        reason,
        value: value.into(),
    };
    let record: HashMap<String, &'r RawValue> = match serde_json::from_str(text) {
        Ok(record) => record,
        Err(e) => {
            return Ok(Err(quarantine(
                None,
                format!("not a JSON object: {e}"),
                text,
            )));
        }
    };
    let mut plain: HashMap<String, Box<RawValue>> = HashMap::new();
    let mut encryption_members: Vec<&str> = Vec::new();
    if let Some(encryption) = &dataset.source.encryption {
        let Some(keys) = keys else {
            return Err(Error::Keys {
                file: file.into(),
                reason: "no key service to decrypt the declared encrypted payload".into(),
            });
        };
        encryption_members.extend(encryption.members());
        match crypt::decrypt(encryption, &record, keys) {
            // The value kept in quarantine is the record as it was: nothing decrypted.
            Err(Ok(reason)) => return Ok(Err(quarantine(None, reason, text))),
            Err(Err(reason)) => {
                return Err(Error::Keys {
                    file: file.into(),
                    reason,
                });
            }
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(members) => plain = members,
                Err(_) => {
                    let reason = "the payload does not decrypt to a JSON object".to_owned();
                    return Ok(Err(quarantine(Some(&encryption.field), reason, text)));
                }
            },
        }
    }
    // The first undeclared member by name, so the error is the same on every run.
    let undeclared = record
        .keys()
        .filter(|k| !encryption_members.contains(&k.as_str()))
        .chain(plain.keys())
        .filter(|k| dataset.column(k).is_none())
        .min();
    if let (Some(name), Policy::Fail) = (undeclared, dataset.on_new_column) {
        return Err(Error::Columns {
            file: file.into(),
            column: name.clone(),
            reason: format!(
                "in the record on line {line} but not declared (on_new_column is \"fail\")"
            ),
        });
    }
    let mut texts = Vec::with_capacity(dataset.columns.len());
    for column in &dataset.columns {
        // A decrypted member is owned by this call; the line's own are borrowed from it.
        let text = match plain.get(&column.name) {
            Some(v) => json_text(Some(v.get())).map(|t| t.map(|t| Cow::Owned(t.into_owned()))),
            None => json_text(record.get(&column.name).map(|v| v.get())),
        };
        match text {
            Ok(text) => texts.push(text),
            Err((reason, value)) => {
                return Ok(Err(quarantine(Some(&column.name), reason, &value)));
            }
        }
    }
    Ok(Ok(texts))
}

/// A member's text: a string unescaped, anything else as written, `None` for null or absent;
/// or why not and the value.
fn json_text(value: Option<&str>) -> std::result::Result<Option<Cow<'_, str>>, (String, String)> {
    match value {
        None | Some("null") => Ok(None),
        Some(v) if v.starts_with('"') => serde_json::from_str::<Cow<'_, str>>(v)
            .map(Some)
            .map_err(|e| (format!("not a JSON string: {e}"), v.to_owned())),
        Some(v) => Ok(Some(Cow::Borrowed(v))),
    }
}

fn open_csv<'d>(read: Input<'d>, dataset: &Dataset, file: &str) -> Result<Records<'d>> {
    let dialect = &dataset.source.csv;
    let mut reader = ReaderBuilder::new()
        .delimiter(dialect.delimiter as u8)
        .quote(dialect.quote as u8)
        .has_headers(false)
        .flexible(true)
        .from_reader(read);
    let mut record = ByteRecord::new();
    let (fields, width) = if dialect.header {
        let read = reader
            .read_byte_record(&mut record)
            .map_err(|e| Error::Unreadable {
                file: file.into(),
                reason: e.to_string(),
            })?;
        if !read {
            return Err(Error::Unreadable {
                file: file.into(),
                reason: "empty: no header".into(),
            });
        }
        (match_header(dataset, file, &record)?, record.len())
    } else {
        let n = dataset.columns.len();
        ((0..n).map(Some).collect(), n)
    };
    Ok(Records::Csv {
        reader,
        fields,
        width,
        record,
    })
}

fn match_header(dataset: &Dataset, file: &str, header: &ByteRecord) -> Result<Vec<Option<usize>>> {
    let column_error = |column: &str, reason: String| Error::Columns {
        file: file.into(),
        column: column.into(),
        reason,
    };
    let names: Vec<String> = header
        .iter()
        .map(|name| {
            lossy(name)
                .trim()
                .trim_start_matches('\u{feff}')
                .to_string()
        })
        .collect();
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(column_error(name, "named twice in the header".into()));
        }
        if dataset.column(name).is_none() && dataset.on_new_column == Policy::Fail {
            return Err(column_error(
                name,
                "in the file but not declared (on_new_column is \"fail\")".into(),
            ));
        }
    }
    dataset
        .columns
        .iter()
        .map(|c| match names.iter().position(|n| *n == c.name) {
            Some(i) => Ok(Some(i)),
            None if dataset.on_missing_column == Policy::Fail => Err(column_error(
                &c.name,
                "declared but not in the file (on_missing_column is \"fail\")".into(),
            )),
            None if !c.nullable => Err(column_error(
                &c.name,
                "declared but not in the file, and not nullable".into(),
            )),
            None => Ok(None),
        })
        .collect()
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int32Type, TimestampMicrosecondType};
    use flate2::Compression as Level;
    use flate2::write::GzEncoder;

    use super::*;
    use crate::decl::tests::trips;

    const HEADER: &str = "region,origin_coord,destination_coord,datetime,datasource\n";

    fn read_all(dataset: &Dataset, bytes: &[u8], limits: BatchLimits) -> Result<Vec<Batch>> {
        let mut file = LandedFile::open(bytes, dataset, "landing/trips/a.csv")?;
        let mut batches = Vec::new();
        while let Some(b) = file.next_batch(limits)? {
            batches.push(b);
        }
        Ok(batches)
    }

    /// Each quarantined row's line, column and value.
    fn places(b: &Batch) -> Vec<(u64, Option<&str>, &str)> {
        b.quarantined
            .iter()
            .map(|q| (q.line, q.column.as_deref(), q.value.as_str()))
            .collect()
    }

    fn gzip(members: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in members {
            let mut e = GzEncoder::new(Vec::new(), Level::default());
            e.write_all(m.as_bytes()).unwrap();
            out.extend(e.finish().unwrap());
        }
        out
    }

    #[test]
    fn good_rows_are_typed_and_bad_ones_quarantined_with_line_column_and_text() {
        let csv = format!(
            "{HEADER}\
             Prague,POINT (14.49 50.07),POINT (14.66 50.03),2018-05-28 09:03:40,funny_car\n\
             Turin,POINT (7.67 45.06),POINT (7.53 45.04),2018-05-21 02:54:04,baba_car\n\
             Hamburg,POINT (9.99),POINT (10.0 53.5),2018-05-21 02:54:04,cheap_mobile\n\
             Turin,POINT (7.67 45.06),POINT (7.53 45.04),yesterday,baba_car\n\
             Turin,POINT (7.67 45.06)\n"
        );
        let batches = read_all(&trips(), csv.as_bytes(), BatchLimits::default()).unwrap();
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!(b.rows.num_rows(), 2);
        let at = b.rows.column(3).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(at.value(0), 1_527_498_220_000_000);
        assert_eq!(
            places(b),
            [
                (4, Some("origin_coord"), "POINT (9.99)"),
                (5, Some("datetime"), "yesterday"),
                (6, None, "Turin,POINT (7.67 45.06)"),
            ]
        );
        assert_eq!(b.quarantined[0].reason, "not a WKT point, POINT (lon lat)");
        assert_eq!(b.quarantined[2].reason, "2 fields, expected 5");
        assert_eq!(b.quarantined[0].file, "landing/trips/a.csv");
    }

    #[test]
    fn batches_are_bounded_and_together_hold_every_row() {
        let mut csv = HEADER.to_string();
        for i in 0..25 {
            csv += &format!("r{i},POINT (1 2),POINT (3 4),2018-05-28 09:03:40,s\n");
        }
        let limits = BatchLimits {
            rows: 10,
            bytes: usize::MAX,
        };
        let sizes: Vec<_> = read_all(&trips(), csv.as_bytes(), limits)
            .unwrap()
            .iter()
            .map(|b| b.rows.num_rows())
            .collect();
        assert_eq!(sizes, [10, 10, 5]);
        // Bad rows fill a batch as good ones do.
        let bad = csv.replace("POINT (1 2)", "nowhere");
        let quarantined: Vec<_> = read_all(&trips(), bad.as_bytes(), limits)
            .unwrap()
            .iter()
            .map(|b| (b.rows.num_rows(), b.quarantined.len()))
            .collect();
        assert_eq!(quarantined, [(0, 10), (0, 10), (0, 5)]);
        let limits = BatchLimits {
            rows: usize::MAX,
            bytes: 100,
        };
        let batches = read_all(&trips(), csv.as_bytes(), limits).unwrap();
        assert!(batches.len() > 5 && batches.iter().all(|b| b.rows.num_rows() <= 3));
    }

    #[test]
    fn gzip_of_several_members_is_read_whole_and_a_corrupt_one_is_unreadable() {
        let mut dataset = trips();
        dataset.source.compression = Compression::Gzip;
        let row = "Turin,POINT (7.67 45.06),POINT (7.53 45.04),2018-05-21 02:54:04,baba_car\n";
        let bytes = gzip(&[HEADER, row, row]);
        let batches = read_all(&dataset, &bytes, BatchLimits::default()).unwrap();
        assert_eq!(batches[0].rows.num_rows(), 2);

        // One member of many rows, damaged in the middle of its compressed data.
        let rows: String = (0..200)
            .map(|i| row.replace("Turin", &format!("T{i}")))
            .collect();
        let mut corrupt = gzip(&[&format!("{HEADER}{rows}")]);
        let n = corrupt.len();
        corrupt[n / 2] ^= 0xff;
        let e = read_all(&dataset, &corrupt, BatchLimits::default()).unwrap_err();
        assert_eq!(e.error_type(), "InvalidInput");
        assert!(
            e.to_string()
                .starts_with("landing/trips/a.csv: cannot be read"),
            "{e}"
        );

        let e = read_all(&dataset, b"not gzip at all", BatchLimits::default()).unwrap_err();
        assert!(e.to_string().contains("landing/trips/a.csv"), "{e}");
    }

    #[test]
    fn header_columns_follow_the_declared_policies() {
        let row = "Turin,POINT (7.67 45.06),POINT (7.53 45.04),2018-05-21 02:54:04,baba_car\n";
        let extra = "datasource,region,origin_coord,destination_coord,datetime,extra\n\
                     baba_car,Turin,POINT (1 2),POINT (3 4),2018-05-21 02:54:04,x\n";
        let e = read_all(&trips(), extra.as_bytes(), BatchLimits::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "landing/trips/a.csv: column \"extra\": in the file but not declared \
             (on_new_column is \"fail\")"
        );
        let mut lenient = trips();
        lenient.on_new_column = Policy::Ignore;
        let b = read_all(&lenient, extra.as_bytes(), BatchLimits::default()).unwrap();
        assert_eq!(b[0].rows.column(0).as_string::<i32>().value(0), "Turin");

        let missing = format!(
            "region,origin_coord,destination_coord,datetime\n{}",
            &row[..row.len() - 10]
        );
        let e = read_all(&trips(), missing.as_bytes(), BatchLimits::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("column \"datasource\": declared but not in the file"),
            "{e}"
        );
        lenient.on_missing_column = Policy::Ignore;
        let e = read_all(&lenient, missing.as_bytes(), BatchLimits::default()).unwrap_err();
        assert!(
            e.to_string().contains("not in the file, and not nullable"),
            "{e}"
        );
        lenient.columns[4].nullable = true;
        let b = read_all(
            &lenient,
            format!("{missing}\n").as_bytes(),
            BatchLimits::default(),
        )
        .unwrap();
        assert!(b[0].rows.column(4).is_null(0));

        let e = read_all(&trips(), b"", BatchLimits::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "landing/trips/a.csv: cannot be read: empty: no header"
        );
        let twice = "region,region\n";
        let e = read_all(&lenient, twice.as_bytes(), BatchLimits::default()).unwrap_err();
        assert!(e.to_string().contains("named twice"), "{e}");
    }

    #[test]
    fn without_a_header_the_columns_are_in_declared_order() {
        let mut dataset = Dataset {
            columns: trips().columns[..1].to_vec(),
            ..trips()
        };
        dataset.columns[0].kind = crate::decl::Kind::Integer;
        dataset.key.clear();
        dataset.write_mode = crate::decl::WriteMode::Append;
        dataset.source.csv.header = false;
        let b = read_all(&dataset, b"1\n\xff\n3\n", BatchLimits::default()).unwrap();
        let ints = b[0].rows.column(0).as_primitive::<Int32Type>();
        assert_eq!(ints.values().to_vec(), [1, 3]);
        assert_eq!(b[0].quarantined[0].reason, "not UTF-8");
        assert_eq!(b[0].quarantined[0].column.as_deref(), Some("region"));
        assert_eq!(b[0].quarantined[0].line, 2);
    }

    fn events() -> Dataset {
        serde_json::from_value(serde_json::json!({
            "name": "events", "description": "d",
            "source": {"prefix": "landing/events/", "format": "jsonl", "compression": "gzip"},
            "columns": [
                {"name": "id", "type": "bigint", "nullable": false},
                {"name": "amount", "type": "decimal(20,2)"},
                {"name": "note", "type": "text"},
                {"name": "at", "type": "timestamptz"}
            ],
            "key": ["id"], "write_mode": "merge"
        }))
        .unwrap()
    }

    #[test]
    fn json_lines_keep_exact_numbers_and_quarantine_bad_records() {
        let lines = [
            r#"{"id": 1, "amount": 123456789012345678.25, "note": "caf\u00e9 \"q\"", "at": "2024-11-14T09:30:00Z"}"#,
            "",
            r#"{"id": 2, "amount": null}"#,
            r#"{"id": "x"}"#,
            r#"not json"#,
            r#"[1, 2]"#,
            r#"{"id": 3, "note": {"nested": true}}"#,
        ];
        let bytes = gzip(&[&lines[..3].join("\n"), "\n", &lines[3..].join("\n")]);
        let b = read_all(&events(), &bytes, BatchLimits::default()).unwrap();
        let rows = &b[0].rows;
        assert_eq!(rows.num_rows(), 3);
        let amounts = rows
            .column(1)
            .as_primitive::<arrow::datatypes::Decimal128Type>();
        assert_eq!(amounts.value(0), 12_345_678_901_234_567_825);
        assert!(amounts.is_null(1));
        let notes = rows.column(2).as_string::<i32>();
        assert_eq!(notes.value(0), "café \"q\"");
        assert_eq!(notes.value(2), r#"{"nested": true}"#);
        assert_eq!(
            places(&b[0]),
            [
                (4, Some("id"), "x"),
                (5, None, "not json"),
                (6, None, "[1, 2]")
            ]
        );
        assert_eq!(b[0].quarantined[0].reason, "not a bigint");
        assert!(b[0].quarantined[1].reason.starts_with("not a JSON object"));
    }

    #[test]
    fn an_undeclared_json_member_follows_the_policy() {
        let bytes = gzip(&[r#"{"id": 1, "colour": "red"}"#]);
        let e = read_all(&events(), &bytes, BatchLimits::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "landing/trips/a.csv: column \"colour\": in the record on line 1 but not declared \
             (on_new_column is \"fail\")"
        );
        let mut lenient = events();
        lenient.on_new_column = Policy::Ignore;
        let b = read_all(&lenient, &bytes, BatchLimits::default()).unwrap();
        assert_eq!(b[0].rows.num_rows(), 1);
    }
}
