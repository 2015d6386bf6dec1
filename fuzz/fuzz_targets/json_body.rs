#![no_main]
//! Request bodies: `http::extract::parse_json` into each request DTO of `api::dto`.
//! The first byte picks the DTO, the rest is the body.
//!
//! Properties: an accepted body is one well-formed JSON object whose members are
//! exactly what the rules allow (known fields only, required ones present, ids
//! canonical and in range as strings or integers), and the typed result holds the
//! same values; a body the rules allow is accepted, and one that repeats a member
//! is rejected (a JSON `Value` would keep the last one; the oracle reads the member
//! names itself); every rejection is `invalid-input` naming a field, with a detail
//! reading `field: reason`; a document that is not an object is rejected naming
//! `body`. An object is an object: one wrapped in serde_json's raw-value member
//! (`{"$serde_json::private::RawValue": "..."}`) is not read as the text inside, in
//! a batch's ops either (the first campaign found that it was).

mod spec;

use libfuzzer_sys::fuzz_target;
use readstate::api::dto::{
    AckRequest, BatchRequest, CreateMessageRequest, JoinRequest, SetChannelRequest,
    SettingsRequest, SummariesRequest, UnreadRequest,
};
use readstate::api::problem::{Problem, ProblemKind};
use readstate::http::extract::parse_json;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    // `% 8` maps the seeds' selectors ('0'..='5') to the DTOs they always had.
    match selector % 8 {
        0 => check::<CreateMessageRequest, _>(body, create, |r| {
            (
                r.message_id.get().get(),
                r.author_id.map(|a| a.get().get()),
                r.mentions
                    .as_ref()
                    .map(|m| m.iter().map(|u| u.get().get()).collect::<Vec<_>>()),
            )
        }),
        1 => check::<JoinRequest, _>(body, join, |r| r.last_read_message_id.map(|p| p.0)),
        2 => check::<AckRequest, _>(body, ack, |r| (r.message_id.get().get(), r.at)),
        3 => check::<UnreadRequest, _>(body, unread, |r| r.message_id.get().get()),
        4 => check::<SummariesRequest, _>(body, summaries, |r| {
            r.user_ids.iter().map(|u| u.get().get()).collect::<Vec<_>>()
        }),
        5 => check::<BatchRequest, _>(body, batch, |r| r.ops.clone()),
        6 => check::<SetChannelRequest, _>(body, set_channel, |r| {
            (
                r.parent_id.map(|p| p.get().get()),
                r.group_id.map(|g| g.get().get()),
                r.at,
            )
        }),
        _ => check::<SettingsRequest, _>(body, settings, |r| {
            (r.muted_until, r.level.map(|l| l.as_str()), r.at)
        }),
    }
});

/// Parses `body` as `T` and compares with `rule`, the expected typed values of an
/// object (`None`: the rules reject it), through `project`.
fn check<T, P>(body: &[u8], rule: fn(&Map<String, Value>) -> Option<P>, project: fn(&T) -> P)
where
    T: DeserializeOwned,
    P: PartialEq + std::fmt::Debug,
{
    let parsed = parse_json::<T>(body);
    let value = spec::json(body);
    let expected = match &value {
        // A repeated member is rejected; `Value` would keep the last one.
        Some(Value::Object(map)) if !spec::repeats_a_member(body) => rule(map),
        _ => None,
    };
    match (&parsed, &expected) {
        (Ok(typed), Some(expected)) => assert_eq!(&project(typed), expected),
        (Ok(typed), None) => panic!(
            "accepted {:?} as {:?}, which the rules reject",
            String::from_utf8_lossy(body),
            project(typed)
        ),
        (Err(problem), Some(expected)) => panic!(
            "rejected {:?} ({problem:?}), which the rules accept as {expected:?}",
            String::from_utf8_lossy(body)
        ),
        (Err(problem), None) => {
            check_problem(problem);
            if let Some(value) = &value
                && !value.is_object()
            {
                assert_eq!(problem.field.as_deref(), Some("body"), "{problem:?}");
                assert_eq!(problem.detail, "body: must be a JSON object");
            }
        }
    }
}

fn check_problem(problem: &Problem) {
    assert_eq!(problem.kind, ProblemKind::InvalidInput, "{problem:?}");
    let Some(field) = problem.field.as_deref() else {
        panic!("a rejection names a field: {problem:?}");
    };
    // Empty only when it is the name of an unknown member (`{"": 1}`).
    assert!(
        !field.is_empty() || problem.detail.starts_with(": unknown field"),
        "a rejection names a field: {problem:?}"
    );
    assert!(
        problem.detail.starts_with(&format!("{field}: ")),
        "the detail reads `field: reason`: {problem:?}"
    );
}

/// The members of `map` are all in `allowed`.
fn only(map: &Map<String, Value>, allowed: &[&str]) -> Option<()> {
    map.keys()
        .all(|k| allowed.contains(&k.as_str()))
        .then_some(())
}

/// A required member: present and not null.
fn required<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.get(name).filter(|v| !v.is_null())
}

type Create = (u64, Option<u64>, Option<Vec<u64>>);

fn create(map: &Map<String, Value>) -> Option<Create> {
    only(map, &["message_id", "author_id", "mentions"])?;
    Some((
        spec::id_json(required(map, "message_id")?)?,
        spec::optional(map.get("author_id"), spec::id_json)?,
        spec::optional(map.get("mentions"), spec::id_array)?,
    ))
}

fn join(map: &Map<String, Value>) -> Option<Option<u64>> {
    only(map, &["last_read_message_id"])?;
    spec::optional(map.get("last_read_message_id"), spec::position_json)
}

fn ack(map: &Map<String, Value>) -> Option<(u64, Option<u64>)> {
    only(map, &["message_id", "at"])?;
    Some((
        spec::id_json(required(map, "message_id")?)?,
        spec::optional(map.get("at"), spec::at_json)?,
    ))
}

fn unread(map: &Map<String, Value>) -> Option<u64> {
    only(map, &["message_id"])?;
    spec::id_json(required(map, "message_id")?)
}

fn summaries(map: &Map<String, Value>) -> Option<Vec<u64>> {
    only(map, &["user_ids"])?;
    spec::id_array(required(map, "user_ids")?)
}

type SetChannel = (Option<u64>, Option<u64>, Option<u64>);

fn set_channel(map: &Map<String, Value>) -> Option<SetChannel> {
    only(map, &["parent_id", "group_id", "at"])?;
    Some((
        spec::optional(map.get("parent_id"), spec::id_json)?,
        spec::optional(map.get("group_id"), spec::id_json)?,
        spec::optional(map.get("at"), spec::at_json)?,
    ))
}

type Settings = (Option<u64>, Option<&'static str>, Option<u64>);

fn settings(map: &Map<String, Value>) -> Option<Settings> {
    only(map, &["muted_until", "level", "at"])?;
    Some((
        // Absent keeps it; null mutes until unmuted.
        match map.get("muted_until") {
            None => None,
            Some(v) => Some(spec::muted_until_json(v)?),
        },
        spec::level_json(map.get("level").unwrap_or(&Value::Null))?,
        spec::optional(map.get("at"), spec::at_json)?,
    ))
}

fn batch(map: &Map<String, Value>) -> Option<Vec<Value>> {
    only(map, &["ops"])?;
    match required(map, "ops")? {
        Value::Array(ops) => Some(ops.clone()),
        _ => None,
    }
}
