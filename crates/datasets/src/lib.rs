//! Datasets declared once (`datasets/<name>.json`) and their landed files read as typed rows:
//! the declaration, text to typed values, and CSV or JSON Lines files (plain or gzip), Parquet
//! files and Excel sheets read in bounded batches whose bad rows are quarantined with their
//! reasons, never dropped.

pub mod api;
mod bundled;
pub mod cast;
pub mod crypt;
pub mod decl;
pub mod error;
pub mod landed;
mod ordered;
mod parquet_file;
pub mod pg;
pub mod read;
mod xlsx;

pub use crate::bundled::{bundled, check_together};
pub use crate::decl::Dataset;
pub use crate::error::{Error, Result};
pub use crate::read::{Batch, BatchLimits, LandedFile, Quarantined};
