//! Any bytes a binary COPY may hand ingest for a numeric(10,2) or a timestamp(3): decoded or
//! refused with an error, never a panic or a wrong value silently.
#![no_main]

use ingest::wire::{EpochMillis, Hundredths};
use libfuzzer_sys::fuzz_target;
use tokio_postgres::types::{FromSql, Type};

fuzz_target!(|data: &[u8]| {
    let _ = Hundredths::from_sql(&Type::NUMERIC, data);
    let _ = EpochMillis::from_sql(&Type::TIMESTAMP, data);
    let _ = EpochMillis::from_sql(&Type::TIMESTAMPTZ, data);
});
