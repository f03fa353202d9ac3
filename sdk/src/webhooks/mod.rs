//! Standard Webhooks (<https://www.standardwebhooks.com>, the scheme Svix introduced): sign a
//! delivery, and verify one, in one place for Sluice's webhook plugin and its `sluice sink`.
//!
// Links below are written in full: rustdoc joins this text to the module's doc in `lib.rs`
// and resolves them in the crate root, where `Secret` is not in scope.
//! Contract:
//! - A delivery carries `webhook-id`, `webhook-timestamp` (Unix seconds) and
//!   `webhook-signature`: space-separated `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`
//!   entries (several during a secret rotation; other versions are ignored).
//! - [`Secret::parse`](crate::webhooks::Secret::parse) reads a `whsec_<base64>` secret as the
//!   reference libraries do; any other text is used as its UTF-8 bytes (Sluice has always
//!   accepted plain secrets).
//! - [`Secret::verify`](crate::webhooks::Secret::verify) accepts a delivery only if its
//!   timestamp lies within the tolerance of now (default
//!   [`DEFAULT_TOLERANCE`](crate::webhooks::DEFAULT_TOLERANCE), 5 minutes either way, against
//!   replays) and one of its `v1` signatures matches, compared in constant time.
//!
//! ```
//! use sluice_sdk::webhooks::{Delivery, Secret};
//!
//! let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
//! let signature = secret.sign("msg_1", 1_700_000_000, b"{}");
//! let delivery = Delivery { id: "msg_1", timestamp: "1700000000", signature: &signature };
//! assert!(secret.verify_at(&delivery, b"{}", 1_700_000_060).is_ok());
//! assert!(secret.verify_at(&delivery, b"{}", 1_700_000_000 + 3600).is_err());
//! ```

mod secret;
mod verify;

pub use secret::{Secret, SecretError};
pub use verify::{DEFAULT_TOLERANCE, Delivery, VerifyError};

/// The header carrying the message id (stable across retries of one message).
pub const HEADER_ID: &str = "webhook-id";
/// The header carrying the Unix time, in seconds, at which the delivery was signed.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// The header carrying the space-separated signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
