//! Validated ids: [`WorkspaceId`], [`SourceId`], [`DestinationId`].
//!
//! Ids appear in SQL views, URLs, log lines and ordering keys, so they keep to a safe alphabet:
//! 1 to [`MAX_ID_LEN`] characters from `A-Z a-z 0-9 . _ -` ([`valid_id`]). An id is checked
//! once, when it is made (`TryFrom<String>`, `FromStr`, deserializing, decoding from SQL);
//! code that holds one need not check it again, and the three kinds cannot be swapped by
//! mistake. Each derefs to `str`, and is text in SQL.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

/// The longest id, in characters (all of them ASCII, so bytes too).
pub const MAX_ID_LEN: usize = 64;

/// Whether `id` is a valid id: 1-64 characters from a-z, A-Z, 0-9, '-', '_', '.'.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// An id outside the rule of [`valid_id`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{id}` is not a valid id: use 1-64 characters from a-z, A-Z, 0-9, '-', '_', '.'")]
pub struct InvalidId {
    /// The text refused.
    pub id: String,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(id: String) -> Result<Self, InvalidId> {
                if valid_id(&id) {
                    Ok($name(id))
                } else {
                    Err(InvalidId { id })
                }
            }
        }

        impl TryFrom<&str> for $name {
            type Error = InvalidId;
            fn try_from(id: &str) -> Result<Self, InvalidId> {
                $name::try_from(id.to_string())
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(id: &str) -> Result<Self, InvalidId> {
                $name::try_from(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let id = String::deserialize(d)?;
                $name::try_from(id).map_err(serde::de::Error::custom)
            }
        }

        impl<DB: sqlx::Database> sqlx::Type<DB> for $name
        where
            String: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as sqlx::Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $name
        where
            String: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                self.0.encode_by_ref(buf)
            }
            fn size_hint(&self) -> usize {
                self.0.size_hint()
            }
        }

        impl sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                <String as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }

        /// Decoding validates too: a row cannot smuggle in an id config would refuse.
        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            String: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let id = <String as sqlx::Decode<'r, DB>>::decode(value)?;
                Ok($name::try_from(id)?)
            }
        }
    };
}

id_type! {
    /// A workspace: the tenant that owns sources and destinations.
    WorkspaceId
}

id_type! {
    /// A source of events (one write key).
    SourceId
}

id_type! {
    /// A destination that events are delivered to.
    DestinationId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_rule_at_construction() {
        assert_eq!(
            SourceId::try_from("web-1.a_b").unwrap().as_str(),
            "web-1.a_b"
        );
        assert_eq!("x".repeat(64).parse::<DestinationId>().unwrap().len(), 64);
        for bad in ["", "a b", "a/b", "é", "a\u{1f}b"] {
            let err = WorkspaceId::try_from(bad).unwrap_err();
            assert_eq!(err.id, bad);
        }
        let long = "x".repeat(65);
        assert_eq!(
            long.parse::<SourceId>().unwrap_err().to_string(),
            format!(
                "`{long}` is not a valid id: use 1-64 characters from a-z, A-Z, 0-9, '-', '_', '.'"
            )
        );
    }

    #[test]
    fn deserializing_validates_and_serializing_is_the_text() {
        let id: DestinationId = serde_json::from_str(r#""hook""#).unwrap();
        assert_eq!(id, "hook");
        assert_eq!(id.to_string(), "hook");
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""hook""#);
        let err = serde_json::from_str::<DestinationId>(r#""no way""#).unwrap_err();
        assert!(err.to_string().contains("is not a valid id"), "{err}");
    }

    #[test]
    fn in_sql_an_id_is_text() {
        use sqlx::postgres::{PgHasArrayType, Postgres};
        use sqlx::{Type, TypeInfo};
        fn bindable<T: for<'q> sqlx::Encode<'q, Postgres> + for<'r> sqlx::Decode<'r, Postgres>>() {}
        assert_eq!(<SourceId as Type<Postgres>>::type_info().name(), "TEXT");
        assert_eq!(
            <WorkspaceId as PgHasArrayType>::array_type_info(),
            <String as PgHasArrayType>::array_type_info()
        );
        bindable::<DestinationId>();
    }
}
