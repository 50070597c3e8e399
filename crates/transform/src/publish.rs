//! Declared datasets' raw files, published: ingest writes them typed already (see the ingest
//! crate's `dataset` module), so transform copies each one from the raw zone to the same key
//! of the processed zone (the lake, where Glue reads it) and queues it for the load.
//!
//! Transform's queue of them is the markers ingest puts (`utils::cursor::dataset_pending`);
//! a landed file arriving late gets raw keys older than files already published, which a
//! cursor by key would pass by. Each file is queued for the load, copied unless the processed
//! zone holds its key already (an earlier run copied it, then stopped), and its marker deleted
//! last: a crash anywhere leaves the marker, and the next run finishes the file without
//! writing it twice.

use tracing::{info, warn};
use utils::deadline::Deadline;
use utils::store::S3Store;

use crate::error::Result;

/// What an invocation published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    pub keys: Vec<String>,
    /// Files the deadline left queued, for the next invocation.
    pub left: usize,
}

/// Publishes the queued dataset files until `deadline` (one always goes).
pub async fn publish_datasets(
    raw: &S3Store,
    processed: &S3Store,
    deadline: Deadline,
) -> Result<Published> {
    let queued = utils::cursor::dataset_pending(raw).await?;
    let mut published = Vec::with_capacity(queued.len());
    let total = queued.len();
    let mut left = 0;
    for (done, key) in queued.into_iter().enumerate() {
        if done > 0 && deadline.reached() {
            left = total - done;
            info!(
                files_left = left,
                "deadline margin reached: the datasets' files left stay queued"
            );
            break;
        }
        if processed.head(&key).await?.is_none() {
            if raw.head(&key).await?.is_none() {
                warn!(
                    key,
                    "a queued dataset file is not in the raw zone (deleted by hand?); dropped \
                     from the queue"
                );
                utils::cursor::clear_dataset_pending(raw, &key).await?;
                continue;
            }
            // Queued before it is copied, so that the load its copy triggers (S3 mode) finds
            // it queued; a load that finds it queued and not there yet leaves it queued.
            utils::cursor::mark_pending(processed, &key).await?;
            processed.copy_from(raw.bucket(), &key).await?;
        } else {
            utils::cursor::mark_pending(processed, &key).await?;
        }
        utils::cursor::clear_dataset_pending(raw, &key).await?;
        published.push(key);
    }
    if !published.is_empty() {
        info!(files = published.len(), "dataset files published");
    }
    Ok(Published {
        keys: published,
        left,
    })
}
