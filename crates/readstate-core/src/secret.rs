//! [`Secret`]: the one type that carries secrets (the storage URL, whose password
//! is one, and every later key or token secret). Its `Debug`, `Display` and
//! `Serialize` never show the secret, so it cannot reach a log line, an error
//! message or `readstate check-config` by accident; only [`Secret::expose`] gives
//! the value, to the code that uses it.
//!
//! What is shown instead: a URL with a password (`scheme://user:password@host/...`)
//! shows as `scheme://user:***@host/...`, so operators still see which server it
//! names; a URL without a password is shown as it is (it holds nothing secret);
//! anything else is `***`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret value; see the module docs for what its `Display` shows.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

/// What every redacted secret (or password) is shown as.
pub const REDACTED: &str = "***";

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the code that uses it (never for logging).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The value as it may be shown.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

/// `value` as it may be shown: a URL's password masked, a URL without one as it is,
/// anything else masked whole.
fn redact(value: &str) -> String {
    let Some(scheme_end) = value.find("://") else {
        return REDACTED.to_owned();
    };
    let rest = &value[scheme_end + 3..];
    // The authority ends at the first `/`, `?` or `#`; credentials end at its last `@`.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        None => value.to_owned(),
        Some(at) => match authority[..at].split_once(':') {
            // A user without a password.
            None => value.to_owned(),
            Some((user, _)) => format!(
                "{}://{user}:{REDACTED}@{}{}",
                &value[..scheme_end],
                &authority[at + 1..],
                &rest[authority_end..]
            ),
        },
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({:?})", self.redacted())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_urls_password_is_masked_and_the_rest_is_kept() {
        let url = Secret::new("postgres://app:s3cret@db.internal:5432/readstate?sslmode=require");

        let shown = [
            url.to_string(),
            format!("{url:?}"),
            serde_json::to_string(&url).unwrap_or_default(),
        ];

        for text in &shown {
            assert!(!text.contains("s3cret"), "{text}");
            assert!(
                text.contains("postgres://app:***@db.internal:5432/readstate"),
                "{text}"
            );
        }
        assert_eq!(
            url.expose(),
            "postgres://app:s3cret@db.internal:5432/readstate?sslmode=require"
        );
    }

    #[test]
    fn a_url_without_a_password_shows_as_it_is_and_anything_else_is_masked() {
        assert_eq!(
            Secret::new("sqlite://readstate-data/readstate.db").to_string(),
            "sqlite://readstate-data/readstate.db"
        );
        assert_eq!(
            Secret::new("postgres://postgres@127.0.0.1/test").to_string(),
            "postgres://postgres@127.0.0.1/test"
        );
        assert_eq!(Secret::new("hs256-signing-key").to_string(), REDACTED);
        assert_eq!(
            Secret::new("postgres://u:p@ss@host/db").to_string(),
            "postgres://u:***@host/db"
        );
    }
}
