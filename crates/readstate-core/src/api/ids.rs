//! Ids as requests carry them: the range every id must be in (1..=2^63-1, so that
//! it fits a signed BIGINT), read positions (0 allowed), the serde wrappers that
//! accept a JSON number or a decimal string, and their OpenAPI schemas.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::{PartialSchema, ToSchema};

use crate::domain::{ChannelId, GroupId, IdError, MessageId, UserId};

/// Largest id (and read position): ids fit a signed BIGINT.
pub const MAX_ID: u64 = i64::MAX as u64;

/// Why a value is not an id, in the words every id error uses.
pub fn id_reason() -> String {
    IdError::OutOfRange.to_string()
}

/// The canonical decimals of 1..=2^63-1 as a regular expression (no anchors): up
/// to 18 digits, or 19 digits not above 9223372036854775807, spelled out digit by
/// digit (checked against [`MAX_ID`] by a test), so that every string the pattern
/// accepts is an id and the other way round.
macro_rules! id_digits {
    () => {
        "(?:[1-9][0-9]{0,17}|[1-8][0-9]{18}|9[0-1][0-9]{17}|92[0-1][0-9]{16}|922[0-2][0-9]{15}\
         |9223[0-2][0-9]{14}|92233[0-6][0-9]{13}|922337[0-1][0-9]{12}|92233720[0-2][0-9]{10}\
         |922337203[0-5][0-9]{9}|9223372036[0-7][0-9]{8}|92233720368[0-4][0-9]{7}\
         |922337203685[0-3][0-9]{6}|9223372036854[0-6][0-9]{5}|92233720368547[0-6][0-9]{4}\
         |922337203685477[0-4][0-9]{3}|9223372036854775[0-7][0-9]{2}|922337203685477580[0-7])"
    };
}

/// An id as text: a canonical decimal (no sign, no leading zeros) in
/// 1..=9223372036854775807, exactly what the server accepts.
pub const ID_PATTERN: &str = concat!("^", id_digits!(), "$");

/// A read position as text: `0`, or an id.
pub const POSITION_PATTERN: &str = concat!("^(?:0|", id_digits!(), ")$");

/// A comma-separated list of ids (`1,2,3`), as `?channels=` takes it: empty, or
/// up to 1000 ids (`limits.max_channels_filter`'s default).
pub const ID_LIST_PATTERN: &str =
    concat!("^(?:", id_digits!(), "(?:,", id_digits!(), "){0,999})?$");

/// Why a value is not a read position (0 is allowed: nothing read).
pub const POSITION_REASON: &str = "must be an integer between 0 and 9223372036854775807";

/// The id newtypes of the domain, as every transport parses them.
pub trait ApiId: Copy + Sized {
    /// Checks the range 1..=2^63-1.
    ///
    /// # Errors
    /// When the value is out of range.
    fn from_u64(raw: u64) -> Result<Self, IdError>;
    /// Parses a decimal string.
    ///
    /// # Errors
    /// When the text is not a decimal integer in range.
    fn from_text(text: &str) -> Result<Self, IdError>;
}

macro_rules! api_id {
    ($($t:ty),*) => {$(
        impl ApiId for $t {
            fn from_u64(raw: u64) -> Result<Self, IdError> {
                <$t>::new(raw)
            }
            fn from_text(text: &str) -> Result<Self, IdError> {
                <$t>::parse(text)
            }
        }
    )*};
}
api_id!(UserId, ChannelId, MessageId, GroupId);

/// An id in a request body: a JSON number or a decimal string, checked to be in
/// 1..=2^63-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyId<T>(pub T);

impl<T: Copy> BodyId<T> {
    /// The id.
    pub fn get(self) -> T {
        self.0
    }
}

struct IdVisitor<T>(PhantomData<T>);

impl<T: ApiId> Visitor<'_> for IdVisitor<T> {
    type Value = BodyId<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an id (an integer between 1 and 9223372036854775807, as a JSON number or a decimal string)")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        T::from_u64(v)
            .map(BodyId)
            .map_err(|_| E::custom(id_reason()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        u64::try_from(v)
            .map_err(|_| E::custom(id_reason()))
            .and_then(|v| self.visit_u64(v))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(E::custom(id_reason()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        T::from_text(v)
            .map(BodyId)
            .map_err(|_| E::custom(id_reason()))
    }
}

impl<'de, T: ApiId> Deserialize<'de> for BodyId<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IdVisitor(PhantomData))
    }
}

/// A read position in a request body (`last_read_message_id`): like an id, but 0 is
/// allowed (nothing read yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPosition(pub u64);

struct PositionVisitor;

impl Visitor<'_> for PositionVisitor {
    type Value = BodyPosition;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a read position (an integer between 0 and 9223372036854775807, as a JSON number or a decimal string)")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        if v > MAX_ID {
            Err(E::custom(POSITION_REASON))
        } else {
            Ok(BodyPosition(v))
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        u64::try_from(v)
            .map_err(|_| E::custom(POSITION_REASON))
            .and_then(|v| self.visit_u64(v))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(E::custom(POSITION_REASON))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse_position(v).map_err(|()| E::custom(POSITION_REASON))
    }
}

fn parse_position(text: &str) -> Result<BodyPosition, ()> {
    if !crate::domain::is_canonical_decimal(text) {
        return Err(());
    }
    let v: u64 = text.parse().map_err(|_| ())?;
    if v > MAX_ID {
        Err(())
    } else {
        Ok(BodyPosition(v))
    }
}

impl<'de> Deserialize<'de> for BodyPosition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PositionVisitor)
    }
}

/// Parses a JSON value as an id (a number or a decimal string), for the op parser.
///
/// # Errors
/// The reason, when the value is not an id.
pub fn id_from_value<T: ApiId>(value: &serde_json::Value) -> Result<T, String> {
    BodyId::<T>::deserialize(value)
        .map(BodyId::get)
        .map_err(|e| e.to_string())
}

/// Parses a JSON value as a read position (0 allowed), for the op parser.
///
/// # Errors
/// The reason, when the value is not a read position.
pub fn position_from_value(value: &serde_json::Value) -> Result<u64, String> {
    BodyPosition::deserialize(value)
        .map(|p| p.0)
        .map_err(|e| e.to_string())
}

/// An id in a request: a JSON number or a decimal string, 1..=2^63-1.
#[derive(Debug)]
pub struct IdInput;

impl PartialSchema for IdInput {
    fn schema() -> RefOr<Schema> {
        integer_or_string(
            1,
            "An id: an integer between 1 and 9223372036854775807, as a JSON number written without a fraction \
             or exponent (`42`, not `42.0`) or as a canonical decimal string (`\"42\"`)",
        )
    }
}

impl ToSchema for IdInput {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("IdInput")
    }
}

/// A read position in a request: like [`IdInput`] but 0 (nothing read) is allowed.
#[derive(Debug)]
pub struct PositionInput;

impl PartialSchema for PositionInput {
    fn schema() -> RefOr<Schema> {
        integer_or_string(
            0,
            "A read position: an integer between 0 and 9223372036854775807, as a JSON number written without a \
             fraction or exponent or as a canonical decimal string",
        )
    }
}

impl ToSchema for PositionInput {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("PositionInput")
    }
}

fn integer_or_string(minimum: u64, description: &str) -> RefOr<Schema> {
    let pattern = if minimum == 0 {
        POSITION_PATTERN
    } else {
        ID_PATTERN
    };
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(minimum))
                .maximum(Some(MAX_ID)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(pattern)),
        )
        .description(Some(description))
        .examples([serde_json::json!("1234567890123456789")])
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The alternation of canonical decimals in 1..=`max`, built digit by digit.
    fn decimals_up_to(max: u64) -> String {
        let digits = max.to_string();
        let n = digits.len();
        let mut alternatives = vec![format!("[1-9][0-9]{{0,{}}}", n - 2)];
        for (i, d) in digits.bytes().map(|b| b - b'0').enumerate() {
            let low = u8::from(i == 0);
            if i == n - 1 {
                alternatives.push(format!("{}[0-{d}]", &digits[..i]));
            } else if d > low {
                alternatives.push(format!(
                    "{}[{low}-{}][0-9]{{{}}}",
                    &digits[..i],
                    d - 1,
                    n - i - 1
                ));
            }
        }
        format!("(?:{})", alternatives.join("|"))
    }

    #[test]
    fn the_id_pattern_spells_out_exactly_the_range_of_ids() {
        let expected = decimals_up_to(MAX_ID);
        assert_eq!(ID_PATTERN, format!("^{expected}$"));
        assert_eq!(POSITION_PATTERN, format!("^(?:0|{expected})$"));
        assert_eq!(
            ID_LIST_PATTERN,
            format!("^(?:{expected}(?:,{expected}){{0,999}})?$")
        );
    }
}
