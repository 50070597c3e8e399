//! One sheet of an Excel workbook (Office Open XML), read row by row.
//!
//! A workbook is a zip archive, read out of order: it is copied to a temporary file first.
//! The sheet's XML is then streamed cell by cell (calamine's cell reader, never the whole
//! sheet in memory) on a thread of its own that owns the workbook, a bounded number of rows
//! ahead of the batches. The workbook's shared strings are held in memory, as every reader of
//! the format does: they are bounded by the file.
//!
//! Cells keep what the workbook typed: text is text (the declared formats apply), a number is
//! written as Excel shows it (15 significant digits, so `0.1 + 0.2` is `0.3`), a date as a date
//! and time, a duration as a time, an error (`#DIV/0!`) quarantines its row.

use std::io::BufReader;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use calamine::{DataRef, Reader, Xlsx};

use crate::decl::XlsxSheet;
use crate::error::{Error, Result};
use crate::read::{Cell, Input, Row, RowSource, spool};

/// Rows read ahead of the batches: the bound on the reading thread's memory.
const AHEAD: usize = 1024;

type Workbook = Xlsx<BufReader<std::fs::File>>;

/// Opens the declared sheet of the workbook `read` (named `file` in errors): the names in its
/// header row and the rows below it. Rows above the header and rows without a value are
/// passed over.
pub(crate) fn open(
    read: Input<'_>,
    sheet: &XlsxSheet,
    file: &str,
) -> Result<(Vec<String>, RowSource<'static>)> {
    let local = spool(read, file)?;
    let unreadable = |reason: String| Error::Unreadable {
        file: file.into(),
        reason,
    };
    let mut workbook: Workbook = Xlsx::new(BufReader::new(local))
        .map_err(|e| unreadable(format!("not an xlsx workbook: {e}")))?;
    let names = workbook.sheet_names();
    let name = match &sheet.sheet {
        Some(name) if names.contains(name) => name.clone(),
        Some(name) => {
            return Err(unreadable(format!(
                "no sheet named {name:?}: the workbook has {names:?}"
            )));
        }
        None => names
            .first()
            .cloned()
            .ok_or_else(|| unreadable("the workbook has no sheet".into()))?,
    };
    let (sender, receiver) = sync_channel(AHEAD);
    let thread = {
        let (name_of_file, header_row) = (file.to_owned(), u64::from(sheet.header_row));
        std::thread::Builder::new()
            .name("xlsx".into())
            .spawn(move || read_sheet(&mut workbook, &name, &name_of_file, header_row, &sender))
            .map_err(|e| Error::Scratch {
                file: file.into(),
                reason: format!("cannot start the sheet's reader: {e}"),
            })?
    };
    let mut rows = SheetRows {
        receiver,
        thread: Some(thread),
        file: file.into(),
    };
    let header_row = u64::from(sheet.header_row);
    let header = match rows.next().transpose()? {
        Some(row) if row.line == header_row => row,
        Some(_) | None => {
            return Err(unreadable(format!(
                "row {header_row} of sheet {:?}, the header, is empty",
                sheet.sheet.as_deref().unwrap_or("(the first)")
            )));
        }
    };
    let mut names: Vec<String> = header.cells.iter().map(Cell::to_text).collect();
    while names.last().is_some_and(String::is_empty) {
        names.pop();
    }
    Ok((names, Box::new(rows)))
}

/// Sends the rows of `sheet` from `header_row` on, stopping at the first error or when the
/// receiving end is gone.
fn read_sheet(
    workbook: &mut Workbook,
    sheet: &str,
    file: &str,
    header_row: u64,
    sender: &SyncSender<Result<Row>>,
) {
    let unreadable = |e: calamine::XlsxError| Error::Unreadable {
        file: file.into(),
        reason: format!("sheet {sheet:?}: {e}"),
    };
    let mut cells = match workbook.worksheet_cells_reader(sheet) {
        Ok(cells) => cells,
        Err(e) => {
            let _ = sender.send(Err(unreadable(e)));
            return;
        }
    };
    let mut row = Row::default();
    // Sends the row in hand unless it has no value; false once nobody is listening.
    let flush = |row: &mut Row| {
        let row = std::mem::take(row);
        row.cells.iter().all(|c| *c == Cell::Empty) || sender.send(Ok(row)).is_ok()
    };
    loop {
        let cell = match cells.next_cell() {
            Ok(Some(cell)) => cell,
            Ok(None) => break,
            Err(e) => {
                let _ = sender.send(Err(unreadable(e)));
                return;
            }
        };
        let (r, c) = cell.get_position();
        let line = u64::from(r) + 1;
        if line < header_row {
            continue;
        }
        if line != row.line {
            if !flush(&mut row) {
                return;
            }
            row.line = line;
        }
        let c = c as usize;
        if row.cells.len() <= c {
            row.cells.resize(c + 1, Cell::Empty);
        }
        row.cells[c] = cell_of(cell.get_value());
    }
    flush(&mut row);
}

/// A cell's value as the workbook typed it.
fn cell_of(value: &DataRef<'_>) -> Cell {
    match value {
        DataRef::Empty => Cell::Empty,
        DataRef::String(s) if s.is_empty() => Cell::Empty,
        DataRef::SharedString("") => Cell::Empty,
        DataRef::String(s) => Cell::Text(s.clone()),
        DataRef::SharedString(s) => Cell::Text((*s).to_owned()),
        DataRef::Int(i) => Cell::Typed(i.to_string()),
        DataRef::Float(f) => Cell::Typed(excel_number(*f)),
        DataRef::Bool(b) => Cell::Typed(b.to_string()),
        DataRef::DateTime(d) if d.is_duration() => {
            let ms = (d.as_f64() * 86_400_000.0).round() as i64;
            let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
            Cell::Typed(format!("{h:02}:{m:02}:{s:02}.{ms:03}"))
        }
        DataRef::DateTime(d) => match d.as_datetime() {
            Some(at) => Cell::DateTime(at),
            None => Cell::Error(format!("date serial {} out of range", d.as_f64())),
        },
        DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => Cell::Typed(s.clone()),
        DataRef::Error(e) => Cell::Error(e.to_string()),
    }
}

/// A number as Excel shows it: 15 significant digits (what Excel keeps of a double), in plain
/// decimal notation.
fn excel_number(f: f64) -> String {
    let shown: f64 = format!("{f:.14e}").parse().unwrap_or(f);
    shown.to_string()
}

/// The rows the reading thread sends; a thread that ended without saying why (a panic) is an
/// error, never a file cut short.
struct SheetRows {
    receiver: Receiver<Result<Row>>,
    thread: Option<JoinHandle<()>>,
    file: String,
}

impl Iterator for SheetRows {
    type Item = Result<Row>;

    fn next(&mut self) -> Option<Result<Row>> {
        if let Ok(row) = self.receiver.recv() {
            return Some(row);
        }
        let thread = self.thread.take()?;
        thread.join().err().map(|_| {
            Err(Error::Unreadable {
                file: self.file.clone(),
                reason: "the sheet's reader failed".into(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_as_excel_shows_them() {
        assert_eq!(excel_number(0.1 + 0.2), "0.3");
        assert_eq!(excel_number(5.0), "5");
        assert_eq!(excel_number(-12.25), "-12.25");
        assert_eq!(excel_number(1e21), "1000000000000000000000");
        assert_eq!(excel_number(123_456_789.123_456_78), "123456789.123457");
    }
}
