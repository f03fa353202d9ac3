//! The `signing` import: webhook signatures computed natively by the host.
//!
//! Why on the host: HMAC-SHA256 compiled to WebAssembly ran at several times the cost of the
//! host's native code, on every delivery of every signed webhook. A guest holds an
//! [`HmacKey`] resource; the key's padded hash state is computed once, at construction, and
//! each signature clones it and hashes only the message.
//!
//! Contract: [`HmacKey::sign_webhook`] is the Standard Webhooks `webhook-signature` value,
//! byte for byte what `sluice_sdk::webhooks::Secret::sign` computes natively (tested below
//! against the published test vector and against the SDK).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A keyed HMAC-SHA256, held in an instance's resource table for the guest.
pub struct HmacKey {
    keyed: Hmac<Sha256>,
}

impl HmacKey {
    pub fn new(key: &[u8]) -> HmacKey {
        // HMAC accepts a key of any length (it pads or hashes it): this cannot fail.
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC-SHA256 takes keys of any length"));
        HmacKey { keyed }
    }

    /// `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`.
    pub fn sign_webhook(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = self.keyed.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(itoa(timestamp, &mut [0; 20]));
        mac.update(b".");
        mac.update(body);
        let mut signature = String::with_capacity(3 + 44);
        signature.push_str("v1,");
        STANDARD.encode_string(mac.finalize().into_bytes(), &mut signature);
        signature
    }

    /// HMAC-SHA256 of the concatenation of `parts`.
    pub fn hmac_sha256<'a>(&self, parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
        let mut mac = self.keyed.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }
}

/// `n` in decimal, written into `buf` without allocating.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_test_vector_and_the_sdk() {
        // The reference libraries' vector (secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw).
        let key = STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("base64");
        let body = br#"{"test": 2432232314}"#;
        let signature =
            HmacKey::new(&key).sign_webhook("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");

        let sdk = sluice_sdk::webhooks::Secret::from_key(key.clone()).expect("a key");
        for (id, ts) in [
            ("a", 0),
            ("msg_2", 9),
            ("m:d", 1_700_000_000),
            ("x", u64::MAX),
        ] {
            assert_eq!(
                HmacKey::new(&key).sign_webhook(id, ts, body),
                sdk.sign(id, ts, body),
                "{id} at {ts}"
            );
        }
    }

    #[test]
    fn raw_hmac_is_over_the_concatenated_parts() {
        let key = HmacKey::new(b"k");
        let whole = key.hmac_sha256([b"abc.def".as_slice()]);
        let parts = key.hmac_sha256([b"abc".as_slice(), b".", b"def"]);
        assert_eq!(whole, parts);
        assert_eq!(whole.len(), 32);
        assert_eq!(
            hex::encode(
                HmacKey::new(b"key")
                    .hmac_sha256([b"The quick brown fox jumps over the lazy dog".as_slice()])
            ),
            // RFC 4231-style known answer (Wikipedia's HMAC example).
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn timestamps_are_written_in_decimal() {
        for n in [0, 7, 10, 1_614_265_330, u64::MAX] {
            assert_eq!(itoa(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }
}
