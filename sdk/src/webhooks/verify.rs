//! Verifying a received delivery.
//!
//! Contract: [`Secret::verify_at`] checks, in this order, that the headers are present, that the
//! timestamp is an integer within the tolerance of `now` (either way: a clock ahead of ours is
//! as suspicious as a replay), and that at least one `v1,` entry of the signature header is a
//! valid HMAC of the delivery. Signatures are compared in constant time (`hmac`'s
//! `verify_slice`), so the time taken does not tell an attacker how much of a guess was right.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::Mac;

use super::secret::{Secret, VERSION};

/// How far a delivery's timestamp may be from now: the reference libraries' default.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The signature headers of one received delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery<'a> {
    /// `webhook-id`.
    pub id: &'a str,
    /// `webhook-timestamp`, as received.
    pub timestamp: &'a str,
    /// `webhook-signature`, as received.
    pub signature: &'a str,
}

/// Why a delivery was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A signature header is missing (or not text); names the header.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not Unix seconds.
    #[error("webhook-timestamp is not an integer: {0:?}")]
    InvalidTimestamp(String),
    /// The timestamp is further from now than the tolerance allows.
    #[error(
        "webhook-timestamp {timestamp} is {drift}s from now, more than the {tolerance}s allowed"
    )]
    OutsideTolerance {
        /// The delivery's timestamp.
        timestamp: u64,
        /// Seconds between it and now.
        drift: u64,
        /// The tolerance, in seconds.
        tolerance: u64,
    },
    /// No `v1` signature matched.
    #[error("no matching v1 signature")]
    NoMatchingSignature,
    /// The system clock reads before 1970.
    #[error("system clock before the Unix epoch")]
    Clock,
}

impl Secret {
    /// [`Secret::verify_with`] with [`DEFAULT_TOLERANCE`] and the system clock.
    pub fn verify(&self, delivery: &Delivery<'_>, body: &[u8]) -> Result<(), VerifyError> {
        self.verify_with(delivery, body, DEFAULT_TOLERANCE)
    }

    /// [`Secret::verify_at`] with the system clock.
    pub fn verify_with(
        &self,
        delivery: &Delivery<'_>,
        body: &[u8],
        tolerance: Duration,
    ) -> Result<(), VerifyError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| VerifyError::Clock)?
            .as_secs();
        self.check(delivery, body, now, tolerance)
    }

    /// Verifies `delivery` of `body` as received at `now` (Unix seconds), with
    /// [`DEFAULT_TOLERANCE`].
    pub fn verify_at(
        &self,
        delivery: &Delivery<'_>,
        body: &[u8],
        now: u64,
    ) -> Result<(), VerifyError> {
        self.check(delivery, body, now, DEFAULT_TOLERANCE)
    }

    fn check(
        &self,
        delivery: &Delivery<'_>,
        body: &[u8],
        now: u64,
        tolerance: Duration,
    ) -> Result<(), VerifyError> {
        let text = delivery.timestamp.trim();
        let timestamp: u64 = text
            .parse()
            .map_err(|_| VerifyError::InvalidTimestamp(text.to_owned()))?;
        let drift = now.abs_diff(timestamp);
        if drift > tolerance.as_secs() {
            return Err(VerifyError::OutsideTolerance {
                timestamp,
                drift,
                tolerance: tolerance.as_secs(),
            });
        }
        // Signed over the timestamp as sent, so that a receiver never re-formats what the
        // sender signed.
        let mac = self.mac(delivery.id, text, body);
        let matched = delivery
            .signature
            .split_whitespace()
            .filter_map(|entry| entry.split_once(','))
            .filter(|(version, _)| *version == VERSION)
            .filter_map(|(_, encoded)| STANDARD.decode(encoded).ok())
            .any(|candidate| mac.clone().verify_slice(&candidate).is_ok());
        if matched {
            Ok(())
        } else {
            Err(VerifyError::NoMatchingSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn secret() -> Secret {
        Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid")
    }

    fn check(timestamp: &str, signature: &str, body: &[u8]) -> Result<(), VerifyError> {
        let delivery = Delivery {
            id: "msg_1",
            timestamp,
            signature,
        };
        secret().verify_at(&delivery, body, NOW)
    }

    #[test]
    fn accepts_its_own_signature() {
        let signature = secret().sign("msg_1", NOW, b"{}");
        assert_eq!(check("1700000000", &signature, b"{}"), Ok(()));
    }

    #[test]
    fn rejects_a_changed_body_id_or_secret() {
        let signature = secret().sign("msg_1", NOW, b"{}");
        assert_eq!(
            check("1700000000", &signature, b"{ }"),
            Err(VerifyError::NoMatchingSignature)
        );
        let other_id = secret().sign("msg_2", NOW, b"{}");
        assert_eq!(
            check("1700000000", &other_id, b"{}"),
            Err(VerifyError::NoMatchingSignature)
        );
        let other_secret = Secret::parse("another").expect("valid");
        let delivery = Delivery {
            id: "msg_1",
            timestamp: "1700000000",
            signature: &signature,
        };
        assert_eq!(
            other_secret.verify_at(&delivery, b"{}", NOW),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn any_of_several_v1_signatures_may_match() {
        let good = secret().sign("msg_1", NOW, b"{}");
        let rotated = Secret::parse("old-secret")
            .expect("valid")
            .sign("msg_1", NOW, b"{}");
        let encoded = good.trim_start_matches("v1,");
        // Rotation: the old secret's signature first; unknown versions and junk are skipped.
        let header = format!("{rotated} v2,{encoded} v1,not-base64!! nonsense  {good}");
        assert_eq!(check("1700000000", &header, b"{}"), Ok(()));
        // The right bytes under another version do not count.
        assert_eq!(
            check("1700000000", &format!("v1a,{encoded}"), b"{}"),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            check("1700000000", "", b"{}"),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn a_truncated_signature_does_not_match() {
        let good = secret().sign("msg_1", NOW, b"{}");
        let bytes = STANDARD
            .decode(good.trim_start_matches("v1,"))
            .expect("base64");
        let short = format!("v1,{}", STANDARD.encode(&bytes[..16]));
        assert_eq!(
            check("1700000000", &short, b"{}"),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_replays() {
        for (offset, ok) in [(-300_i64, true), (300, true), (-301, false), (301, false)] {
            let at = NOW.saturating_add_signed(offset);
            let signature = secret().sign("msg_1", at, b"{}");
            let result = check(&at.to_string(), &signature, b"{}");
            assert_eq!(result.is_ok(), ok, "{offset}: {result:?}");
        }
        // The replay this guards against: a correctly signed delivery from long ago.
        let signature = secret().sign("msg_1", 1, b"{}");
        assert_eq!(
            check("1", &signature, b"{}"),
            Err(VerifyError::OutsideTolerance {
                timestamp: 1,
                drift: NOW - 1,
                tolerance: 300
            })
        );
    }

    #[test]
    fn a_timestamp_must_be_unix_seconds() {
        for bad in ["", "soon", "-5", "1.5", "2023-11-14T22:13:20Z"] {
            assert_eq!(
                check(bad, "v1,AAAA", b"{}"),
                Err(VerifyError::InvalidTimestamp(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_wider_tolerance_accepts_older_deliveries() {
        let at = NOW - 3600;
        let signature = secret().sign("msg_1", at, b"{}");
        let delivery = Delivery {
            id: "msg_1",
            timestamp: &at.to_string(),
            signature: &signature,
        };
        assert!(secret().verify_at(&delivery, b"{}", NOW).is_err());
        assert_eq!(
            secret().check(&delivery, b"{}", NOW, Duration::from_secs(7200)),
            Ok(())
        );
        // And with the real clock: a delivery signed now passes.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let signature = secret().sign("msg_1", now, b"{}");
        let fresh = Delivery {
            id: "msg_1",
            timestamp: &now.to_string(),
            signature: &signature,
        };
        assert_eq!(secret().verify(&fresh, b"{}"), Ok(()));
    }
}
