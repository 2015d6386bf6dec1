//! The input rules as the README and the OpenAPI document state them, written
//! independently of the library so that each target can compare the parser with
//! them (a differential oracle, not a copy of the code under test).

#![allow(dead_code)] // each target uses a part

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Largest id and read position: 2^63-1.
pub const MAX: u64 = i64::MAX as u64;

/// An id as text: `^[1-9][0-9]{0,18}$` and at most 2^63-1.
pub fn id_text(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let first = *bytes.first()?;
    if bytes.len() > 19 || !(b'1'..=b'9').contains(&first) {
        return None;
    }
    let mut value: u128 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u128::from(b - b'0');
    }
    u64::try_from(value).ok().filter(|v| *v <= MAX)
}

/// A read position as text: `0` or an id.
pub fn position_text(text: &str) -> Option<u64> {
    if text == "0" { Some(0) } else { id_text(text) }
}

/// Digits only, no leading zero unless the text is `0`.
pub fn canonical(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'))
}

/// An integer JSON number (not a float) as u64; negative ones are `None`.
fn json_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) if !n.is_f64() => n.as_u64(),
        _ => None,
    }
}

/// An id as a JSON value: an integer in 1..=2^63-1 or a string [`id_text`] accepts.
pub fn id_json(value: &Value) -> Option<u64> {
    match value {
        Value::String(s) => id_text(s),
        other => json_u64(other).filter(|v| (1..=MAX).contains(v)),
    }
}

/// A read position as a JSON value: as [`id_json`], 0 allowed.
pub fn position_json(value: &Value) -> Option<u64> {
    match value {
        Value::String(s) => position_text(s),
        other => json_u64(other).filter(|v| *v <= MAX),
    }
}

/// A timestamp (`at`): any non-negative JSON integer.
pub fn at_json(value: &Value) -> Option<u64> {
    json_u64(value)
}

/// `muted_until` as a JSON value: an integer in 0..=2^63-1 (ms; 0 = not muted), or
/// `null`, which means muted until unmuted and reads as 2^63-1. (Unlike every other
/// field, null is not absent here: absent keeps the value, so callers look at the
/// member's presence themselves.)
pub fn muted_until_json(value: &Value) -> Option<u64> {
    match value {
        Value::Null => Some(MAX),
        other => json_u64(other).filter(|v| *v <= MAX),
    }
}

/// `level` as a JSON value: `Some(None)` for null (unchanged), `Some(Some(name))`
/// for one of `all`, `mentions`, `nothing`, and `None` for anything else.
pub fn level_json(value: &Value) -> Option<Option<&'static str>> {
    match value {
        Value::Null => Some(None),
        Value::String(s) => ["all", "mentions", "nothing"]
            .into_iter()
            .find(|name| name == s)
            .map(Some),
        _ => None,
    }
}

/// An optional member: absent or `null` is `Some(None)`; present, `parse` decides.
pub fn optional<T>(
    value: Option<&Value>,
    parse: impl Fn(&Value) -> Option<T>,
) -> Option<Option<T>> {
    match value {
        None | Some(Value::Null) => Some(None),
        Some(v) => parse(v).map(Some),
    }
}

/// A JSON array of ids.
pub fn id_array(value: &Value) -> Option<Vec<u64>> {
    match value {
        Value::Array(items) => items.iter().map(id_json).collect(),
        _ => None,
    }
}

/// A cheap deterministic hash of the input, to vary encodings.
pub fn hash(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Whether `body` is a JSON object that names a member more than once (a `Value`
/// keeps the last one and cannot tell; a request body must not repeat a member).
pub fn repeats_a_member(body: &[u8]) -> bool {
    serde_json::from_slice::<Members>(body).is_ok_and(|m| m.0)
}

/// A JSON object's member names, read in order: whether one repeats.
struct Members(bool);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Names;
        impl<'de> Visitor<'de> for Names {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut seen = HashSet::new();
                let mut repeated = false;
                while let Some((name, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                    repeated |= !seen.insert(name);
                }
                Ok(Members(repeated))
            }
        }
        deserializer.deserialize_map(Names)
    }
}

/// JSON text as a `Value`, read literally: every object is an object. (serde_json's
/// own `Value` reads `{"$serde_json::private::RawValue": "<json>"}` as `<json>`
/// when its `raw_value` feature is on, as it is here; to the API that is an object
/// with an unknown member.)
pub fn json(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Literal>(bytes).ok().map(|l| l.0)
}

struct Literal(Value);

impl<'de> Deserialize<'de> for Literal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = Literal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Literal, E> {
                Ok(Literal(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Literal, E> {
                Ok(Literal(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Literal, E> {
                Ok(Literal(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Literal, E> {
                Ok(Literal(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Literal, E> {
                Ok(Literal(v.into()))
            }
            fn visit_unit<E>(self) -> Result<Literal, E> {
                Ok(Literal(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Literal, A::Error> {
                let mut items = Vec::new();
                while let Some(Literal(v)) = seq.next_element()? {
                    items.push(v);
                }
                Ok(Literal(Value::Array(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Literal, A::Error> {
                let mut members = Map::new();
                while let Some((k, Literal(v))) = map.next_entry::<String, Literal>()? {
                    members.insert(k, v);
                }
                Ok(Literal(Value::Object(members)))
            }
        }
        deserializer.deserialize_any(Any)
    }
}
