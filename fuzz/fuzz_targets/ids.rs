#![no_main]
//! The id parser: text, JSON values, JSON text and comma-separated lists.
//!
//! Properties: an id is accepted exactly when it is a canonical decimal in
//! 1..=2^63-1 (a read position: 0..=2^63-1); accepted text is canonical
//! (display gives the same text back) and parse → display → parse round-trips;
//! the error says "not a number" for non-canonical text and "out of range" for
//! canonical text outside the range; JSON values and JSON text agree with the text
//! rules (numbers must be integers in range, strings must be canonical); an id list
//! is accepted exactly when every element is, and prints back as the same text.

mod spec;

use std::fmt::{Debug, Display};

use libfuzzer_sys::fuzz_target;
use readstate::api::ids::{ApiId, BodyId, BodyPosition, id_from_value, position_from_value};
use readstate::domain::{ChannelId, IdError, MessageId, UserId, is_canonical_decimal};
use readstate::http::extract::parse_id_list;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    assert_eq!(
        is_canonical_decimal(&text),
        spec::canonical(&text),
        "{text:?}"
    );

    check_text::<UserId>(&text);
    check_text::<ChannelId>(&text);
    check_text::<MessageId>(&text);
    check_position_text(&text);
    check_json_text(&text);
    check_list(&text);

    // The same bytes as a number.
    let mut raw = [0u8; 8];
    let n = data.len().min(8);
    raw[..n].copy_from_slice(&data[..n]);
    let number = u64::from_le_bytes(raw);
    check_number::<UserId>(number);
    check_number::<MessageId>(number);
    // Small numbers and the edges of the range, which random bytes rarely hit.
    check_number::<ChannelId>(number % 1000);
    check_number::<ChannelId>(spec::MAX.wrapping_add(number % 5).wrapping_sub(2));
});

fn check_text<T: ApiId + Display + Debug + PartialEq>(text: &str) {
    let parsed = T::from_text(text);
    match (&parsed, spec::id_text(text)) {
        (Ok(id), Some(value)) => {
            let shown = id.to_string();
            assert_eq!(shown, text, "accepted text is canonical");
            assert_eq!(T::from_text(&shown).as_ref(), Ok(id), "round trip");
            assert_eq!(T::from_u64(value).as_ref(), Ok(id), "same as the number");
        }
        (Err(e), None) => {
            let expected = if spec::canonical(text) {
                IdError::OutOfRange
            } else {
                IdError::NotANumber
            };
            assert_eq!(*e, expected, "{text:?}");
        }
        (got, expected) => panic!("{text:?}: parsed {got:?}, the rule says {expected:?}"),
    }
    // As a JSON string in a body.
    let from_value = id_from_value::<T>(&Value::String(text.to_owned()));
    assert_eq!(
        from_value.as_ref().ok(),
        parsed.as_ref().ok(),
        "a JSON string is read as the text"
    );
}

fn check_position_text(text: &str) {
    let parsed = position_from_value(&Value::String(text.to_owned())).ok();
    assert_eq!(parsed, spec::position_text(text), "{text:?}");
    if let Some(p) = parsed {
        assert_eq!(p.to_string(), text, "accepted positions are canonical");
    }
}

/// The text as a JSON document: the streaming deserializer (request bodies) and the
/// `Value` path (batch ops, events) agree with the rules.
fn check_json_text(text: &str) {
    let value = spec::json(text.as_bytes());
    let expected_id = value.as_ref().and_then(spec::id_json);
    let expected_position = value.as_ref().and_then(spec::position_json);

    let streamed = serde_json::from_str::<BodyId<UserId>>(text)
        .ok()
        .map(|b| b.get().get());
    assert_eq!(streamed, expected_id, "{text:?} as an id body");
    let streamed = serde_json::from_str::<BodyPosition>(text).ok().map(|p| p.0);
    assert_eq!(streamed, expected_position, "{text:?} as a position body");

    if let Some(value) = &value {
        let id = id_from_value::<ChannelId>(value).ok().map(ChannelId::get);
        assert_eq!(id, expected_id, "{value} as an id value");
        assert_eq!(
            position_from_value(value).ok(),
            expected_position,
            "{value} as a position value"
        );
    }
}

fn check_list(text: &str) {
    let parsed = parse_id_list::<ChannelId>("channels", text);
    let expected: Option<Vec<u64>> = if text.is_empty() {
        Some(Vec::new())
    } else {
        text.split(',').map(spec::id_text).collect()
    };
    match (parsed, expected) {
        (Ok(ids), Some(values)) => {
            assert_eq!(ids.iter().map(|c| c.get()).collect::<Vec<_>>(), values);
            let shown: Vec<String> = ids.iter().map(ToString::to_string).collect();
            assert_eq!(
                shown.join(","),
                text,
                "an accepted list prints back as itself"
            );
        }
        (Err(problem), None) => {
            assert_eq!(problem.field.as_deref(), Some("channels"));
            assert!(
                problem.detail.starts_with("channels: `"),
                "{}",
                problem.detail
            );
        }
        (got, expected) => panic!("{text:?}: parsed {got:?}, the rule says {expected:?}"),
    }
}

fn check_number<T: ApiId + Display + Debug + PartialEq>(number: u64) {
    let in_range = (1..=spec::MAX).contains(&number);
    let id = T::from_u64(number);
    assert_eq!(id.is_ok(), in_range, "{number}");
    if let Ok(id) = &id {
        assert_eq!(T::from_text(&id.to_string()).as_ref(), Ok(id), "round trip");
        assert_eq!(id.to_string(), number.to_string());
    } else {
        assert_eq!(id.as_ref().err(), Some(&IdError::OutOfRange));
    }
    // As JSON numbers: unsigned, signed (negative above 2^63-1) and float.
    let values = [
        (Value::from(number), in_range),
        (Value::from(number as i64), in_range),
        (Value::from(number as f64), false),
    ];
    for (value, accepted) in values {
        let parsed = id_from_value::<T>(&value);
        assert_eq!(parsed.is_ok(), accepted, "{value}");
        if let Ok(parsed) = parsed {
            assert_eq!(Ok(parsed), id);
        }
        let position = position_from_value(&value);
        let position_ok = accepted || (number == 0 && !value.is_f64());
        assert_eq!(position.is_ok(), position_ok, "{value} as a position");
        if let Ok(p) = position {
            assert_eq!(p, number);
        }
    }
}
