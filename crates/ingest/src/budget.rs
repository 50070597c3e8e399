//! How much one invocation does: the file bound, the deadline, and the files written so far.

use utils::deadline::Deadline;

/// How much one invocation does: files of at most `max_rows_per_file` rows, and no new file
/// once the deadline is reached (one file is always written, so a run always moves on).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rows_per_file: u64,
    pub deadline: Deadline,
}

/// Files one invocation writes at most, whatever its deadline. The state machine carries every
/// key of a round in its state (ingest's outputs, transform's input and output, load's input),
/// which Step Functions limits to 256 KB: 11 tables of 20 keys (about 60 bytes each, quoted)
/// is 13 KB, and transform writes at most two outputs per raw file, so a round stays well under
/// the limit in every copy. At the default bound a round is then up to 20M rows a table,
/// transformed and loaded before the next round reads on.
pub const MAX_FILES_PER_INVOCATION: usize = 20;

/// What an invocation may still do: [`Limits`], and the files written so far.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub limits: Limits,
    pub files_written: usize,
}

impl Budget {
    pub fn new(limits: Limits) -> Self {
        Budget {
            limits,
            files_written: 0,
        }
    }

    /// True once a file is written and the deadline margin reached, or
    /// [`MAX_FILES_PER_INVOCATION`] files are written.
    pub(crate) fn spent(&self) -> bool {
        self.files_written >= MAX_FILES_PER_INVOCATION
            || self.files_written > 0 && self.limits.deadline.reached()
    }
}
