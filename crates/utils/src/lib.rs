//! What the ToteSys ETL Lambdas share.

pub mod catalog;
pub mod cursor;
pub mod db;
pub mod deadline;
pub mod error;
pub mod file_list;
pub mod keys;
pub mod lambda;
pub mod logging;
pub mod metrics;
pub mod parquet_io;
pub mod query;
pub mod s3_event;
pub mod store;
pub mod tables;
pub mod time;
pub mod warehouse;
pub mod watermark;

pub use error::{ERROR_TYPES, Error, RETRYABLE_ERROR_TYPES, Result};
