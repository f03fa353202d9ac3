//! Destination configs sealed at rest (docs/catalog.md, "Secrets").
//!
//! A destination's config holds credentials (API keys, webhook secrets, tokens in URLs), so
//! the store keeps it only sealed: XChaCha20-Poly1305 (the `chacha20poly1305` crate, RustCrypto)
//! with a random 192-bit nonce per value, and the destination's workspace and id as associated
//! data, so that a sealed config cannot be moved to another destination. Beside it,
//! `destinations.config` holds a masked copy for people and SQL.
//!
//! Layout of a sealed value: `sl1` | the key's id (the first 8 bytes of the SHA-256 of the key)
//! | nonce (24 bytes) | ciphertext and tag. A host holds one current key (it seals with it)
//! and any number of previous ones (it still opens with them), which is how keys rotate.

use std::path::{Path, PathBuf};

use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 3] = b"sl1";
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 24;

/// Why a key could not be read, or a value not opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot read the secrets key {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "the secrets key {from} is not 32 bytes in base64 (make one with `head -c 32 /dev/urandom | base64`)"
    )]
    BadKey { from: String },
    #[error(
        "sealed with key {sealed_with}, which this host does not have (its keys: {have}); give \
         it as `secrets_key_file` or in `secrets_old_key_files`"
    )]
    UnknownKey { sealed_with: String, have: String },
    #[error("the sealed value is damaged or belongs to another destination")]
    Damaged,
}

/// One key and its id.
struct SecretsKey {
    id: [u8; KEY_ID_LEN],
    cipher: XChaCha20Poly1305,
}

impl SecretsKey {
    fn from_base64(text: &str, from: &str) -> Result<SecretsKey, SealError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| SealError::BadKey { from: from.into() })?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| SealError::BadKey { from: from.into() })?;
        Ok(SecretsKey::from_bytes(key))
    }

    fn from_bytes(key: [u8; 32]) -> SecretsKey {
        let digest = Sha256::digest(key);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        SecretsKey {
            id,
            cipher: XChaCha20Poly1305::new(&Key::from(key)),
        }
    }
}

/// Seals with the current key; opens with the current or a previous one.
pub struct Sealer {
    current: SecretsKey,
    previous: Vec<SecretsKey>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("current", &self.current_id())
            .field("previous", &self.previous.len())
            .finish()
    }
}

impl Sealer {
    /// The current key from base64 text (`from` names where it came from, for messages),
    /// previous keys from files.
    pub fn new(current: &str, from: &str, previous: &[PathBuf]) -> Result<Sealer, SealError> {
        let current = SecretsKey::from_base64(current, from)?;
        let previous = previous
            .iter()
            .map(|p| {
                let text = read(p)?;
                SecretsKey::from_base64(&text, &p.display().to_string())
            })
            .collect::<Result<_, _>>()?;
        Ok(Sealer { current, previous })
    }

    /// A sealer with a fresh random key (tests).
    pub fn generate() -> Sealer {
        let key: [u8; 32] = XChaCha20Poly1305::generate_key(&mut OsRng).into();
        Sealer {
            current: SecretsKey::from_bytes(key),
            previous: Vec::new(),
        }
    }

    /// A new key as base64 text, for a key file.
    pub fn new_key_text() -> String {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        base64::engine::general_purpose::STANDARD.encode(key)
    }

    /// The current key's id, as hex.
    pub fn current_id(&self) -> String {
        hex::encode(self.current.id)
    }

    /// `plaintext` sealed under the current key, bound to `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Encryption with a valid key and nonce cannot fail for inputs this small; an empty
        // output would fail to open and be reported then.
        let sealed = self
            .current
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(MAGIC.len() + KEY_ID_LEN + NONCE_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.current.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Whether `sealed` is under the current key (else it should be sealed again).
    pub fn is_current(&self, sealed: &[u8]) -> bool {
        sealed.get(MAGIC.len()..MAGIC.len() + KEY_ID_LEN) == Some(&self.current.id[..])
    }

    /// Opens a value sealed by [`Sealer::seal`] under any of this host's keys.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let header = MAGIC.len() + KEY_ID_LEN + NONCE_LEN;
        if sealed.len() < header || &sealed[..MAGIC.len()] != MAGIC {
            return Err(SealError::Damaged);
        }
        let id = &sealed[MAGIC.len()..MAGIC.len() + KEY_ID_LEN];
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKey {
                sealed_with: hex::encode(id),
                have: std::iter::once(&self.current)
                    .chain(&self.previous)
                    .map(|k| hex::encode(k.id))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let nonce: [u8; NONCE_LEN] = sealed[MAGIC.len() + KEY_ID_LEN..header]
            .try_into()
            .map_err(|_| SealError::Damaged)?;
        let nonce = XNonce::from(nonce);
        key.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: &sealed[header..],
                    aad,
                },
            )
            .map_err(|_| SealError::Damaged)
    }
}

fn read(path: &Path) -> Result<String, SealError> {
    std::fs::read_to_string(path).map_err(|error| SealError::Read {
        path: path.to_path_buf(),
        error,
    })
}

/// The key text of a key file.
pub fn read_key_file(path: &Path) -> Result<String, SealError> {
    read(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_their_destination() {
        let a = Sealer::generate();
        let sealed = a.seal(b"{\"api_key\":\"k\"}", b"acme/hook");
        assert!(!sealed.windows(6).any(|w| w == b"api_ke"), "no plain text");
        assert_eq!(
            a.open(&sealed, b"acme/hook").unwrap(),
            b"{\"api_key\":\"k\"}"
        );
        assert!(matches!(
            a.open(&sealed, b"acme/other"),
            Err(SealError::Damaged)
        ));
        let b = Sealer::generate();
        assert!(matches!(
            b.open(&sealed, b"acme/hook"),
            Err(SealError::UnknownKey { .. })
        ));
        assert!(a.is_current(&sealed) && !b.is_current(&sealed));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            a.open(&flipped, b"acme/hook"),
            Err(SealError::Damaged)
        ));
    }

    #[test]
    fn a_previous_key_still_opens_and_bad_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let old_text = Sealer::new_key_text();
        let old_path = dir.path().join("old.key");
        std::fs::write(&old_path, format!("{old_text}\n")).unwrap();
        let old = Sealer::new(&old_text, "old", &[]).unwrap();
        let sealed = old.seal(b"x", b"a");
        let new = Sealer::new(&Sealer::new_key_text(), "new", &[old_path]).unwrap();
        assert_eq!(new.open(&sealed, b"a").unwrap(), b"x");
        assert!(!new.is_current(&sealed));
        let err = Sealer::new("c2hvcnQ=", "SLUICE_SECRETS_KEY", &[]).unwrap_err();
        assert!(err.to_string().contains("SLUICE_SECRETS_KEY"), "{err}");
    }
}
