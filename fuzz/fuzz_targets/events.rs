//! Any JSON an invocation may receive: each Lambda's event parser answers with a request or an
//! InvalidEvent error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let _ = ingest::event::tables_from_event(&event);
    let _ = transform::event::parse_event(&event);
    let _ = load::event::parse_event(&event);
    if let Ok(objects) = utils::s3_event::objects(&event) {
        for (_, key) in objects {
            let _ = transform::event::raw_data_key(&key);
        }
    }
});
