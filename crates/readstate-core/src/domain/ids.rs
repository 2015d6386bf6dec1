//! Id newtypes. The only way in is `parse`/`TryFrom`, which checks 1..=2^63-1.

use std::fmt;

/// Largest id: ids fit a signed BIGINT.
pub const MAX_ID: u64 = i64::MAX as u64;

/// Why a value is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must be an integer between 1 and 9223372036854775807")]
    OutOfRange,
    #[error("must be a decimal integer (no sign, no leading zeros)")]
    NotANumber,
}

/// Whether `text` is a canonical decimal integer: digits only, and no leading zero
/// unless it is `0` itself (so every number has one spelling).
pub fn is_canonical_decimal(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text.len() == 1 || !text.starts_with('0'))
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u64);

        impl $name {
            /// Checks the range 1..=2^63-1.
            ///
            /// # Errors
            /// [`IdError::OutOfRange`] for 0 or a value above 2^63-1.
            pub fn new(raw: u64) -> Result<Self, IdError> {
                if raw == 0 || raw > MAX_ID {
                    Err(IdError::OutOfRange)
                } else {
                    Ok(Self(raw))
                }
            }

            /// Parses a decimal string.
            ///
            /// # Errors
            /// [`IdError`] when the text is not a decimal integer in range.
            pub fn parse(text: &str) -> Result<Self, IdError> {
                if !is_canonical_decimal(text) {
                    return Err(IdError::NotANumber);
                }
                let raw: u64 = text.parse().map_err(|_| IdError::OutOfRange)?;
                Self::new(raw)
            }

            /// The raw value, always in 1..=2^63-1.
            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl TryFrom<u64> for $name {
            type Error = IdError;
            fn try_from(raw: u64) -> Result<Self, IdError> {
                Self::new(raw)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A user.
    UserId
);
id_type!(
    /// A channel: any ordered stream of messages.
    ChannelId
);
id_type!(
    /// A message; increases with time within a channel.
    MessageId
);
id_type!(
    /// A group of channels: a guild, team, workspace or category.
    GroupId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_the_full_signed_bigint_range_and_nothing_else() {
        assert_eq!(UserId::parse("1").map(UserId::get), Ok(1));
        assert_eq!(
            UserId::parse("9223372036854775807").map(UserId::get),
            Ok(MAX_ID)
        );
        assert_eq!(
            UserId::parse("9223372036854775808"),
            Err(IdError::OutOfRange)
        );
        assert_eq!(
            UserId::parse("99999999999999999999999"),
            Err(IdError::OutOfRange)
        );
        assert_eq!(UserId::parse("0"), Err(IdError::OutOfRange));
        assert_eq!(UserId::parse("-1"), Err(IdError::NotANumber));
        assert_eq!(UserId::parse("+1"), Err(IdError::NotANumber));
        assert_eq!(UserId::parse(""), Err(IdError::NotANumber));
        assert_eq!(UserId::parse("1.0"), Err(IdError::NotANumber));
    }
}
