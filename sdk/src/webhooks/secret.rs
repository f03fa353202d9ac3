//! The signing secret and the signature it produces.
//!
//! Contract: a [`Secret`] always holds a non-empty HMAC key. `whsec_<base64>` is decoded (the
//! Standard Webhooks format); a prefixed secret whose rest is not base64 is taken literally,
//! prefix included, as is any other text. [`Secret::sign`] is the `webhook-signature` value.
//!
//! Inside a plugin (a `wasm32` build) signing is done by the host, natively, through the WIT
//! `signing` import: the HMAC compiled to WebAssembly cost several times more per delivery.
//! The host key is created on the first signature and kept with the secret (clones share it).
//! Native builds (unit tests, `sluice sink`) compute the same value here.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix marking a base64-encoded Standard Webhooks secret.
const SECRET_PREFIX: &str = "whsec_";

/// The signature scheme this crate writes and reads.
pub(crate) const VERSION: &str = "v1";

/// A secret that cannot sign anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The secret (or the base64 part of a `whsec_` secret) is empty.
    #[error("must not be empty")]
    Empty,
}

/// A webhook signing key. Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct Secret {
    key: Vec<u8>,
    /// The key on the host's side, made on first use (a component's instance is single
    /// threaded, hence `Rc`).
    #[cfg(target_arch = "wasm32")]
    host: std::cell::OnceCell<std::rc::Rc<crate::bindings::sluice::destination::signing::HmacKey>>,
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.key == other.key
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.key.len())
    }
}

impl Secret {
    /// The key of `secret`: the decoded bytes of `whsec_<base64>`, else the text's bytes.
    pub fn parse(secret: &str) -> Result<Secret, SecretError> {
        let key = secret
            .strip_prefix(SECRET_PREFIX)
            .and_then(|encoded| STANDARD.decode(encoded).ok())
            .unwrap_or_else(|| secret.as_bytes().to_vec());
        Secret::from_key(key)
    }

    /// A secret holding these key bytes.
    pub fn from_key(key: impl Into<Vec<u8>>) -> Result<Secret, SecretError> {
        let key = key.into();
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Secret {
            key,
            #[cfg(target_arch = "wasm32")]
            host: std::cell::OnceCell::new(),
        })
    }

    /// The HMAC key bytes.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The `webhook-signature` value for message `id` sent at `timestamp` (Unix seconds).
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        #[cfg(target_arch = "wasm32")]
        {
            use crate::bindings::sluice::destination::signing::HmacKey;
            let key = self
                .host
                .get_or_init(|| std::rc::Rc::new(HmacKey::new(&self.key)));
            key.sign_webhook(id, timestamp, body)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let mac = self.mac(id, &timestamp.to_string(), body);
            format!("{VERSION},{}", STANDARD.encode(mac.finalize().into_bytes()))
        }
    }

    /// The HMAC over `{id}.{timestamp}.{body}`, not yet finalized.
    pub(crate) fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
        // Not an input path: HMAC pads or hashes the key to the block size, so any length
        // works (and `key` is never empty).
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key)
            .expect("HMAC-SHA256 accepts keys of any length");
        // Fed in parts rather than concatenated: the body may be large.
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_test_vector() {
        // Published by the Standard Webhooks / Svix reference libraries: matching it means a
        // receiver's off-the-shelf verifier accepts our signatures.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid");
        let signature = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_decode_like_the_reference_libraries() {
        let key = |s: &str| Secret::parse(s).map(|s| s.key().to_vec());
        assert_eq!(key("whsec_aGk="), Ok(b"hi".to_vec()));
        assert_eq!(key("plain secret"), Ok(b"plain secret".to_vec()));
        assert_eq!(key("whsec_not base64!"), Ok(b"whsec_not base64!".to_vec()));
        assert_eq!(key(""), Err(SecretError::Empty));
        assert_eq!(key("whsec_"), Err(SecretError::Empty));
        assert_eq!(Secret::from_key(Vec::new()), Err(SecretError::Empty));
    }

    #[test]
    fn debug_output_hides_the_key() {
        let secret = Secret::parse("top-secret").expect("valid");
        assert_eq!(format!("{secret:?}"), "Secret(10 bytes)");
    }
}
