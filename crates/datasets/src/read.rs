//! A landed file (CSV or JSON Lines, plain or gzip, one member or several; a Parquet file; a
//! sheet of an Excel workbook) read as typed batches of bounded size, each with the rows it
//! quarantined. Every value is taken as text and parsed under its column's declaration
//! (arrow's CSV reader fails a whole batch on one bad value); a JSON number keeps its exact
//! text, and a value the file had typed (an Excel date, a Parquet timestamp) is written as ISO
//! 8601 text that the declared formats, being for text, do not apply to.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::ops::{ControlFlow, Range};
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use csv::{ByteRecord, ReaderBuilder};
use flate2::read::MultiGzDecoder;
use serde_json::value::RawValue;

use crate::cast::{Columns, Value, parse, parse_typed};
use crate::crypt::{self, DataKeys};
use crate::decl::{Compression, Dataset, Format, Kind, Policy};
use crate::error::{Error, Result};
use crate::ordered;

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

pub(crate) type Input<'d> = Box<dyn Read + Send + 'd>;

/// A record of a file read row by row elsewhere (a sheet, a Parquet file): its place and its
/// cells in the file's column order.
#[derive(Debug, Default)]
pub(crate) struct Row {
    /// The sheet's row number, or the Parquet record's (1 is the first).
    pub line: u64,
    pub cells: Vec<Cell>,
}

/// One cell of a [`Row`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Empty,
    /// Text as the file had it: the declared formats apply.
    Text(String),
    /// A typed value written as ISO 8601 text (numbers as their shortest exact decimal).
    Typed(String),
    /// A date and time the file had typed, written as the column's type wants it.
    DateTime(chrono::NaiveDateTime),
    /// An error value (Excel's `#DIV/0!`): the row is quarantined.
    Error(String),
}

impl Cell {
    /// The cell as text: what a header cell names, what quarantine keeps.
    pub(crate) fn to_text(&self) -> String {
        match self {
            Cell::Empty => String::new(),
            Cell::Text(t) | Cell::Typed(t) | Cell::Error(t) => t.clone(),
            Cell::DateTime(at) => at.format("%Y-%m-%d %H:%M:%S%.f").to_string(),
        }
    }

    fn size(&self) -> usize {
        match self {
            Cell::Empty => 0,
            Cell::Text(t) | Cell::Typed(t) | Cell::Error(t) => t.len(),
            Cell::DateTime(_) => 26,
        }
    }
}

/// Rows read elsewhere, in order, or why the file cannot be read further.
pub(crate) type RowSource<'d> = Box<dyn Iterator<Item = Result<Row>> + Send + 'd>;

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
    /// An API's page: its records, parsed.
    Json {
        records: std::vec::IntoIter<Box<RawValue>>,
        /// The record's place in the page (1 is the first).
        line: u64,
        /// The record being read.
        current: Option<Box<RawValue>>,
    },
    /// A sheet or a Parquet file.
    Rows {
        rows: RowSource<'d>,
        /// For each declared column, its cell in a row (`None`: missing, read as NULL).
        fields: Vec<Option<usize>>,
        /// How many columns have a name: a value beyond them has no column.
        width: usize,
        row: Row,
    },
}

/// A value as the record had it.
#[derive(Debug)]
enum Field<'r> {
    /// Text, parsed under the declared formats.
    Text(Cow<'r, str>),
    /// A typed value as ISO 8601 text, parsed under the ISO defaults.
    Typed(Cow<'r, str>),
}

impl Field<'_> {
    fn text(&self) -> &str {
        match self {
            Field::Text(t) | Field::Typed(t) => t,
        }
    }
}

/// One record's values by declared column (`None`: NULL), or why it has none.
type Texts<'r> = std::result::Result<Vec<Option<Field<'r>>>, Quarantined>;

impl<'d> LandedFile<'d> {
    /// Starts reading `read`, the landed file named `file`: decompresses it as declared and,
    /// for a CSV file, reads the header and matches it with the declared columns under the
    /// declared policies.
    ///
    /// A Parquet file or a workbook is read from its end or out of order, so it is first
    /// copied to a temporary file (on Lambda, the function's ephemeral storage).
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
            Format::Parquet => {
                let input = crate::parquet_file::ParquetInput::open(read, file)?;
                let fields = match_names(dataset, file, &input.names())?;
                let (rows, fields) = input.rows(&fields)?;
                let width = fields.iter().flatten().count();
                rows_records(rows, fields, width)
            }
            Format::Xlsx => {
                let (names, rows) = crate::xlsx::open(read, &dataset.source.xlsx, file)?;
                let fields = match_names(dataset, file, &names)?;
                rows_records(rows, fields, names.len())
            }
            Format::Json => {
                let page: Vec<Box<RawValue>> = serde_json::from_reader(read)
                    .map_err(|e| unreadable(file, format!("not a JSON array of records: {e}")))?;
                return Ok(Self::page(page, dataset, file));
            }
        };
        Ok(LandedFile {
            dataset,
            file: file.into(),
            schema: Arc::new(dataset.schema()),
            records,
        })
    }

    /// An API's page, its records parsed already (the caller pages on the last one's cursor);
    /// `file` names the request in quarantine.
    pub fn page(records: Vec<Box<RawValue>>, dataset: &'d Dataset, file: &str) -> Self {
        LandedFile {
            dataset,
            file: file.into(),
            schema: Arc::new(dataset.schema()),
            records: Records::Json {
                records: records.into_iter(),
                line: 0,
                current: None,
            },
        }
    }

    /// Passes over the first `n` records (read already), still counted in the records' places.
    pub fn skip(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            if self.records.next(self.dataset, &self.file)?.is_none() {
                break;
            }
        }
        Ok(())
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
        let mut typing = Typing::new(dataset, file);
        while !typing.full(limits) {
            let Some((size, line, texts)) = records.next(dataset, file)? else {
                break;
            };
            typing.add(size, line, texts);
        }
        Ok(typing.finish(schema))
    }

    /// Reads the whole file, handing each batch, or the error that ends it, to `each` in the
    /// file's order until it breaks.
    ///
    /// A CSV file with `workers` above 1 is read on threads besides the caller's: one splits
    /// it into records (a fifth of the work) while `workers` others type them, each batch a
    /// quarter of `limits`, so that the batches held at once (the one being split, one typed
    /// by each worker, the one handed on) take about what one batch of `limits` would. The
    /// batches, their rows and their quarantine are those [`Self::next_batch`] gives, cut
    /// smaller. Other files, or one worker, are read batch by batch on the caller's thread.
    pub fn read_all(
        mut self,
        limits: BatchLimits,
        workers: usize,
        mut each: impl FnMut(Result<Batch>) -> ControlFlow<()>,
    ) {
        let LandedFile {
            dataset,
            file,
            schema,
            records,
        } = &mut self;
        let Records::Csv {
            reader,
            fields,
            width,
            record,
        } = records
        else {
            return self.read_in_turn(limits, each);
        };
        if workers < 2 {
            return self.read_in_turn(limits, each);
        }
        let limits = BatchLimits {
            rows: (limits.rows / 4).max(1),
            bytes: (limits.bytes / 4).max(1),
        };
        // Spent chunks, to tokenize into again.
        let spare: Mutex<Vec<Chunk>> = Mutex::new(Vec::new());
        let mut ended = false;
        let produce = || {
            if ended {
                return None;
            }
            let mut chunk = spare
                .lock()
                .expect("not poisoned")
                .pop()
                .unwrap_or_default();
            chunk.clear();
            match chunk.fill(reader, record, limits) {
                Ok(true) => Some(Ok(chunk)),
                Ok(false) => {
                    ended = true;
                    (!chunk.is_empty()).then_some(Ok(chunk))
                }
                Err(e) => {
                    ended = true;
                    Some(Err(unreadable(file, e)))
                }
            }
        };
        let (dataset, file, fields, width, schema) =
            (&**dataset, &**file, &**fields, *width, &*schema);
        let map = |chunk: Result<Chunk>| {
            let chunk = chunk?;
            let mut typing = Typing::new(dataset, file);
            for k in 0..chunk.len() {
                let record = chunk.record(k);
                let (size, line, texts) = csv_texts(dataset, file, fields, width, &record);
                typing.add(size, line, texts);
            }
            let mut spare = spare.lock().expect("not poisoned");
            if spare.len() <= workers {
                spare.push(chunk);
            }
            Ok(typing.finish(schema).expect("a chunk holds records"))
        };
        ordered::ordered_map(workers, produce, map, |batch| {
            let end = batch.is_err();
            each(batch)?;
            if end {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
    }

    /// [`Self::read_all`] batch by batch on the caller's thread.
    fn read_in_turn(
        mut self,
        limits: BatchLimits,
        mut each: impl FnMut(Result<Batch>) -> ControlFlow<()>,
    ) {
        loop {
            let next = self.next_batch(limits).transpose();
            let end = !matches!(next, Some(Ok(_)));
            if let Some(next) = next
                && each(next).is_break()
            {
                return;
            }
            if end {
                return;
            }
        }
    }
}

/// A batch being typed: its rows so far and the records it quarantined.
struct Typing<'a> {
    dataset: &'a Dataset,
    file: &'a str,
    columns: Columns,
    quarantined: Vec<Quarantined>,
    /// The records seen (quarantined ones too: a file of bad rows is bounded alike) and their
    /// bytes.
    seen: usize,
    bytes: usize,
}

impl<'a> Typing<'a> {
    fn new(dataset: &'a Dataset, file: &'a str) -> Self {
        Typing {
            dataset,
            file,
            columns: Columns::new(&dataset.columns),
            quarantined: Vec::new(),
            seen: 0,
            bytes: 0,
        }
    }

    fn full(&self, limits: BatchLimits) -> bool {
        self.seen >= limits.rows || self.bytes >= limits.bytes
    }

    /// One record of `size` bytes on `line`: its values typed into the batch, or the record
    /// quarantined with the first value that does not parse.
    fn add(&mut self, size: usize, line: u64, texts: Texts<'_>) {
        self.seen += 1;
        self.bytes += size;
        let texts = match texts {
            Ok(texts) => texts,
            Err(q) => {
                self.quarantined.push(q);
                return;
            }
        };
        let mut row: Vec<Value<'_>> = Vec::with_capacity(texts.len());
        let bad = self
            .dataset
            .columns
            .iter()
            .zip(&texts)
            .find_map(|(column, field)| {
                let parsed = match field {
                    None => parse(column, ""),
                    Some(Field::Text(text)) => parse(column, text),
                    Some(Field::Typed(text)) => parse_typed(column, text),
                };
                match parsed {
                    Ok(v) => {
                        row.push(v);
                        None
                    }
                    Err(reason) => Some((column, reason, field.as_ref().map_or("", Field::text))),
                }
            });
        match bad {
            None => self.columns.push(&row),
            Some((column, reason, value)) => self.quarantined.push(Quarantined {
                file: self.file.into(),
                line,
                column: Some(column.name.clone()),
                reason,
                value: value.to_string(),
            }),
        }
    }

    /// The batch, `None` where it saw no record.
    fn finish(mut self, schema: &SchemaRef) -> Option<Batch> {
        if self.seen == 0 {
            return None;
        }
        let rows = RecordBatch::try_new(schema.clone(), self.columns.finish())
            .expect("the builders follow the declared schema");
        Some(Batch {
            rows,
            quarantined: self.quarantined,
            bytes: self.bytes,
        })
    }
}

/// CSV records read and not yet typed: their bytes end to end and each field's end.
#[derive(Debug, Default)]
struct Chunk {
    data: Vec<u8>,
    /// Each field's end, from its record's start, record after record.
    ends: Vec<usize>,
    /// Each record's line, and where it starts in `data` and in `ends`.
    records: Vec<(u64, usize, usize)>,
}

impl Chunk {
    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.records.clear();
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Reads records from `reader` (through `record`) until the chunk is full under `limits`:
    /// `false` where the file ended.
    fn fill(
        &mut self,
        reader: &mut csv::Reader<Input<'_>>,
        record: &mut ByteRecord,
        limits: BatchLimits,
    ) -> csv::Result<bool> {
        while self.records.len() < limits.rows && self.data.len() < limits.bytes {
            if !reader.read_byte_record(record)? {
                return Ok(false);
            }
            self.records
                .push((CsvRecord::line(record), self.data.len(), self.ends.len()));
            self.data.extend_from_slice(record.as_slice());
            self.ends.extend(
                (0..record.len())
                    .filter_map(|i| record.range(i))
                    .map(|r| r.end),
            );
        }
        Ok(true)
    }

    /// The `k`th record.
    fn record(&self, k: usize) -> Flat<'_> {
        let (line, start, first) = self.records[k];
        let (end, last) = self
            .records
            .get(k + 1)
            .map_or((self.data.len(), self.ends.len()), |&(_, s, f)| (s, f));
        Flat {
            bytes: &self.data[start..end],
            ends: &self.ends[first..last],
            line,
        }
    }
}

/// A CSV record: its bytes, its fields' places in them, and the line it starts on.
trait CsvRecord {
    fn bytes(&self) -> &[u8];
    fn fields(&self) -> usize;
    fn range(&self, i: usize) -> Option<Range<usize>>;
    fn line(&self) -> u64;
}

impl CsvRecord for ByteRecord {
    fn bytes(&self) -> &[u8] {
        self.as_slice()
    }

    fn fields(&self) -> usize {
        self.len()
    }

    fn range(&self, i: usize) -> Option<Range<usize>> {
        ByteRecord::range(self, i)
    }

    fn line(&self) -> u64 {
        self.position().map_or(0, |p| p.line())
    }
}

/// A record of a [`Chunk`].
struct Flat<'c> {
    bytes: &'c [u8],
    ends: &'c [usize],
    line: u64,
}

impl CsvRecord for Flat<'_> {
    fn bytes(&self) -> &[u8] {
        self.bytes
    }

    fn fields(&self) -> usize {
        self.ends.len()
    }

    fn range(&self, i: usize) -> Option<Range<usize>> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(start..end)
    }

    fn line(&self) -> u64 {
        self.line
    }
}

/// The file cannot be read, for `reason`.
fn unreadable(file: &str, reason: impl ToString) -> Error {
    Error::Unreadable {
        file: file.into(),
        reason: reason.to_string(),
    }
}

/// One CSV record's size, line and values by declared column: each declared column's field
/// (`fields`), in a record of `width` fields.
fn csv_texts<'r>(
    dataset: &Dataset,
    file: &str,
    fields: &[Option<usize>],
    width: usize,
    record: &'r impl CsvRecord,
) -> (usize, u64, Texts<'r>) {
    let line = record.line();
    let bytes = record.bytes();
    let size = bytes.len();
    let quarantine = |reason: String, value: &[u8]| Quarantined {
        file: file.into(),
        line,
        column: None,
        reason,
        value: lossy(value),
    };
    let field = |i: usize| record.range(i).map_or(&b""[..], |r| &bytes[r]);
    if record.fields() != width {
        let reason = format!("{} fields, expected {width}", record.fields());
        // The fields as they were, joined by the declared delimiter.
        let delimiter = [dataset.source.csv.delimiter as u8];
        let value = (0..record.fields())
            .map(field)
            .collect::<Vec<_>>()
            .join(&delimiter[..]);
        return (size, line, Err(quarantine(reason, &value)));
    }
    let mut texts = Vec::with_capacity(fields.len());
    // The record checked once (with SIMD), a field at a time only where it is not UTF-8, to
    // name the field; its fields then sliced from it.
    let whole = simdutf8::basic::from_utf8(bytes).ok();
    for (column, i) in dataset.columns.iter().zip(fields) {
        let checked = match (whole, i) {
            (_, None) => Ok(""),
            // A field boundary inside a character: that field is not UTF-8.
            (Some(whole), Some(i)) => record.range(*i).and_then(|r| whole.get(r)).ok_or(()),
            (None, Some(i)) => std::str::from_utf8(field(*i)).map_err(|_| ()),
        };
        match checked {
            Ok(text) => texts.push(Some(Field::Text(Cow::Borrowed(text)))),
            Err(_) => {
                let mut q = quarantine("not UTF-8".into(), i.map_or(&b""[..], field));
                q.column = Some(column.name.clone());
                return (size, line, Err(q));
            }
        }
    }
    (size, line, Ok(texts))
}

impl Records<'_> {
    /// The next record's size in bytes, the line it starts on and its values, `None` at the
    /// end.
    fn next(&mut self, dataset: &Dataset, file: &str) -> Result<Option<(usize, u64, Texts<'_>)>> {
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
                    .map_err(|e| unreadable(file, e))?
                {
                    return Ok(None);
                }
                Ok(Some(csv_texts(dataset, file, fields, *width, record)))
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
                        .map_err(|e| unreadable(file, e))?;
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
            Records::Json {
                records,
                line,
                current,
            } => {
                let Some(record) = records.next() else {
                    return Ok(None);
                };
                *line += 1;
                let text = current.insert(record).get();
                let texts = json_texts(dataset, file, *line, text, None)?;
                Ok(Some((text.len(), *line, texts)))
            }
            Records::Rows {
                rows,
                fields,
                width,
                row,
            } => {
                let Some(next) = rows.next() else {
                    return Ok(None);
                };
                *row = next?;
                let line = row.line;
                let size = row.cells.iter().map(Cell::size).sum::<usize>() + row.cells.len();
                if let Some(i) = row.cells[(*width).min(row.cells.len())..]
                    .iter()
                    .position(|c| *c != Cell::Empty)
                {
                    let reason = format!(
                        "a value in column {}, which the header does not name",
                        *width + i + 1
                    );
                    let value = cells_text(&row.cells);
                    return Ok(Some((
                        size,
                        line,
                        Err(quarantine(line, reason, value.as_bytes())),
                    )));
                }
                let mut texts = Vec::with_capacity(fields.len());
                for (column, field) in dataset.columns.iter().zip(fields.iter()) {
                    let cell = field.and_then(|i| row.cells.get(i)).unwrap_or(&Cell::Empty);
                    texts.push(match cell {
                        Cell::Empty => None,
                        Cell::Text(t) => Some(Field::Text(Cow::Borrowed(t))),
                        Cell::Typed(t) => Some(Field::Typed(Cow::Borrowed(t))),
                        Cell::DateTime(at) => {
                            Some(Field::Typed(Cow::Owned(datetime_text(*at, column.kind))))
                        }
                        Cell::Error(e) => {
                            let mut q = quarantine(
                                line,
                                format!("the cell holds the error {e}"),
                                e.as_bytes(),
                            );
                            q.column = Some(column.name.clone());
                            return Ok(Some((size, line, Err(q))));
                        }
                    });
                }
                Ok(Some((size, line, Ok(texts))))
            }
        }
    }
}

fn rows_records<'d>(rows: RowSource<'d>, fields: Vec<Option<usize>>, width: usize) -> Records<'d> {
    Records::Rows {
        rows,
        fields,
        width,
        row: Row::default(),
    }
}

/// A typed date and time as the column's type reads it: a date alone for a date column when
/// it is midnight, the time alone for a time column, and otherwise both.
fn datetime_text(at: chrono::NaiveDateTime, kind: Kind) -> String {
    match kind {
        Kind::Date if at.time() == chrono::NaiveTime::MIN => at.format("%Y-%m-%d").to_string(),
        Kind::Time => at.format("%H:%M:%S%.f").to_string(),
        _ => at.format("%Y-%m-%d %H:%M:%S%.f").to_string(),
    }
}

/// A row's cells as one line of text, tab-separated: what quarantine keeps of a whole row.
fn cells_text(cells: &[Cell]) -> String {
    let texts: Vec<String> = cells.iter().map(Cell::to_text).collect();
    texts.join("\t")
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
    // An API's paging members, an encrypted payload's: not columns.
    let mut not_columns: Vec<&str> = Vec::new();
    if let Some(api) = &dataset.source.api {
        not_columns.extend(api.paging_members());
    }
    if let Some(encryption) = &dataset.source.encryption {
        let Some(keys) = keys else {
            return Err(Error::Keys {
                file: file.into(),
                reason: "no key service to decrypt the declared encrypted payload".into(),
            });
        };
        not_columns.extend(encryption.members());
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
        .filter(|k| !not_columns.contains(&k.as_str()))
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
            Ok(text) => texts.push(text.map(Field::Text)),
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
            .map_err(|e| unreadable(file, e))?;
        if !read {
            return Err(unreadable(file, "empty: no header"));
        }
        let names: Vec<String> = record.iter().map(lossy).collect();
        (match_names(dataset, file, &names)?, record.len())
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

/// Matches a file's column names (a header, a Parquet schema) with the declared columns under
/// the declared policies: for each declared column, its place in the file.
pub(crate) fn match_names(
    dataset: &Dataset,
    file: &str,
    names: &[String],
) -> Result<Vec<Option<usize>>> {
    let column_error = |column: &str, reason: String| Error::Columns {
        file: file.into(),
        column: column.into(),
        reason,
    };
    let names: Vec<&str> = names
        .iter()
        .map(|name| name.trim().trim_start_matches('\u{feff}'))
        .collect();
    // An API's paging members (in a CSV page's header) are not columns.
    let paging = dataset.source.api.as_ref().map(|a| a.paging_members());
    for (i, name) in names.iter().enumerate() {
        if paging.is_some_and(|p| p.contains(name)) {
            continue;
        }
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

/// Copies `read` to an anonymous temporary file, for a format read out of order. A failing
/// read is the file's (`Unreadable`, or the connection's where the caller tracks it); a
/// failing write is local storage's (`Scratch`).
pub(crate) fn spool(mut read: Input<'_>, file: &str) -> Result<std::fs::File> {
    use std::io::{Seek, Write};
    let scratch = |e: std::io::Error| Error::Scratch {
        file: file.into(),
        reason: e.to_string(),
    };
    let mut local = tempfile::tempfile().map_err(scratch)?;
    let mut buffer = vec![0; 1 << 20];
    loop {
        let n = match read.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(unreadable(file, e));
            }
        };
        local.write_all(&buffer[..n]).map_err(scratch)?;
    }
    local.rewind().map_err(scratch)?;
    Ok(local)
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
    fn places(b: &Batch) -> Places<'_> {
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

    /// Each quarantined row's line, column and value.
    type Places<'b> = Vec<(u64, Option<&'b str>, &'b str)>;

    /// Every row and quarantined record of `batches`, in order, as text.
    fn contents(batches: &[Batch]) -> (Vec<String>, Places<'_>) {
        let options = arrow::util::display::FormatOptions::default();
        let mut rows = Vec::new();
        for b in batches {
            let columns: Vec<_> = b
                .rows
                .columns()
                .iter()
                .map(|c| arrow::util::display::ArrayFormatter::try_new(c, &options).unwrap())
                .collect();
            for i in 0..b.rows.num_rows() {
                let values: Vec<String> = columns.iter().map(|c| c.value(i).to_string()).collect();
                rows.push(values.join("|"));
            }
        }
        (rows, batches.iter().flat_map(places).collect())
    }

    /// Read on threads, a file gives the rows and quarantine it gives batch by batch, in the
    /// same order, whatever the workers and the limits; a file that breaks off gives its error
    /// after the batches before it, and a reader that stops early stops the threads.
    #[test]
    fn read_on_threads_a_file_gives_what_it_gives_batch_by_batch() {
        let dataset = trips();
        let mut csv = HEADER.as_bytes().to_vec();
        for i in 0..3000 {
            let line = match i % 211 {
                0 => format!("r{i},POINT (1 {i}),POINT (3 4),28/05/2018,s\n"),
                1 => format!("r{i},POINT (1 2)\n"),
                2 => format!("\"r{i}\nquoted\",POINT (1 2),POINT (3 4),2018-05-28 09:03:40,s\n"),
                _ => format!(
                    "r{i},POINT (1 {i}),POINT (3 4),2018-05-28 09:{:02}:40,s{}\n",
                    i % 60,
                    i % 7
                ),
            };
            csv.extend_from_slice(line.as_bytes());
            if i % 499 == 3 {
                csv.extend_from_slice(b"r\xff,POINT (1 2),POINT (3 4),2018-05-28 09:03:40,s\n");
            }
        }
        let in_turn = read_all(&dataset, &csv, BatchLimits::default()).unwrap();
        let expected = contents(&in_turn);
        assert!(
            expected.0.len() > 2900 && expected.1.len() > 30,
            "{}",
            expected.1.len()
        );
        for workers in [1, 2, 3] {
            for limits in [
                BatchLimits::default(),
                BatchLimits {
                    rows: 5,
                    bytes: usize::MAX,
                },
                BatchLimits {
                    rows: usize::MAX,
                    bytes: 1000,
                },
            ] {
                let mut batches = Vec::new();
                LandedFile::open(&csv[..], &dataset, "landing/trips/a.csv")
                    .unwrap()
                    .read_all(limits, workers, |b| {
                        batches.push(b.unwrap());
                        ControlFlow::Continue(())
                    });
                assert_eq!(
                    contents(&batches),
                    expected,
                    "{workers} workers, {limits:?}"
                );
            }
        }

        // Broken off in the middle of a gzip member: the batches before it, then the error.
        let mut gzipped = dataset.clone();
        gzipped.source.compression = Compression::Gzip;
        let rows: String = (0..2000)
            .map(|i| format!("r{i},POINT (1 {i}),POINT (3 4),2018-05-28 09:03:40,s\n"))
            .collect();
        let mut corrupt = gzip(&[&format!("{HEADER}{rows}")]);
        let n = corrupt.len();
        corrupt.truncate(n * 3 / 4);
        let mut read = Vec::new();
        LandedFile::open(&corrupt[..], &gzipped, "landing/trips/a.csv")
            .unwrap()
            .read_all(
                BatchLimits {
                    rows: 100,
                    bytes: usize::MAX,
                },
                2,
                |b| {
                    read.push(b.map(|b| b.rows.num_rows()).map_err(|e| e.to_string()));
                    ControlFlow::Continue(())
                },
            );
        let (last, before) = read.split_last().unwrap();
        assert!(before.iter().all(|b| matches!(b, Ok(25))), "{before:?}");
        assert!(before.len() < 80, "{}", before.len());
        assert!(!before.is_empty());
        let e = last.as_ref().unwrap_err();
        assert!(e.starts_with("landing/trips/a.csv: cannot be read"), "{e}");

        // A reader that stops after two batches gets two.
        let mut taken = 0;
        LandedFile::open(&csv[..], &dataset, "landing/trips/a.csv")
            .unwrap()
            .read_all(
                BatchLimits {
                    rows: 40,
                    bytes: usize::MAX,
                },
                2,
                |_| {
                    taken += 1;
                    if taken == 2 {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            );
        assert_eq!(taken, 2);
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
        // A character split by a delimiter: the record's bytes are UTF-8, its fields are not.
        let mut two = dataset.clone();
        two.columns.push(crate::decl::Column {
            name: "other".into(),
            ..dataset.columns[0].clone()
        });
        two.columns[1].kind = crate::decl::Kind::Text;
        let split = read_all(&two, b"1,a\n2\xc3,\xa9\n", BatchLimits::default()).unwrap();
        assert_eq!(split[0].rows.num_rows(), 1);
        assert_eq!(split[0].quarantined[0].reason, "not UTF-8");
        assert_eq!(split[0].quarantined[0].column.as_deref(), Some("region"));
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

#[cfg(test)]
mod api_page_tests {
    //! An API's pages: records by member name, the paging members passed over, SODA's left-out
    //! nulls, bad values quarantined with the request and the record's place.

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Date32Type, Int64Type};

    use super::*;

    fn crashes() -> Dataset {
        crate::bundled(&[])
            .unwrap()
            .into_iter()
            .find(|d| d.name == "nyc_crashes")
            .unwrap()
    }

    #[test]
    fn a_page_is_read_by_member_name_and_its_bad_values_are_quarantined() {
        let d = crashes();
        let page = br#"[
            {":id": "row-a", ":updated_at": "2024-11-01T10:00:00.000Z", "collision_id": "4000001",
             "crash_date": "2024-03-05T00:00:00.000", "crash_time": "9:05", "borough": "QUEENS",
             "latitude": "40.712345", "number_of_persons_injured": "2"},
            {":id": "row-b", ":updated_at": "2024-11-01T10:00:00.000Z", "collision_id": "4000002",
             "crash_date": "yesterday", "crash_time": "9:05"},
            {":id": "row-c", ":updated_at": "2024-11-01T10:00:01.000Z", "collision_id": "4000003",
             "crash_date": "2024-03-06T00:00:00.000", "crash_time": "23:59", "location": {"x": 1}}
        ]"#;
        let mut file = LandedFile::open(&page[..], &d, "GET /resource/h9gi-nx95.json?p").unwrap();
        let batch = file.next_batch(BatchLimits::default()).unwrap().unwrap();
        assert!(file.next_batch(BatchLimits::default()).unwrap().is_none());
        assert_eq!(batch.rows.num_rows(), 2);
        let ids = batch.rows.column(0).as_primitive::<Int64Type>();
        assert_eq!((ids.value(0), ids.value(1)), (4000001, 4000003));
        let dates = batch.rows.column(1).as_primitive::<Date32Type>();
        assert_eq!(dates.value_as_date(1).unwrap().to_string(), "2024-03-06");
        // Left out is null.
        let borough = d.columns.iter().position(|c| c.name == "borough").unwrap();
        assert!(batch.rows.column(borough).is_null(1));
        let [q] = &batch.quarantined[..] else {
            panic!("{:?}", batch.quarantined)
        };
        assert_eq!(
            (
                q.file.as_str(),
                q.line,
                q.column.as_deref(),
                q.value.as_str()
            ),
            (
                "GET /resource/h9gi-nx95.json?p",
                2,
                Some("crash_date"),
                "yesterday"
            )
        );
    }

    #[test]
    fn a_page_that_is_not_an_array_of_records_is_refused() {
        let d = crashes();
        for body in [&b"{\"error\": true}"[..], b"[{\"a\": 1}", b"<html>"] {
            let e = LandedFile::open(body, &d, "GET /x")
                .err()
                .unwrap()
                .to_string();
            assert!(
                e.contains("GET /x") && e.contains("not a JSON array"),
                "{e}"
            );
        }
        // An undeclared member fails the page under on_new_column = fail, naming it.
        let mut strict = d.clone();
        strict.on_new_column = Policy::Fail;
        let page = br#"[{":id": "r", ":updated_at": "t", "collision_id": "1", "surprise": "x"}]"#;
        let mut file = LandedFile::open(&page[..], &strict, "GET /x").unwrap();
        let e = file
            .next_batch(BatchLimits::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("surprise") && !e.contains(":id"), "{e}");
    }
}

#[cfg(test)]
mod packed_tests {
    //! Workbooks and Parquet files: typed cells, text cells under the declared formats, and
    //! bad values quarantined with their row.

    use arrow::array::{
        ArrayRef, AsArray, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray,
        TimestampMicrosecondArray,
    };
    use arrow::datatypes::{Date32Type, Decimal128Type, Int16Type};
    use rust_xlsxwriter::{ExcelDateTime, Format as Style, Formula, Workbook};

    use super::*;

    fn declared(name: &str) -> Dataset {
        crate::bundled(&[])
            .unwrap()
            .into_iter()
            .find(|d| d.name == name)
            .unwrap()
    }

    /// Each quarantined row's line, column, value and reason.
    fn reasons(b: &Batch) -> Vec<(u64, Option<&str>, &str, &str)> {
        b.quarantined
            .iter()
            .map(|q| {
                (
                    q.line,
                    q.column.as_deref(),
                    q.value.as_str(),
                    q.reason.as_str(),
                )
            })
            .collect()
    }

    fn read_all(dataset: &Dataset, bytes: &[u8]) -> Result<Vec<Batch>> {
        let mut file = LandedFile::open(bytes, dataset, "opendata/x")?;
        let mut batches = Vec::new();
        while let Some(b) = file.next_batch(BatchLimits::default())? {
            batches.push(b);
        }
        Ok(batches)
    }

    /// A workbook like the portal's: a notes sheet first, then the measurements under a
    /// title, a blank row and the header on row 3.
    fn workbook(rows: impl FnOnce(&mut rust_xlsxwriter::Worksheet)) -> Vec<u8> {
        let mut book = Workbook::new();
        book.add_worksheet()
            .set_name("Notes")
            .unwrap()
            .write_string(0, 0, "station_id is not in this sheet")
            .unwrap();
        let sheet = book.add_worksheet().set_name("Measurements").unwrap();
        sheet
            .write_string(0, 0, "Air quality, daily means")
            .unwrap();
        // The header names the declared columns, in their order.
        for (c, column) in declared("air_quality").columns.iter().enumerate() {
            sheet.write_string(2, c as u16, &column.name).unwrap();
        }
        rows(sheet);
        book.save_to_buffer().unwrap()
    }

    #[test]
    fn a_sheet_reads_typed_cells_as_typed_and_text_under_the_declared_formats() {
        let date = Style::new().set_num_format("yyyy-mm-dd");
        let bytes = workbook(|s| {
            // Row 4: typed cells throughout.
            s.write_string(3, 0, "ST01").unwrap();
            s.write_string(3, 1, "Town Hall").unwrap();
            let day = ExcelDateTime::from_ymd(2024, 11, 5).unwrap();
            s.write_datetime_with_format(3, 2, &day, &date).unwrap();
            s.write_number(3, 3, 0.1 + 12.2).unwrap();
            s.write_number(3, 4, 31.0).unwrap();
            s.write_number(3, 5, 24.0).unwrap();
            s.write_boolean(3, 6, true).unwrap();
            // Row 5 is blank. Row 6: text throughout, the date day/month/year.
            for (c, v) in ["ST02", "Harbour", "06/11/2024", "8.5", "", "23", "no"]
                .iter()
                .enumerate()
            {
                if !v.is_empty() {
                    s.write_string(5, c as u16, *v).unwrap();
                }
            }
            // Row 7: a bad value; row 8: an error cell; row 9: a value under no header.
            for (r, pm25) in [(6, "n/a"), (7, ""), (8, "1")] {
                s.write_string(r, 0, "ST03").unwrap();
                s.write_string(r, 1, "Park").unwrap();
                s.write_string(r, 2, "2024-11-07").unwrap();
                s.write_string(r, 3, pm25).unwrap();
                s.write_number(r, 5, 24.0).unwrap();
                s.write_boolean(r, 6, false).unwrap();
            }
            s.write_formula(7, 3, Formula::new("=1/0").set_result("#DIV/0!"))
                .unwrap();
            s.write_string(8, 9, "stray").unwrap();
        });
        let batches = read_all(&declared("air_quality"), &bytes).unwrap();
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!(b.rows.num_rows(), 2);
        let days = b.rows.column(2).as_primitive::<Date32Type>();
        assert_eq!(days.value(0), 20032);
        assert_eq!(days.value(1), 20033);
        let pm25 = b.rows.column(3).as_primitive::<Decimal128Type>();
        assert_eq!((pm25.value(0), pm25.value(1)), (123, 85));
        assert!(b.rows.column(4).is_null(1));
        let samples = b.rows.column(5).as_primitive::<Int16Type>();
        assert_eq!(samples.values().to_vec(), [24, 23]);
        let validated = b.rows.column(6).as_boolean();
        assert!(validated.value(0) && !validated.value(1));
        let places = reasons(b);
        assert_eq!(
            places,
            [
                (7, Some("pm25"), "n/a", "not a decimal(6,1)"),
                (
                    8,
                    Some("pm25"),
                    "#DIV/0!",
                    "the cell holds the error #DIV/0!"
                ),
                (
                    9,
                    None,
                    "ST03\tPark\t2024-11-07\t1\t\t24\tfalse\t\t\tstray",
                    "a value in column 10, which the header does not name"
                ),
            ]
        );
    }

    #[test]
    fn a_workbook_that_is_not_one_or_lacks_its_sheet_is_unreadable() {
        let e = read_all(&declared("air_quality"), b"PK not really").unwrap_err();
        assert_eq!(e.error_type(), "InvalidInput");
        assert!(
            e.to_string()
                .starts_with("opendata/x: cannot be read: not an xlsx"),
            "{e}"
        );

        let mut other = declared("air_quality");
        other.source.xlsx.sheet = Some("Summary".into());
        let e = read_all(&other, &workbook(|_| {})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "opendata/x: cannot be read: no sheet named \"Summary\": the workbook has \
             [\"Notes\", \"Measurements\"]"
        );

        // The first sheet, whose row 3 is empty: no header.
        other.source.xlsx.sheet = None;
        let e = read_all(&other, &workbook(|_| {})).unwrap_err();
        assert!(e.to_string().contains("the header, is empty"), "{e}");

        // A header naming a column the declaration does not have.
        let bytes = workbook(|s| {
            s.write_string(2, 7, "co2").unwrap();
        });
        let e = read_all(&declared("air_quality"), &bytes).unwrap_err();
        assert_eq!(
            e.to_string(),
            "opendata/x: column \"co2\": in the file but not declared (on_new_column is \"fail\")"
        );
    }

    fn parquet(columns: Vec<(&str, ArrayRef)>) -> Vec<u8> {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut out = Vec::new();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        out
    }

    #[test]
    fn a_parquet_file_reads_the_declared_columns_by_name_and_quarantines_what_does_not_fit() {
        let mut dataset = declared("air_quality");
        dataset.source.format = Format::Parquet;
        dataset.on_new_column = Policy::Ignore;
        let texts = |v: [Option<&str>; 3]| Arc::new(StringArray::from(v.to_vec())) as ArrayRef;
        let bytes = parquet(vec![
            (
                "validated",
                Arc::new(BooleanArray::from(vec![true, false, true])),
            ),
            ("station_id", texts([Some("ST01"), Some("ST02"), None])),
            ("station_name", texts([Some("a"), Some("b"), Some("c")])),
            (
                "measured_on",
                Arc::new(Date32Array::from(vec![20032, 20033, 20034])),
            ),
            (
                "pm25",
                Arc::new(Float64Array::from(vec![Some(12.3), Some(8.25), None])),
            ),
            ("no2", texts([Some("31"), None, None])),
            ("samples", Arc::new(Int64Array::from(vec![24, 23, 22]))),
            (
                "loaded_at",
                Arc::new(TimestampMicrosecondArray::from(vec![0, 1, 2])),
            ),
        ]);
        let b = &read_all(&dataset, &bytes).unwrap()[0];
        assert_eq!(b.rows.num_rows(), 1);
        assert_eq!(b.rows.column(0).as_string::<i32>().value(0), "ST01");
        assert_eq!(
            b.rows.column(2).as_primitive::<Date32Type>().value(0),
            20032
        );
        assert_eq!(
            b.rows.column(3).as_primitive::<Decimal128Type>().value(0),
            123
        );
        assert_eq!(
            b.rows.column(4).as_primitive::<Decimal128Type>().value(0),
            310
        );
        let places = reasons(b);
        assert_eq!(
            places,
            [
                (
                    2,
                    Some("pm25"),
                    "8.25",
                    "more than 1 decimal places for decimal(6,1)"
                ),
                (
                    3,
                    Some("station_id"),
                    "",
                    "empty, and the column is not nullable"
                ),
            ]
        );

        dataset.on_new_column = Policy::Fail;
        let e = read_all(&dataset, &bytes).unwrap_err();
        assert!(
            e.to_string()
                .contains("column \"loaded_at\": in the file but not declared"),
            "{e}"
        );
        let e = read_all(&dataset, b"PAR1 not parquet").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("opendata/x: cannot be read: not a Parquet file"),
            "{e}"
        );
    }
}
