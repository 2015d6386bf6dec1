//! Writes as JSON values: the ops of a batch and the events of the NATS ingest
//! share one parser, so a bad op fails alone with an error naming its field
//! (`ops[i].field` in a batch, the bare field in an event).

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::dto::{level_from_value, muted_until_from_value};
use super::ids::{ApiId, id_from_value, position_from_value};
use crate::domain::{ChannelId, Level, MessageId, Op, UserId};
use crate::service::ServiceError;

/// Reads JSON text as a [`Value`], literally (see [`literal_values`]): how the
/// ingest reads an event.
///
/// # Errors
/// When `bytes` is not one JSON document.
pub fn value_from_slice(bytes: &[u8]) -> serde_json::Result<Value> {
    serde_json::from_slice::<LiteralValue>(bytes).map(|v| v.0)
}

/// Reads a JSON array as [`Value`]s, literally (for `#[serde(deserialize_with)]`: the
/// ops of a batch). `Value`'s own `Deserialize` reads an object whose first member
/// is named `$serde_json::private::RawValue` (serde_json's `raw_value` feature, which
/// axum and sqlx turn on) as the JSON text of that member's string, so
/// `{"$serde_json::private::RawValue": "{\"op\": \"leave\", ...}"}` would be taken
/// for the op inside the string. Read literally it is an object with an unknown
/// member, rejected like any other.
///
/// # Errors
/// When the value is not an array.
pub fn literal_values<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Value>, D::Error> {
    Vec::<LiteralValue>::deserialize(deserializer).map(|v| v.into_iter().map(|v| v.0).collect())
}

/// Reads one JSON value literally (see [`literal_values`]), for a field a request
/// body reads as a [`Value`] before checking it.
///
/// # Errors
/// When the input is not JSON.
pub fn literal_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
    LiteralValue::deserialize(deserializer).map(|v| v.0)
}

/// A [`Value`] read member by member, with no special member names. (serde_json's
/// `arbitrary_precision` feature would hand numbers over as maps too; it is off, and
/// the raw-value unit test below, which compares with `Value`, fails if it comes on.)
struct LiteralValue(Value);

impl<'de> Deserialize<'de> for LiteralValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(LiteralVisitor)
            .map(LiteralValue)
    }
}

struct LiteralVisitor;

impl<'de> Visitor<'de> for LiteralVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(LiteralValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some((name, LiteralValue(value))) = map.next_entry::<String, LiteralValue>()? {
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

/// Every field a batch op may carry.
pub const OP_FIELDS: [&str; 12] = [
    "op",
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

/// Every op name.
pub const OP_NAMES: [&str; 11] = [
    "message_created",
    "message_deleted",
    "join",
    "ack",
    "ack_all",
    "unread",
    "leave",
    "delete_channel",
    "set_channel",
    "settings",
    "delete_user",
];

/// The fields (besides `op`) an op of `kind` needs, and those it may take: what
/// [`parse_op`] checks, for the OpenAPI document of a batch op.
pub fn op_fields(kind: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    Some(match kind {
        "message_created" => (&["channel_id", "message_id"], &["author_id", "mentions"]),
        "message_deleted" => (&["channel_id", "message_id"], &[]),
        "join" => (&["user_id", "channel_id"], &["last_read_message_id"]),
        "ack" => (&["user_id", "channel_id", "message_id"], &["at"]),
        "ack_all" => (&["user_id"], &[]),
        "unread" => (&["user_id", "channel_id", "message_id"], &[]),
        "leave" => (&["user_id", "channel_id"], &[]),
        "delete_channel" => (&["channel_id"], &[]),
        "set_channel" => (&["channel_id"], &["parent_id", "group_id", "at"]),
        "settings" => (&["user_id", "channel_id"], &["muted_until", "level", "at"]),
        "delete_user" => (&["user_id"], &[]),
        _ => return None,
    })
}

/// The fields (besides `op`) an op of `kind` takes.
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

/// Reads the fields of one op, naming errors `ops[i].field`.
struct OpFields<'a> {
    prefix: String,
    map: &'a Map<String, Value>,
}

impl OpFields<'_> {
    fn name(&self, field: &str) -> String {
        if self.prefix.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.prefix)
        }
    }

    /// The value of `field`, `None` when absent or null.
    fn get(&self, field: &str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    fn optional_id<T: ApiId>(&self, field: &str) -> Result<Option<T>, ServiceError> {
        self.get(field)
            .map(|v| {
                id_from_value(v).map_err(|reason| ServiceError::invalid(self.name(field), reason))
            })
            .transpose()
    }

    fn id<T: ApiId>(&self, field: &str) -> Result<T, ServiceError> {
        self.optional_id(field)?
            .ok_or_else(|| ServiceError::invalid(self.name(field), "required"))
    }

    fn user(&self) -> Result<UserId, ServiceError> {
        self.id("user_id")
    }

    fn channel(&self) -> Result<ChannelId, ServiceError> {
        self.id("channel_id")
    }

    fn message(&self) -> Result<MessageId, ServiceError> {
        self.id("message_id")
    }

    /// The mentioned users (how many is the service's limit to check).
    fn mentions(&self) -> Result<Vec<UserId>, ServiceError> {
        let Some(value) = self.get("mentions") else {
            return Ok(Vec::new());
        };
        let Value::Array(items) = value else {
            return Err(ServiceError::invalid(
                self.name("mentions"),
                "must be an array of user ids",
            ));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                id_from_value(v).map_err(|reason| {
                    ServiceError::invalid(self.name(&format!("mentions[{i}]")), reason)
                })
            })
            .collect()
    }

    fn position(&self) -> Result<Option<u64>, ServiceError> {
        self.get("last_read_message_id")
            .map(|v| {
                position_from_value(v).map_err(|reason| {
                    ServiceError::invalid(self.name("last_read_message_id"), reason)
                })
            })
            .transpose()
    }

    fn at(&self) -> Result<Option<u64>, ServiceError> {
        self.get("at")
            .map(|v| {
                v.as_u64().ok_or_else(|| {
                    ServiceError::invalid(
                        self.name("at"),
                        "must be a non-negative integer (ms since the Unix epoch)",
                    )
                })
            })
            .transpose()
    }

    /// `muted_until`: absent keeps the value (`None`); `null` mutes until unmuted,
    /// unlike every other field, where null is absent.
    fn muted_until(&self) -> Result<Option<u64>, ServiceError> {
        self.map
            .get("muted_until")
            .map(|v| {
                muted_until_from_value(v)
                    .map_err(|reason| ServiceError::invalid(self.name("muted_until"), reason))
            })
            .transpose()
    }

    fn level(&self) -> Result<Option<Level>, ServiceError> {
        match self.get("level") {
            None => Ok(None),
            Some(v) => level_from_value(v)
                .map_err(|reason| ServiceError::invalid(self.name("level"), reason)),
        }
    }
}

/// Parses op number `index` of a batch.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `ops[index]` or `ops[index].field`: not an object,
/// missing or unknown `op`, an unknown field, a field that does not apply to the op,
/// a missing or invalid id.
pub fn parse_op(index: usize, value: &Value) -> Result<Op, ServiceError> {
    parse_with(value, "op", format!("ops[{index}]"))
}

/// Parses an event of the NATS ingest: the fields of a batch op, with `type` in place
/// of `op`; errors name the bare field (`channel_id`, `type`).
///
/// # Errors
/// As [`parse_op`].
pub fn parse_event(value: &Value) -> Result<Op, ServiceError> {
    parse_with(value, "type", String::new())
}

fn parse_with(value: &Value, kind_key: &str, prefix: String) -> Result<Op, ServiceError> {
    let Value::Object(map) = value else {
        let what = if prefix.is_empty() { "event" } else { &prefix };
        return Err(ServiceError::invalid(what, "must be an object"));
    };
    let fields = OpFields { prefix, map };
    let known = || std::iter::once(kind_key).chain(OP_FIELDS[1..].iter().copied());
    if let Some(unknown) = map.keys().find(|k| !known().any(|f| f == k.as_str())) {
        return Err(ServiceError::invalid(
            fields.name(unknown),
            format!(
                "unknown field; expected one of {}",
                known().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    let kind = match fields.get(kind_key) {
        None => return Err(ServiceError::invalid(fields.name(kind_key), "required")),
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => {
            return Err(ServiceError::invalid(
                fields.name(kind_key),
                format!("must be one of {}", OP_NAMES.join(", ")),
            ));
        }
    };
    let Some(allowed) = fields_of(kind) else {
        return Err(ServiceError::invalid(
            fields.name(kind_key),
            format!("must be one of {}", OP_NAMES.join(", ")),
        ));
    };
    if let Some((extra, _)) = map
        .iter()
        .find(|(k, v)| k.as_str() != kind_key && !v.is_null() && !allowed.contains(&k.as_str()))
    {
        return Err(ServiceError::invalid(
            fields.name(extra),
            format!("not allowed for {kind_key} {kind}"),
        ));
    }
    Ok(match kind {
        "message_created" => Op::MessageCreated {
            channel: fields.channel()?,
            message: fields.message()?,
            author: fields.optional_id("author_id")?,
            mentions: fields.mentions()?,
        },
        "message_deleted" => Op::MessageDeleted {
            channel: fields.channel()?,
            message: fields.message()?,
        },
        "join" => Op::Join {
            user: fields.user()?,
            channel: fields.channel()?,
            read: fields.position()?,
        },
        "ack" => Op::Ack {
            user: fields.user()?,
            channel: fields.channel()?,
            message: fields.message()?,
            at: fields.at()?,
        },
        "ack_all" => Op::AckAll {
            user: fields.user()?,
        },
        "unread" => Op::Unread {
            user: fields.user()?,
            channel: fields.channel()?,
            message: fields.message()?,
        },
        "leave" => Op::Leave {
            user: fields.user()?,
            channel: fields.channel()?,
        },
        "set_channel" => Op::SetChannel {
            channel: fields.channel()?,
            parent: fields.optional_id("parent_id")?,
            group: fields.optional_id("group_id")?,
            at: fields.at()?,
        },
        "settings" => Op::Settings {
            user: fields.user()?,
            channel: fields.channel()?,
            muted_until: fields.muted_until()?,
            level: fields.level()?,
            at: fields.at()?,
        },
        "delete_user" => Op::DeleteUser {
            user: fields.user()?,
        },
        // `fields_of` accepted the name, so it is `delete_channel`.
        _ => Op::DeleteChannel {
            channel: fields.channel()?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id<T: ApiId>(raw: u64) -> T {
        T::from_u64(raw).expect("a valid id")
    }

    fn parse(value: Value) -> Result<Op, ServiceError> {
        parse_op(3, &value)
    }

    fn field_of(result: Result<Op, ServiceError>) -> (String, String) {
        match result {
            Err(ServiceError::Invalid { field, reason }) => (field, reason),
            other => panic!("expected an invalid-input error, got {other:?}"),
        }
    }

    #[test]
    fn every_op_kind_parses_with_ids_as_strings_or_numbers() {
        let cases = [
            (
                json!({"op": "message_created", "channel_id": "10", "message_id": 500, "author_id": 1, "mentions": ["2", 3]}),
                Op::MessageCreated {
                    channel: id(10),
                    message: id(500),
                    author: Some(id(1)),
                    mentions: vec![id(2), id(3)],
                },
            ),
            (
                json!({"op": "message_created", "channel_id": 10, "message_id": 500}),
                Op::MessageCreated {
                    channel: id(10),
                    message: id(500),
                    author: None,
                    mentions: vec![],
                },
            ),
            (
                json!({"op": "message_deleted", "channel_id": 10, "message_id": "7"}),
                Op::MessageDeleted {
                    channel: id(10),
                    message: id(7),
                },
            ),
            (
                json!({"op": "join", "user_id": 1, "channel_id": 2}),
                Op::Join {
                    user: id(1),
                    channel: id(2),
                    read: None,
                },
            ),
            (
                json!({"op": "join", "user_id": 1, "channel_id": 2, "last_read_message_id": "0"}),
                Op::Join {
                    user: id(1),
                    channel: id(2),
                    read: Some(0),
                },
            ),
            (
                json!({"op": "ack", "user_id": 1, "channel_id": 2, "message_id": 3, "at": 1700000000000_u64}),
                Op::Ack {
                    user: id(1),
                    channel: id(2),
                    message: id(3),
                    at: Some(1_700_000_000_000),
                },
            ),
            (
                json!({"op": "ack_all", "user_id": "1"}),
                Op::AckAll { user: id(1) },
            ),
            (
                json!({"op": "unread", "user_id": 1, "channel_id": 2, "message_id": 3}),
                Op::Unread {
                    user: id(1),
                    channel: id(2),
                    message: id(3),
                },
            ),
            (
                json!({"op": "leave", "user_id": 1, "channel_id": 2}),
                Op::Leave {
                    user: id(1),
                    channel: id(2),
                },
            ),
            (
                json!({"op": "delete_channel", "channel_id": 2, "user_id": null}),
                Op::DeleteChannel { channel: id(2) },
            ),
            (
                json!({"op": "set_channel", "channel_id": "20", "parent_id": 10, "group_id": "5", "at": 7}),
                Op::SetChannel {
                    channel: id(20),
                    parent: Some(id(10)),
                    group: Some(id(5)),
                    at: Some(7),
                },
            ),
            (
                json!({"op": "set_channel", "channel_id": 20, "parent_id": null}),
                Op::SetChannel {
                    channel: id(20),
                    parent: None,
                    group: None,
                    at: None,
                },
            ),
            (
                json!({"op": "settings", "user_id": 1, "channel_id": "2", "muted_until": 0, "level": "mentions", "at": 9}),
                Op::Settings {
                    user: id(1),
                    channel: id(2),
                    muted_until: Some(0),
                    level: Some(Level::Mentions),
                    at: Some(9),
                },
            ),
            (
                json!({"op": "delete_user", "user_id": "1", "muted_until": null}),
                Op::DeleteUser { user: id(1) },
            ),
        ];

        for (value, expected) in cases {
            assert_eq!(parse(value.clone()).expect("valid op"), expected, "{value}");
        }
    }

    #[test]
    fn the_documented_fields_of_each_op_are_the_ones_it_takes_and_needs() {
        for kind in OP_NAMES {
            let (required, optional) = op_fields(kind).expect("every op is documented");
            let mut documented: Vec<&str> = required.iter().chain(optional).copied().collect();
            let mut taken = fields_of(kind).expect("every op parses").to_vec();
            documented.sort_unstable();
            taken.sort_unstable();
            assert_eq!(documented, taken, "{kind}");
            // Without one of its required fields the op is refused naming it, and a
            // minimal op (required fields only) parses.
            let minimal: Map<String, Value> = std::iter::once(("op".to_owned(), json!(kind)))
                .chain(required.iter().map(|f| ((*f).to_owned(), json!("1"))))
                .collect();
            assert!(parse(Value::Object(minimal.clone())).is_ok(), "{kind}");
            for field in required {
                let mut without = minimal.clone();
                without.remove(*field);
                assert_eq!(
                    field_of(parse(Value::Object(without))),
                    (format!("ops[3].{field}"), "required".to_owned()),
                    "{kind}"
                );
            }
        }
    }

    #[test]
    fn muted_until_null_mutes_forever_while_absent_keeps_it() {
        let settings = |value: Value| match parse(value) {
            Ok(Op::Settings {
                muted_until, level, ..
            }) => (muted_until, level),
            other => panic!("expected settings, got {other:?}"),
        };

        assert_eq!(
            settings(json!({"op": "settings", "user_id": 1, "channel_id": 2, "muted_until": null})),
            (Some(crate::domain::MUTED_FOREVER), None)
        );
        assert_eq!(
            settings(json!({"op": "settings", "user_id": 1, "channel_id": 2, "level": null})),
            (None, None)
        );
        assert_eq!(
            settings(
                json!({"op": "settings", "user_id": 1, "channel_id": 2, "muted_until": 9223372036854775807_u64})
            ),
            (Some(crate::domain::MUTED_FOREVER), None)
        );
    }

    #[test]
    fn bad_settings_values_name_their_field() {
        for bad in [
            json!(-1),
            json!(1.5),
            json!("5"),
            json!(9223372036854775808_u64),
        ] {
            let (field, reason) = field_of(parse(
                json!({"op": "settings", "user_id": 1, "channel_id": 2, "muted_until": bad}),
            ));
            assert_eq!(field, "ops[3].muted_until", "{bad}");
            assert_eq!(reason, crate::api::dto::MUTED_UNTIL_REASON);
        }
        for bad in [json!("loud"), json!("All"), json!(1)] {
            let (field, reason) = field_of(parse(
                json!({"op": "settings", "user_id": 1, "channel_id": 2, "level": bad}),
            ));
            assert_eq!(field, "ops[3].level", "{bad}");
            assert_eq!(reason, crate::api::dto::LEVEL_REASON);
        }
        assert_eq!(
            field_of(parse(
                json!({"op": "set_channel", "channel_id": 2, "parent_id": 0})
            ))
            .0,
            "ops[3].parent_id"
        );
        assert_eq!(
            field_of(parse(
                json!({"op": "set_channel", "channel_id": 2, "group_id": "x"})
            ))
            .0,
            "ops[3].group_id"
        );
        // A settings field on another op is refused unless null.
        let (field, reason) = field_of(parse(
            json!({"op": "ack", "user_id": 1, "channel_id": 2, "message_id": 3, "level": "all"}),
        ));
        assert_eq!(field, "ops[3].level");
        assert_eq!(reason, "not allowed for op ack");
        assert!(
            parse(json!({"op": "ack", "user_id": 1, "channel_id": 2, "message_id": 3, "muted_until": null}))
                .is_ok()
        );
        // Events name the bare field.
        assert_eq!(
            field_of(parse_event(
                &json!({"type": "settings", "user_id": 1, "channel_id": 2, "muted_until": -5})
            ))
            .0,
            "muted_until"
        );
    }

    #[test]
    fn a_missing_id_names_the_field_with_the_op_index() {
        let (field, reason) = field_of(parse(json!({"op": "ack", "user_id": 1, "message_id": 3})));

        assert_eq!(field, "ops[3].channel_id");
        assert_eq!(reason, "required");
    }

    #[test]
    fn an_invalid_id_names_the_field_and_the_range() {
        let (field, reason) = field_of(parse(
            json!({"op": "leave", "user_id": "0", "channel_id": 2}),
        ));

        assert_eq!(field, "ops[3].user_id");
        assert_eq!(
            reason,
            "must be an integer between 1 and 9223372036854775807"
        );
    }

    #[test]
    fn unknown_or_missing_op_names_are_rejected() {
        assert_eq!(
            field_of(parse(json!({"op": "explode", "channel_id": 1}))).0,
            "ops[3].op"
        );
        assert_eq!(
            field_of(parse(json!({"channel_id": 1}))),
            ("ops[3].op".to_owned(), "required".to_owned())
        );
        assert_eq!(field_of(parse(json!({"op": 5}))).0, "ops[3].op");
    }

    #[test]
    fn unknown_fields_and_fields_of_other_ops_are_rejected() {
        let (field, reason) = field_of(parse(
            json!({"op": "leave", "user_id": 1, "channel_id": 2, "colour": "red"}),
        ));
        assert_eq!(field, "ops[3].colour");
        assert!(reason.starts_with("unknown field"), "{reason}");

        let (field, reason) = field_of(parse(
            json!({"op": "leave", "user_id": 1, "channel_id": 2, "message_id": 3}),
        ));
        assert_eq!(field, "ops[3].message_id");
        assert_eq!(reason, "not allowed for op leave");
    }

    #[test]
    fn an_op_wrapped_in_serde_jsons_raw_value_member_is_an_unknown_field() {
        // Found by fuzzing (fuzz/fuzz_targets/json_body.rs): `Value` reads this object
        // as the op in the string; read literally, the member is unknown.
        let token = "$serde_json::private::RawValue";
        let wrapped = format!(r#"{{"{token}": "{{\"op\": \"ack_all\", \"user_id\": 1}}"}}"#);
        assert_eq!(
            serde_json::from_str::<Value>(&wrapped).expect("JSON")["op"],
            "ack_all"
        );

        let batch: crate::api::dto::BatchRequest =
            serde_json::from_str(&format!(r#"{{"ops": [{wrapped}]}}"#)).expect("a batch");
        assert_eq!(batch.ops[0][token], r#"{"op": "ack_all", "user_id": 1}"#);
        assert_eq!(
            field_of(parse_op(0, &batch.ops[0])).0,
            format!("ops[0].{token}")
        );

        let event = value_from_slice(wrapped.replace("op", "type").as_bytes()).expect("JSON");
        assert_eq!(field_of(parse_event(&event)).0, token);
        // Anything else reads as `Value` reads it.
        let plain = br#"{"a": [1, -2, 0.5, "x", null, true, {}], "b": {"c": []}}"#;
        assert_eq!(
            value_from_slice(plain).ok(),
            serde_json::from_slice::<Value>(plain).ok()
        );
    }

    #[test]
    fn non_objects_bad_mentions_and_bad_timestamps_are_rejected() {
        assert_eq!(field_of(parse(json!([1, 2]))).0, "ops[3]");
        // How many mentions is the service's limit, not the parser's.
        assert!(
            parse(json!({"op": "message_created", "channel_id": 1, "message_id": 2, "mentions": [1, 2, 3]}))
                .is_ok()
        );
        assert_eq!(
            field_of(parse(json!({"op": "message_created", "channel_id": 1, "message_id": 2, "mentions": [1, "x"]}))).0,
            "ops[3].mentions[1]"
        );
        assert_eq!(
            field_of(parse(
                json!({"op": "message_created", "channel_id": 1, "message_id": 2, "mentions": "1"})
            ))
            .0,
            "ops[3].mentions"
        );
        assert_eq!(
            field_of(parse(
                json!({"op": "ack", "user_id": 1, "channel_id": 2, "message_id": 3, "at": -1})
            ))
            .0,
            "ops[3].at"
        );
        assert_eq!(
            field_of(parse(
                json!({"op": "join", "user_id": 1, "channel_id": 2, "last_read_message_id": -1})
            ))
            .0,
            "ops[3].last_read_message_id"
        );
    }
}
