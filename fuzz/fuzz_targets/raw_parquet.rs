//! Any bytes where a raw Parquet file should be: read, checked against every registry table's
//! schema, and where one matches, turned into warehouse rows as transform would, without a
//! panic. (Transform reads from S3 with ranged GETs; the decoding is the same.)
#![no_main]

use std::collections::BTreeSet;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use transform::raw::relaxed_schema;
use transform::route::{Route, Streamed};
use utils::parquet_io::{read_parquet, schema_difference};
use utils::tables::TABLES;

fuzz_target!(|data: &[u8]| {
    let Ok(contents) = read_parquet(Bytes::copy_from_slice(data)) else {
        return;
    };
    for table in TABLES {
        let schema = relaxed_schema(table);
        if schema_difference(&contents.schema, &schema).is_some() {
            continue;
        }
        for batch in &contents.batches {
            let Ok(batch) =
                arrow::array::RecordBatch::try_new(schema.clone(), batch.columns().to_vec())
            else {
                continue;
            };
            match Route::of(table) {
                Ok(Route::Stream(Streamed::Fact { spec, target })) => {
                    let _ = transform::facts::transform_batch(
                        spec,
                        target,
                        &batch,
                        &mut BTreeSet::new(),
                    );
                }
                Ok(Route::Stream(Streamed::Direct { dim, .. })) => {
                    if let Ok(latest) = transform::snapshot::latest_per_key(table, &[&batch]) {
                        let _ = dim.build(&latest);
                    }
                }
                Ok(Route::Joined(_)) | Err(_) => {
                    let _ = transform::snapshot::latest_per_key(table, &[&batch]);
                }
            }
        }
    }
});
