//! Sizes as people write them in config files and manifests (`64MiB`, `512 KiB`, `1048576`).
//!
//! [`ByteSize`] is parsed once, where the file is read, and carried as bytes from then on.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of bytes, read from `64MiB`-style text or a plain number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn bytes(self) -> u64 {
        self.0
    }

    pub const fn kib(n: u64) -> ByteSize {
        ByteSize(n << 10)
    }

    pub const fn mib(n: u64) -> ByteSize {
        ByteSize(n << 20)
    }

    /// The size as a `usize`, saturating on 32-bit targets.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

/// A size that [`parse_size`] cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("`{0}` is not a size like `64MiB`")]
    NotASize(String),
    #[error("unknown unit `{unit}` in `{text}`")]
    UnknownUnit { unit: String, text: String },
    #[error("`{0}` is too large")]
    TooLarge(String),
}

/// Parses sizes such as `64MiB`, `512KiB`, `1GiB`, `1048576` (bytes); KB/MB/GB are read as
/// binary units too, since that is what people mean for memory.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| SizeError::NotASize(text.to_string()))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(SizeError::UnknownUnit {
                unit: other.to_string(),
                text: text.to_string(),
            });
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| SizeError::TooLarge(text.to_string()))
}

impl std::str::FromStr for ByteSize {
    type Err = SizeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_size(s).map(ByteSize)
    }
}

/// The largest exact binary unit: `64MiB`, `1536KiB`, `1000` (bytes).
impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
            if b != 0 && b.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", b >> shift);
            }
        }
        write!(f, "{b}")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            Bytes(u64),
            Text(String),
        }
        match Text::deserialize(d)? {
            Text::Bytes(b) => Ok(ByteSize(b)),
            Text::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_plain_bytes() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("512 KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(
            parse_size("12XB").unwrap_err().to_string(),
            "unknown unit `xb` in `12XB`"
        );
        assert_eq!(
            parse_size("lots").unwrap_err().to_string(),
            "`lots` is not a size like `64MiB`"
        );
        assert_eq!(
            parse_size("99999999999G").unwrap_err().to_string(),
            "`99999999999G` is too large"
        );
    }

    #[test]
    fn serde_round_trips_through_text() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct L {
            a: ByteSize,
            b: ByteSize,
            c: ByteSize,
        }
        let l: L = serde_json::from_str(r#"{"a":"64MiB","b":1000,"c":"1536 KiB"}"#).unwrap();
        assert_eq!(l.a, ByteSize::mib(64));
        assert_eq!(l.b, ByteSize(1000));
        assert_eq!(l.c, ByteSize::kib(1536));
        let text = serde_json::to_string(&l).unwrap();
        assert_eq!(text, r#"{"a":"64MiB","b":"1000","c":"1536KiB"}"#);
        assert_eq!(serde_json::from_str::<L>(&text).unwrap(), l);
        let err = serde_json::from_str::<L>(r#"{"a":"lots","b":1,"c":1}"#).unwrap_err();
        assert!(err.to_string().contains("not a size"), "{err}");
    }
}
