//! A landed file's identity in the pipeline: the id everything ingest writes for it is named
//! after, and where its record (the commit of its ingest) is kept in the ingest bucket.

/// A landed file's id: a hash of its key and ETag (64-bit FNV-1a, stable across builds).
pub fn file_id(key: &str, etag: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key
        .bytes()
        .chain(std::iter::once(b'\n'))
        .chain(etag.trim_matches('"').bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Where a dataset's file records live in the ingest bucket.
pub fn records_prefix(dataset: &str) -> String {
    format!("_state/datasets/{dataset}/files/")
}

pub fn record_key(dataset: &str, id: &str) -> String {
    format!("{}{id}.json", records_prefix(dataset))
}
