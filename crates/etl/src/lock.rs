//! The pipeline's lock (the DynamoDB item the state machine takes, `lock_id = "pipeline"`),
//! taken by the commands that move state a running pipeline also moves (`replay`,
//! `rebuild-snapshots --force`): a running ingest would undo a replay's watermark, a running
//! transform's snapshot would be overwritten by a rebuild. The command refuses while anyone
//! holds the lock; the state machine, finding the command's item, skips its run, and takes the
//! item over once it has expired (a command killed before it released it).

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::{Error, Result};

/// The lock item's key, as the state machine writes it.
const LOCK_ID: &str = "pipeline";

/// Every owner this command writes starts so: the state machine tells its items from an
/// execution's by it.
pub const OWNER_PREFIX: &str = "etl:";

/// How long an item of this command holds the lock at most, should the command die holding it.
pub const LOCK_TTL: Duration = Duration::from_secs(3600);

/// The lock table, `PIPELINE_LOCK_TABLE`.
#[derive(Debug, Clone)]
pub struct Lock {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

/// The lock, held until [`Held::release`].
#[derive(Debug)]
pub struct Held {
    lock: Lock,
    owner: String,
}

impl Lock {
    pub fn new(sdk: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Lock {
            client: aws_sdk_dynamodb::Client::new(sdk),
            table: table.into(),
        }
    }

    /// Takes the lock for `command`, or fails with [`Error::Locked`] naming its holder.
    pub async fn acquire(&self, command: &str, now: DateTime<Utc>) -> Result<Held> {
        let user = std::env::var("USER").unwrap_or_else(|_| "operator".into());
        let owner = format!(
            "{OWNER_PREFIX}{command} by {user} at {}",
            now.to_rfc3339_opts(SecondsFormat::Millis, true)
        );
        let expires = now + chrono::Duration::from_std(LOCK_TTL).expect("a short duration");
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("lock_id", AttributeValue::S(LOCK_ID.into()))
            .item("owner", AttributeValue::S(owner.clone()))
            .item(
                "acquired_at",
                AttributeValue::S(now.to_rfc3339_opts(SecondsFormat::Millis, true)),
            )
            .item(
                "expires_at",
                AttributeValue::S(expires.to_rfc3339_opts(SecondsFormat::Millis, true)),
            )
            .condition_expression("attribute_not_exists(lock_id)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(Held {
                lock: self.clone(),
                owner,
            }),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Err(Error::Locked {
                    table: self.table.clone(),
                    owner: self.owner().await?,
                })
            }
            Err(e) => Err(self.failed("taking the pipeline's lock", e)),
        }
    }

    /// Who holds the lock now (`None`: nobody, or an item without owner).
    async fn owner(&self) -> Result<Option<String>> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("lock_id", AttributeValue::S(LOCK_ID.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.failed("reading the pipeline's lock", e))?;
        Ok(item
            .item()
            .and_then(|i| i.get("owner"))
            .and_then(|o| o.as_s().ok())
            .cloned())
    }

    fn failed(&self, what: &str, e: impl std::error::Error) -> Error {
        Error::Usage(format!(
            "{what} (DynamoDB table {}): {}",
            self.table,
            aws_sdk_dynamodb::error::DisplayErrorContext(e)
        ))
    }
}

impl Held {
    /// Releases the lock, if this command still holds it.
    pub async fn release(self) -> Result<()> {
        let delete = self
            .lock
            .client
            .delete_item()
            .table_name(&self.lock.table)
            .key("lock_id", AttributeValue::S(LOCK_ID.into()))
            .condition_expression("#owner = :me")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":me", AttributeValue::S(self.owner.clone()))
            .send()
            .await;
        match delete {
            Ok(_) => Ok(()),
            // Taken over after it expired: not ours to delete.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(self.lock.failed("releasing the pipeline's lock", e)),
        }
    }
}
