//! The key service for declared datasets' encrypted fields (see `datasets::crypt`): KMS
//! decrypts each record's data key, asked to use the declared key only (and a key KMS says is
//! another is refused), and each encrypted data key is decrypted once per invocation (an
//! export encrypts many records under one).
//! Plaintext keys never leave memory and nothing decrypted is logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_kms::primitives::Blob;
use datasets::crypt::{DataKeys, KeyError};
use tokio::runtime::Handle;
use utils::store::{describe_sdk_error, is_transient_sdk_error};

/// By encrypted data key: its plaintext, or why KMS refused it.
type Known = HashMap<Vec<u8>, Result<Vec<u8>, String>>;

/// KMS, with the data keys decrypted in this invocation. Clones share the cache.
#[derive(Clone)]
pub struct KmsKeys {
    client: aws_sdk_kms::Client,
    cache: Arc<Mutex<Known>>,
    /// By declared key (an id, ARN or alias): the ARN of the key it names.
    declared: Arc<Mutex<HashMap<String, String>>>,
    /// The runtime whose I/O the blocking reader's calls go through.
    handle: Handle,
}

impl std::fmt::Debug for KmsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the cache: it holds plaintext keys.
        f.write_str("KmsKeys")
    }
}

impl KmsKeys {
    /// For one invocation; must be made on the runtime (the reader calls from a blocking
    /// thread of it).
    pub fn new(client: aws_sdk_kms::Client) -> Self {
        KmsKeys {
            client,
            cache: Arc::default(),
            declared: Arc::default(),
            handle: Handle::current(),
        }
    }

    /// How many data keys KMS was asked for (tests).
    pub fn decrypted(&self) -> usize {
        self.cache.lock().expect("not poisoned").len()
    }
}

impl KmsKeys {
    /// The ARN of the key `key_id` names, asked of KMS once.
    fn declared_arn(&self, key_id: &str) -> Result<String, KeyError> {
        if let Some(arn) = self.declared.lock().expect("not poisoned").get(key_id) {
            return Ok(arn.clone());
        }
        let described = self
            .handle
            .block_on(self.client.describe_key().key_id(key_id).send())
            .map_err(|e| {
                // The declared key itself is missing or ours to read: every record would fail
                // alike, so the file waits (the deployment is to fix), rather than quarantine
                // every record.
                KeyError::Unavailable(format!(
                    "the declared key {key_id}: {}",
                    describe_sdk_error(&e)
                ))
            })?;
        let arn = described
            .key_metadata()
            .and_then(|m| m.arn())
            .ok_or_else(|| KeyError::Unavailable(format!("the declared key {key_id} has no ARN")))?
            .to_owned();
        self.declared
            .lock()
            .expect("not poisoned")
            .insert(key_id.to_owned(), arn.clone());
        Ok(arn)
    }
}

impl DataKeys for KmsKeys {
    fn data_key(&mut self, key_id: &str, encrypted: &[u8]) -> Result<Vec<u8>, KeyError> {
        if let Some(known) = self.cache.lock().expect("not poisoned").get(encrypted) {
            return known.clone().map_err(KeyError::Refused);
        }
        let declared = self.declared_arn(key_id)?;
        let asked = self.handle.block_on(
            self.client
                .decrypt()
                .key_id(key_id)
                .ciphertext_blob(Blob::new(encrypted))
                .send(),
        );
        let known = match asked {
            // KMS says which key decrypted it: only the declared one counts.
            Ok(out) if out.key_id() != Some(declared.as_str()) => Err(format!(
                "encrypted under key {}, not the declared key",
                out.key_id().unwrap_or("unknown")
            )),
            Ok(out) => out
                .plaintext()
                .map(|b| b.as_ref().to_vec())
                .ok_or_else(|| "KMS returned no plaintext".to_owned()),
            Err(e) if is_transient_sdk_error(&e) => {
                return Err(KeyError::Unavailable(describe_sdk_error(&e)));
            }
            Err(e) => Err(describe_sdk_error(&e)),
        };
        self.cache
            .lock()
            .expect("not poisoned")
            .insert(encrypted.to_vec(), known.clone());
        known.map_err(KeyError::Refused)
    }
}
