//! Encrypted fields: JSON Lines records that carry their payload encrypted, with the key
//! material beside it, as collections exported with envelope encryption are. Each record's
//! data key, encrypted under a master key, is decrypted by the key service (a [`DataKeys`],
//! which caches it), and the payload with it, in AES-256-GCM or the CTR mode older exports use.
//! The payload's members are then read as the record's own. A record whose payload cannot be
//! decrypted is quarantined with the reason, never dropped; nothing decrypted is logged.

use std::collections::HashMap;

use aes::cipher::{KeyIvInit, StreamCipher};
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Where a record keeps its encrypted payload and key material, and the key it must name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// The member holding the payload, base64: once decrypted, a JSON object whose members are
    /// read as the record's.
    pub field: String,
    /// The member (a dotted path) holding the data key encrypted under the master key, base64.
    pub encrypted_key: String,
    /// The member holding the initialisation vector, base64 (12 bytes for GCM, 16 for CTR).
    pub iv: String,
    /// The member holding the master key's id.
    pub key_id: String,
    /// The mode the export uses, unless the record names its own in `mode_field`.
    #[serde(default)]
    pub mode: Mode,
    /// The member naming a record's mode (`AES-256-GCM`, `AES-256-CTR`), if any.
    #[serde(default)]
    pub mode_field: Option<String>,
    /// The master key (its ARN): a record naming another key is quarantined, and the key
    /// service is asked to decrypt with this key only.
    pub kms_key: String,
}

/// The AES mode of a payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Mode {
    /// The 16-byte tag after the ciphertext.
    #[default]
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    /// A 16-byte initial counter block, big-endian; no authentication.
    #[serde(rename = "aes-256-ctr")]
    Aes256Ctr,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "aes-256-gcm" => Ok(Mode::Aes256Gcm),
            "aes-256-ctr" => Ok(Mode::Aes256Ctr),
            _ => Err(format!(
                "unknown mode {s:?}: expected AES-256-GCM or AES-256-CTR"
            )),
        }
    }
}

impl Encryption {
    /// The top-level members the encryption uses (not columns).
    pub fn members(&self) -> impl Iterator<Item = &str> {
        [&self.field, &self.encrypted_key, &self.iv, &self.key_id]
            .into_iter()
            .chain(&self.mode_field)
            .map(|p| p.split('.').next().unwrap_or(p))
    }
}

/// The key service: the plaintext of a data key encrypted under `key_id`.
pub trait DataKeys: Send {
    fn data_key(&mut self, key_id: &str, encrypted: &[u8]) -> Result<Vec<u8>, KeyError>;
}

/// Why a data key could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The service refused this key (not ours, not a key, corrupt): the record is quarantined.
    Refused(String),
    /// The service could not be reached or failed: the file is tried again later.
    Unavailable(String),
}

/// A record's payload decrypted, or why it could not be (`Err(Ok(reason))`: quarantine the
/// record; `Err(Err(reason))`: the key service is unavailable).
pub type Decrypted = Result<Vec<u8>, Result<String, String>>;

/// Decrypts `record`'s payload as `encryption` says.
pub fn decrypt(
    encryption: &Encryption,
    record: &HashMap<String, &RawValue>,
    keys: &mut dyn DataKeys,
) -> Decrypted {
    let text = |path: &str| -> Result<String, Result<String, String>> {
        member(record, path).ok_or_else(|| Ok(format!("missing field {path}")))
    };
    let bytes = |path: &str| -> Result<Vec<u8>, Result<String, String>> {
        STANDARD
            .decode(text(path)?)
            .map_err(|e| Ok(format!("field {path}: not base64: {e}")))
    };
    let key_id = text(&encryption.key_id)?;
    if key_id != encryption.kms_key {
        return Err(Ok(format!(
            "encrypted under key {key_id:?}, not the declared key"
        )));
    }
    let mode = match &encryption.mode_field {
        Some(path) => text(path)?.parse().map_err(Ok)?,
        None => encryption.mode,
    };
    let payload = bytes(&encryption.field)?;
    let iv = bytes(&encryption.iv)?;
    let encrypted_key = bytes(&encryption.encrypted_key)?;
    let data_key = keys
        .data_key(&encryption.kms_key, &encrypted_key)
        .map_err(|e| match e {
            KeyError::Refused(reason) => Ok(format!("the data key does not decrypt: {reason}")),
            KeyError::Unavailable(reason) => Err(reason),
        })?;
    if data_key.len() != 32 {
        return Err(Ok(format!(
            "the data key is {} bytes, not an AES-256 key",
            data_key.len()
        )));
    }
    match mode {
        Mode::Aes256Gcm => {
            if iv.len() != 12 {
                return Err(Ok(format!(
                    "the iv is {} bytes, expected 12 for GCM",
                    iv.len()
                )));
            }
            Aes256Gcm::new_from_slice(&data_key)
                .expect("a 32-byte key")
                .decrypt(Nonce::from_slice(&iv), payload.as_slice())
                .map_err(|_| Ok("the payload does not decrypt (its tag does not match)".into()))
        }
        Mode::Aes256Ctr => {
            if iv.len() != 16 {
                return Err(Ok(format!(
                    "the iv is {} bytes, expected 16 for CTR",
                    iv.len()
                )));
            }
            let mut plain = payload;
            ctr::Ctr128BE::<aes::Aes256>::new_from_slices(&data_key, &iv)
                .expect("a 32-byte key and a 16-byte iv")
                .apply_keystream(&mut plain);
            Ok(plain)
        }
    }
}

/// The string at a dotted path of `record`, `None` where there is none.
fn member(record: &HashMap<String, &RawValue>, path: &str) -> Option<String> {
    let mut parts = path.split('.');
    let mut raw: &RawValue = record.get(parts.next()?)?;
    for part in parts {
        let inner: HashMap<&str, &RawValue> = serde_json::from_str(raw.get()).ok()?;
        raw = inner.get(part)?;
    }
    serde_json::from_str::<String>(raw.get()).ok()
}

/// Encrypts `plain` as an export would: for tests and the demo's generated data.
pub fn encrypt(mode: Mode, data_key: &[u8], iv: &[u8], plain: &[u8]) -> Vec<u8> {
    match mode {
        Mode::Aes256Gcm => Aes256Gcm::new_from_slice(data_key)
            .expect("a 32-byte key")
            .encrypt(Nonce::from_slice(iv), plain)
            .expect("encrypts"),
        Mode::Aes256Ctr => {
            let mut out = plain.to_vec();
            ctr::Ctr128BE::<aes::Aes256>::new_from_slices(data_key, iv)
                .expect("a 32-byte key and a 16-byte iv")
                .apply_keystream(&mut out);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<u8>, usize);

    impl DataKeys for Fixed {
        fn data_key(&mut self, _: &str, encrypted: &[u8]) -> Result<Vec<u8>, KeyError> {
            self.1 += 1;
            match encrypted {
                b"unavailable" => Err(KeyError::Unavailable("throttled".into())),
                b"ours" => Ok(self.0.clone()),
                _ => Err(KeyError::Refused("InvalidCiphertextException".into())),
            }
        }
    }

    fn encryption() -> Encryption {
        Encryption {
            field: "payload".into(),
            encrypted_key: "meta.key".into(),
            iv: "meta.iv".into(),
            key_id: "meta.key_id".into(),
            mode: Mode::Aes256Gcm,
            mode_field: Some("meta.mode".into()),
            kms_key: "arn:aws:kms:eu-west-2:1:key/k".into(),
        }
    }

    fn record(mode: &str, payload: &[u8], iv: &[u8], key: &[u8], key_id: &str) -> String {
        serde_json::json!({
            "id": 1,
            "payload": STANDARD.encode(payload),
            "meta": {"key": STANDARD.encode(key), "iv": STANDARD.encode(iv),
                     "key_id": key_id, "mode": mode}
        })
        .to_string()
    }

    fn run(line: &str, keys: &mut Fixed) -> Decrypted {
        let parsed: HashMap<String, &RawValue> = serde_json::from_str(line).unwrap();
        decrypt(&encryption(), &parsed, keys)
    }

    #[test]
    fn both_modes_decrypt_and_every_failure_has_its_reason() {
        let key = vec![7u8; 32];
        let mut keys = Fixed(key.clone(), 0);
        let arn = "arn:aws:kms:eu-west-2:1:key/k";
        let plain = br#"{"name":"a"}"#;
        let gcm = encrypt(Mode::Aes256Gcm, &key, &[1; 12], plain);
        let ctr = encrypt(Mode::Aes256Ctr, &key, &[2; 16], plain);
        assert_eq!(
            run(
                &record("AES-256-GCM", &gcm, &[1; 12], b"ours", arn),
                &mut keys
            )
            .unwrap(),
            plain
        );
        assert_eq!(
            run(
                &record("AES-256-CTR", &ctr, &[2; 16], b"ours", arn),
                &mut keys
            )
            .unwrap(),
            plain
        );
        let mut tampered = gcm.clone();
        tampered[0] ^= 1;
        let reason = |line: String, keys: &mut Fixed| run(&line, keys).unwrap_err().unwrap();
        assert!(
            reason(
                record("AES-256-GCM", &tampered, &[1; 12], b"ours", arn),
                &mut keys
            )
            .contains("tag")
        );
        assert!(
            reason(
                record("AES-256-GCM", &gcm, &[1; 12], b"theirs", arn),
                &mut keys
            )
            .contains("InvalidCiphertext")
        );
        assert!(
            reason(
                record("AES-256-GCM", &gcm, &[1; 12], b"ours", "arn:other"),
                &mut keys
            )
            .contains("not the declared key")
        );
        assert!(
            reason(
                record("AES-256-XTS", &gcm, &[1; 12], b"ours", arn),
                &mut keys
            )
            .contains("unknown mode")
        );
        assert!(
            reason(
                record("AES-256-GCM", &gcm, &[1; 16], b"ours", arn),
                &mut keys
            )
            .contains("expected 12")
        );
        let missing = r#"{"id": 2, "meta": {"key": "b3Vycw==", "iv": "AAAAAAAAAAAAAAAA", "key_id": "arn:aws:kms:eu-west-2:1:key/k", "mode": "AES-256-GCM"}}"#;
        assert_eq!(reason(missing.into(), &mut keys), "missing field payload");
        let unavailable = run(
            &record("AES-256-GCM", &gcm, &[1; 12], b"unavailable", arn),
            &mut keys,
        );
        assert_eq!(unavailable.unwrap_err(), Err("throttled".into()));
    }
}
