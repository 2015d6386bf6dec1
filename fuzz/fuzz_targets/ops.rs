#![no_main]
//! Writes as JSON: NATS ingest payloads (`ingest::parse_payload`, `type` names the
//! op) and the ops of a batch (`api::ops::parse_op`, `op` names it; reached through
//! a `{"ops": [...]}` body parsed by `parse_json`, or any JSON array of ops).
//!
//! Properties: an op is accepted exactly when the rules of the API reference allow
//! it (an object; a known kind; only known fields, and only those of that kind
//! unless null; required ids present; ids canonical and in range; read positions
//! may be 0; `at` a non-negative integer; `muted_until` an integer in 0..=2^63-1 or
//! null, which mutes until unmuted where absent keeps the value; `level` one of
//! `all`, `mentions`, `nothing`), and the parsed op holds exactly those
//! values; an event and the same object with `op` in place of `type` parse alike;
//! a parsed op encoded back to JSON (ids as strings or numbers) parses to the same
//! op; every error is invalid input (never a storage or not-found error), naming
//! `event` or a field of the event, or `ops[i]` / `ops[i].field` in a batch. JSON is
//! read literally by the oracle (`spec::json`), so an op wrapped in serde_json's
//! raw-value member is an object with an unknown member, not the op inside.

mod spec;

use libfuzzer_sys::fuzz_target;
use readstate::api::dto::BatchRequest;
use readstate::api::ops::{parse_event, parse_op};
use readstate::domain::{ChannelId, GroupId, Level, MessageId, Op, UserId};
use readstate::http::extract::parse_json;
use readstate::ingest::parse_payload;
use readstate::service::ServiceError;
use serde_json::{Map, Value, json};

fuzz_target!(|data: &[u8]| {
    let style = spec::hash(data);

    // As a NATS payload.
    let event = parse_payload(data);
    match spec::json(data) {
        None => assert_eq!(field_of(&event), "event", "{event:?}"),
        Some(value) => {
            let from_value = parse_event(&value);
            assert_eq!(
                format!("{event:?}"),
                format!("{from_value:?}"),
                "payload and value agree"
            );
            check(&value, None, style);
            if let Value::Array(items) = &value {
                for (i, item) in items.iter().enumerate() {
                    check(item, None, style);
                    check(item, Some(i), style);
                }
            }
        }
    }

    // As a batch body.
    if let Ok(BatchRequest { ops }) = parse_json::<BatchRequest>(data) {
        for (i, op) in ops.iter().enumerate() {
            check(op, Some(i), style);
        }
    }
});

/// Parses `value` as an event (`index` None) or as op `index` of a batch, and checks
/// it against the rules.
fn check(value: &Value, index: Option<usize>, style: u64) {
    let kind_key = if index.is_some() { "op" } else { "type" };
    let parse = |v: &Value| match index {
        Some(i) => parse_op(i, v),
        None => parse_event(v),
    };
    let parsed = parse(value);
    let expected = match value {
        Value::Object(map) => rule(map, kind_key),
        _ => None,
    };
    assert_eq!(
        parsed.as_ref().ok(),
        expected.as_ref(),
        "{value} as {kind_key} (error: {:?})",
        parsed.as_ref().err()
    );

    match &parsed {
        Ok(op) => {
            let encoded = encode(op, kind_key, style);
            assert_eq!(
                parse(&encoded).ok().as_ref(),
                Some(op),
                "{encoded} round trip"
            );
        }
        Err(_) => check_error_field(value, index, &field_of(&parsed)),
    }

    // The same object with the other name for the kind parses alike.
    if let Value::Object(map) = value {
        let other_key = if index.is_some() { "type" } else { "op" };
        if !map.contains_key(other_key) {
            let renamed: Map<String, Value> = map
                .iter()
                .map(|(k, v)| {
                    let k = if k == kind_key { other_key } else { k.as_str() };
                    (k.to_owned(), v.clone())
                })
                .collect();
            let renamed = Value::Object(renamed);
            let other = match index {
                Some(_) => parse_event(&renamed),
                None => parse_op(7, &renamed),
            };
            assert_eq!(other.ok(), parsed.ok(), "{value} with {other_key}");
        }
    }
}

/// The field an error names; panics on anything but invalid input.
fn field_of(result: &Result<Op, ServiceError>) -> String {
    match result {
        Err(ServiceError::Invalid { field, .. }) => field.clone(),
        other => panic!("a parse error is invalid input, got {other:?}"),
    }
}

const FIELDS: [&str; 11] = [
    "user_id",
    "channel_id",
    "message_id",
    "author_id",
    "mentions",
    "last_read_message_id",
    "at",
    "parent_id",
    "group_id",
    "muted_until",
    "level",
];

/// An error names the event (or `ops[i]`), or one of its fields: a member of the
/// object, a field it lacks, or `mentions[j]`.
fn check_error_field(value: &Value, index: Option<usize>, field: &str) {
    let (whole, bare) = match index {
        None => ("event".to_owned(), Some(field)),
        Some(i) => {
            let prefix = format!("ops[{i}]");
            let bare = field
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.strip_prefix('.'));
            (prefix, bare)
        }
    };
    if field == whole {
        return;
    }
    let Some(bare) = bare else {
        panic!("{value}: error field {field:?} is not under {whole}");
    };
    let kind_key = if index.is_some() { "op" } else { "type" };
    let in_object = value.as_object().is_some_and(|m| m.contains_key(bare));
    let mention = bare
        .strip_prefix("mentions[")
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|j| j.parse::<usize>().ok())
        .is_some_and(|j| value["mentions"].as_array().is_some_and(|a| j < a.len()));
    assert!(
        in_object || mention || bare == kind_key || FIELDS.contains(&bare),
        "{value}: error field {field:?}"
    );
}

/// The fields each kind takes (besides the kind), from the API reference.
fn fields_of(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "message_created" => &["channel_id", "message_id", "author_id", "mentions"],
        "message_deleted" => &["channel_id", "message_id"],
        "join" => &["user_id", "channel_id", "last_read_message_id"],
        "ack" => &["user_id", "channel_id", "message_id", "at"],
        "ack_all" => &["user_id"],
        "unread" => &["user_id", "channel_id", "message_id"],
        "leave" => &["user_id", "channel_id"],
        "delete_channel" => &["channel_id"],
        "set_channel" => &["channel_id", "parent_id", "group_id", "at"],
        "settings" => &["user_id", "channel_id", "muted_until", "level", "at"],
        "delete_user" => &["user_id"],
        _ => return None,
    })
}

/// The op the rules read from `map`, `None` when they reject it.
fn rule(map: &Map<String, Value>, kind_key: &str) -> Option<Op> {
    if map
        .keys()
        .any(|k| k != kind_key && !FIELDS.contains(&k.as_str()))
    {
        return None;
    }
    let Some(Value::String(kind)) = map.get(kind_key) else {
        return None;
    };
    let allowed = fields_of(kind)?;
    if map
        .iter()
        .any(|(k, v)| k != kind_key && !v.is_null() && !allowed.contains(&k.as_str()))
    {
        return None;
    }
    let get = |name: &str| map.get(name).filter(|v| !v.is_null());
    let id = |name: &str| get(name).and_then(spec::id_json);
    let user = || id("user_id").and_then(|v| UserId::new(v).ok());
    let channel = || id("channel_id").and_then(|v| ChannelId::new(v).ok());
    let message = || id("message_id").and_then(|v| MessageId::new(v).ok());
    let to_user = |v: u64| UserId::new(v).ok();
    Some(match kind.as_str() {
        "message_created" => Op::MessageCreated {
            channel: channel()?,
            message: message()?,
            author: match spec::optional(get("author_id"), spec::id_json)? {
                Some(v) => Some(to_user(v)?),
                None => None,
            },
            mentions: spec::optional(get("mentions"), spec::id_array)?
                .unwrap_or_default()
                .into_iter()
                .map(to_user)
                .collect::<Option<Vec<_>>>()?,
        },
        "message_deleted" => Op::MessageDeleted {
            channel: channel()?,
            message: message()?,
        },
        "join" => Op::Join {
            user: user()?,
            channel: channel()?,
            read: spec::optional(get("last_read_message_id"), spec::position_json)?,
        },
        "ack" => Op::Ack {
            user: user()?,
            channel: channel()?,
            message: message()?,
            at: spec::optional(get("at"), spec::at_json)?,
        },
        "ack_all" => Op::AckAll { user: user()? },
        "unread" => Op::Unread {
            user: user()?,
            channel: channel()?,
            message: message()?,
        },
        "leave" => Op::Leave {
            user: user()?,
            channel: channel()?,
        },
        "delete_channel" => Op::DeleteChannel {
            channel: channel()?,
        },
        "set_channel" => Op::SetChannel {
            channel: channel()?,
            parent: match spec::optional(get("parent_id"), spec::id_json)? {
                Some(v) => Some(ChannelId::new(v).ok()?),
                None => None,
            },
            group: match spec::optional(get("group_id"), spec::id_json)? {
                Some(v) => Some(GroupId::new(v).ok()?),
                None => None,
            },
            at: spec::optional(get("at"), spec::at_json)?,
        },
        "settings" => Op::Settings {
            user: user()?,
            channel: channel()?,
            // Present (null included) sets it; absent keeps it.
            muted_until: match map.get("muted_until") {
                None => None,
                Some(v) => Some(spec::muted_until_json(v)?),
            },
            level: spec::level_json(map.get("level").unwrap_or(&Value::Null))?.map(
                |name| match name {
                    "mentions" => Level::Mentions,
                    "nothing" => Level::Nothing,
                    _ => Level::All,
                },
            ),
            at: spec::optional(get("at"), spec::at_json)?,
        },
        "delete_user" => Op::DeleteUser { user: user()? },
        _ => return None,
    })
}

/// `op` as JSON, ids as strings or numbers and with or without explicit nulls
/// depending on `style`.
fn encode(op: &Op, kind_key: &str, style: u64) -> Value {
    let id = |raw: u64, bit: u32| {
        if style >> (bit % 64) & 1 == 0 {
            json!(raw.to_string())
        } else {
            json!(raw)
        }
    };
    let mut map = Map::new();
    let (kind, fields): (&str, Vec<(&str, Value)>) = match op {
        Op::MessageCreated {
            channel,
            message,
            author,
            mentions,
        } => (
            "message_created",
            vec![
                ("channel_id", id(channel.get(), 1)),
                ("message_id", id(message.get(), 2)),
                ("author_id", author.map_or(Value::Null, |a| id(a.get(), 3))),
                (
                    "mentions",
                    Value::Array(
                        mentions
                            .iter()
                            .enumerate()
                            .map(|(i, m)| id(m.get(), 10 + i as u32))
                            .collect(),
                    ),
                ),
            ],
        ),
        Op::MessageDeleted { channel, message } => (
            "message_deleted",
            vec![
                ("channel_id", id(channel.get(), 1)),
                ("message_id", id(message.get(), 2)),
            ],
        ),
        Op::Join {
            user,
            channel,
            read,
        } => (
            "join",
            vec![
                ("user_id", id(user.get(), 0)),
                ("channel_id", id(channel.get(), 1)),
                (
                    "last_read_message_id",
                    read.map_or(Value::Null, |r| id(r, 4)),
                ),
            ],
        ),
        Op::Ack {
            user,
            channel,
            message,
            at,
        } => (
            "ack",
            vec![
                ("user_id", id(user.get(), 0)),
                ("channel_id", id(channel.get(), 1)),
                ("message_id", id(message.get(), 2)),
                ("at", at.map_or(Value::Null, |a| json!(a))),
            ],
        ),
        Op::AckAll { user } => ("ack_all", vec![("user_id", id(user.get(), 0))]),
        Op::Unread {
            user,
            channel,
            message,
        } => (
            "unread",
            vec![
                ("user_id", id(user.get(), 0)),
                ("channel_id", id(channel.get(), 1)),
                ("message_id", id(message.get(), 2)),
            ],
        ),
        Op::Leave { user, channel } => (
            "leave",
            vec![
                ("user_id", id(user.get(), 0)),
                ("channel_id", id(channel.get(), 1)),
            ],
        ),
        Op::DeleteChannel { channel } => {
            ("delete_channel", vec![("channel_id", id(channel.get(), 1))])
        }
        Op::SetChannel {
            channel,
            parent,
            group,
            at,
        } => (
            "set_channel",
            vec![
                ("channel_id", id(channel.get(), 1)),
                ("parent_id", parent.map_or(Value::Null, |p| id(p.get(), 5))),
                ("group_id", group.map_or(Value::Null, |g| id(g.get(), 6))),
                ("at", at.map_or(Value::Null, |a| json!(a))),
            ],
        ),
        Op::Settings {
            user,
            channel,
            level,
            at,
            ..
        } => (
            "settings",
            vec![
                ("user_id", id(user.get(), 0)),
                ("channel_id", id(channel.get(), 1)),
                ("level", level.map_or(Value::Null, |l| json!(l.as_str()))),
                ("at", at.map_or(Value::Null, |a| json!(a))),
            ],
        ),
        Op::DeleteUser { user } => ("delete_user", vec![("user_id", id(user.get(), 0))]),
    };
    map.insert(kind_key.to_owned(), json!(kind));
    for (name, value) in fields {
        // Absent and null mean the same; write nulls out half of the time.
        if !value.is_null() || style >> 63 == 1 {
            map.insert(name.to_owned(), value);
        }
    }
    // `muted_until` is written only when set (absent keeps it; null is a value:
    // muted until unmuted, written as null or as 2^63-1).
    if let Op::Settings {
        muted_until: Some(until),
        ..
    } = op
    {
        let value = if *until == spec::MAX && style >> 7 & 1 == 0 {
            Value::Null
        } else {
            json!(until)
        };
        map.insert("muted_until".to_owned(), value);
    }
    // A null field of another kind is allowed too.
    if style >> 62 & 1 == 1 && !map.contains_key("at") {
        map.insert("at".to_owned(), Value::Null);
    }
    Value::Object(map)
}
