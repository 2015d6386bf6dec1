//! API keys: `rsk_` and 64 hex digits of randomness. Only a key's SHA-256 is
//! configured; a presented key is hashed and compared with every configured hash in
//! constant time, so neither the comparison nor the number of keys tried tells an
//! attacker how close a guess was.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AccessError, Caller, Invalid, Scope, Scopes};
use crate::config::ApiKeySettings;

/// What every generated key starts with (so a leaked one is easy to recognise).
pub const KEY_PREFIX: &str = "rsk_";

/// A fresh random key (256 bits from the operating system's CSPRNG).
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// The hex SHA-256 of `key`: what `auth.api_keys[].key_sha256` holds.
pub fn sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

struct ApiKey {
    name: Arc<str>,
    hash: [u8; 32],
    scopes: Scopes,
}

/// The configured keys.
#[derive(Default)]
pub struct ApiKeys {
    keys: Vec<ApiKey>,
}

impl ApiKeys {
    /// Checks and loads `auth.api_keys`: a unique non-empty name, a 64-hex-digit
    /// hash (unique too) and at least one known scope each.
    ///
    /// # Errors
    /// [`AccessError`] naming the entry's field.
    pub fn new(entries: &[ApiKeySettings]) -> Result<Self, AccessError> {
        let mut keys: Vec<ApiKey> = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let at = |field: &str| format!("auth.api_keys[{i}].{field}");
            let name = entry.name.trim();
            if name.is_empty() {
                return Err(AccessError::new(at("name"), "must not be empty"));
            }
            if keys.iter().any(|k| &*k.name == name) {
                return Err(AccessError::new(
                    at("name"),
                    format!("{name:?} is used by another key"),
                ));
            }
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(entry.key_sha256.trim(), &mut hash).is_err() {
                return Err(AccessError::new(
                    at("key_sha256"),
                    "must be a SHA-256 in 64 hex digits (`readstate api-key new` prints one)",
                ));
            }
            if keys.iter().any(|k| k.hash == hash) {
                return Err(AccessError::new(
                    at("key_sha256"),
                    "is the hash of another key",
                ));
            }
            if entry.scopes.is_empty() {
                return Err(AccessError::new(
                    at("scopes"),
                    "must list at least one of read, write, admin",
                ));
            }
            let mut scopes = Scopes::default();
            for scope in &entry.scopes {
                let Some(scope) = Scope::parse(scope.trim()) else {
                    return Err(AccessError::new(
                        at("scopes"),
                        format!("unknown scope {scope:?}: use read, write or admin"),
                    ));
                };
                scopes = scopes.with(scope);
            }
            keys.push(ApiKey {
                name: Arc::from(name),
                hash,
                scopes,
            });
        }
        Ok(Self { keys })
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The caller `key` identifies. Every configured hash is compared, in constant
    /// time, whatever matched.
    ///
    /// # Errors
    /// [`Invalid::UnknownKey`] when no configured key has its hash.
    pub fn find(&self, key: &str) -> Result<Caller, Invalid> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for (index, candidate) in self.keys.iter().enumerate() {
            if bool::from(candidate.hash.ct_eq(&digest)) {
                found = Some(index);
            }
        }
        let index = found.ok_or(Invalid::UnknownKey)?;
        let key = &self.keys[index];
        Ok(Caller::Service {
            index,
            name: key.name.clone(),
            scopes: key.scopes,
        })
    }
}
