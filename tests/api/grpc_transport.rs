//! The API suites over gRPC: with `READSTATE_TEST_TRANSPORT=grpc`, `TestApp`'s
//! typed methods (`ack`, `batch`, `read_states`, ...) make the same call through
//! `readstate.v1.ReadStates` and give the answer back as the HTTP API would have
//! written it (status, problem body, `Retry-After`, JSON with ids as strings), so
//! every assertion of the suites checks the gRPC transport too.
//!
//! Inputs that protobuf cannot carry as they are (text where an id goes, a missing
//! id, an unknown field or op, a non-numeric page size) stay on HTTP: they test the
//! HTTP parser, which gRPC does not have.

use readstate::grpc::pb;
use readstate::grpc::pb::read_states_client::ReadStatesClient;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::{Map, Value, json};
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::helpers::Reply;

/// Whether the suites run over gRPC (`READSTATE_TEST_TRANSPORT=grpc`).
pub fn enabled() -> bool {
    match std::env::var("READSTATE_TEST_TRANSPORT").as_deref() {
        Ok("grpc") => true,
        Ok("http") | Err(_) => false,
        Ok(other) => panic!("READSTATE_TEST_TRANSPORT={other}: expected http or grpc"),
    }
}

/// A gRPC client of one app.
#[derive(Clone)]
pub struct Grpc {
    client: ReadStatesClient<Channel>,
}

type Answer<T> = Result<tonic::Response<T>, tonic::Status>;

fn json_reply(status: StatusCode, body: Value) -> Reply {
    let mut headers = HeaderMap::new();
    if !body.is_null() {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    (status, headers, body)
}

/// The HTTP answer the problem table gives for a gRPC status.
fn problem_reply(status: &tonic::Status) -> Reply {
    let (http, slug, title) = match status.code() {
        tonic::Code::InvalidArgument => (400, "invalid-input", "Invalid input"),
        tonic::Code::Unauthenticated => (401, "unauthorized", "Unauthorized"),
        tonic::Code::PermissionDenied => (403, "forbidden", "Forbidden"),
        tonic::Code::NotFound => (404, "not-found", "Not found"),
        tonic::Code::ResourceExhausted => (503, "overloaded", "Overloaded"),
        tonic::Code::Unavailable => (503, "unavailable", "Service unavailable"),
        tonic::Code::DeadlineExceeded => (503, "timeout", "Request timed out"),
        tonic::Code::Internal => (500, "internal", "Internal error"),
        other => panic!("a status outside the problem table: {other:?} {status:?}"),
    };
    let mut body = json!({
        "type": format!("https://readstate.dev/problems/{slug}"),
        "title": title,
        "status": http,
        "detail": status.message(),
    });
    if let Some(bad) = status.get_details_bad_request() {
        let fields: Vec<String> = bad.field_violations.into_iter().map(|v| v.field).collect();
        assert_eq!(
            fields.len(),
            1,
            "one field per invalid-input status: {status:?}"
        );
        body["field"] = json!(fields[0]);
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let Some(retry) = status.get_details_retry_info() {
        let secs = retry.retry_delay.expect("a retry delay").as_secs();
        headers.insert(
            "retry-after",
            HeaderValue::from_str(&secs.to_string()).expect("digits"),
        );
    }
    (
        StatusCode::from_u16(http).expect("a status code"),
        headers,
        body,
    )
}

fn reply<T>(answer: Answer<T>, ok: impl FnOnce(T) -> Reply) -> Reply {
    match answer {
        Ok(response) => ok(response.into_inner()),
        Err(status) => problem_reply(&status),
    }
}

fn done(_: pb::WriteReply) -> Reply {
    json_reply(StatusCode::NO_CONTENT, Value::Null)
}

/// A read state as the JSON API writes it.
pub fn state_json(s: &pb::ReadState) -> Value {
    json!({
        "channel_id": s.channel_id.to_string(),
        "last_read_message_id": s.last_read_message_id.to_string(),
        "last_message_id": s.last_message_id.to_string(),
        "has_unread": s.has_unread,
        "unread_count": s.unread_count,
        "unread_capped": s.unread_capped,
        "mention_count": s.mention_count,
        "mention_capped": s.mention_capped,
        "first_unread_message_id": s.first_unread_message_id.map(|m| m.to_string()),
        "muted": s.muted,
        "level": s.level,
    })
}

/// A summary as the JSON API writes it.
pub fn summary_json(s: &pb::Summary) -> Value {
    json!({
        "unread_channels": s.unread_channels,
        "unread_threads": s.unread_threads,
        "mentions": s.mentions,
    })
}

fn state_reply(s: pb::ReadState) -> Reply {
    json_reply(StatusCode::OK, state_json(&s))
}

fn states_reply(s: pb::ReadStatesReply) -> Reply {
    let states: Vec<Value> = s.read_states.iter().map(state_json).collect();
    json_reply(StatusCode::OK, json!({ "read_states": states }))
}

fn problem_json(p: &pb::Problem) -> Value {
    let mut body = json!({
        "type": p.r#type,
        "title": p.title,
        "status": p.status,
        "detail": p.detail,
    });
    if let Some(field) = &p.field {
        body["field"] = json!(field);
    }
    body
}

fn batch_reply(r: pb::BatchReply) -> Reply {
    let results: Vec<Value> = r
        .results
        .iter()
        .map(|r| match &r.error {
            None => json!({ "ok": r.ok }),
            Some(p) => json!({ "ok": r.ok, "error": problem_json(p) }),
        })
        .collect();
    json_reply(StatusCode::OK, json!({ "results": results }))
}

// JSON inputs that protobuf carries as they are.

/// An id given as a decimal string or a JSON number, as a u64 (any u64: range
/// errors are the server's to find).
fn id(value: &Value) -> Option<u64> {
    match value {
        // Only the one spelling protobuf can carry: `"007"` stays on HTTP.
        Value::String(s) if readstate::domain::is_canonical_decimal(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn ids(value: &Value) -> Option<Vec<u64>> {
    value.as_array()?.iter().map(id).collect()
}

/// The object's fields, when every key is one of `allowed`.
fn fields<'a>(value: &'a Value, allowed: &[&str]) -> Option<&'a Map<String, Value>> {
    let map = value.as_object()?;
    map.keys()
        .all(|k| allowed.contains(&k.as_str()))
        .then_some(map)
}

/// A required id: present, not null, representable.
fn required(map: &Map<String, Value>, key: &str) -> Option<u64> {
    id(map.get(key)?)
}

/// An optional id: absent or null is `Some(None)`; anything else must be an id.
fn optional(map: &Map<String, Value>, key: &str) -> Option<Option<u64>> {
    match map.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(v) => id(v).map(Some),
    }
}

/// An optional `at` stamp: absent or null is `Some(None)`; else a u64.
fn stamp(map: &Map<String, Value>) -> Option<Option<u64>> {
    match map.get("at") {
        None | Some(Value::Null) => Some(None),
        Some(v) => v.as_u64().map(Some),
    }
}

/// `muted_until`: absent keeps (`Some(None)`), null is "until unmuted" (2^63-1 in
/// protobuf), else a u64 (a negative one stays on HTTP).
fn muted_until(map: &Map<String, Value>) -> Option<Option<u64>> {
    match map.get("muted_until") {
        None => Some(None),
        Some(Value::Null) => Some(Some(readstate::domain::MUTED_FOREVER)),
        Some(v) => v.as_u64().map(Some),
    }
}

fn batch_op(value: &Value) -> Option<pb::Op> {
    use pb::op::Op as Kind;
    let kind = value.get("op")?.as_str()?;
    let op = match kind {
        "message_created" => {
            let m = fields(
                value,
                &["op", "channel_id", "message_id", "author_id", "mentions"],
            )?;
            Kind::MessageCreated(pb::MessageCreatedRequest {
                channel_id: required(m, "channel_id")?,
                message_id: required(m, "message_id")?,
                author_id: optional(m, "author_id")?,
                mentions: match m.get("mentions") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(v) => ids(v)?,
                },
            })
        }
        "message_deleted" => {
            let m = fields(value, &["op", "channel_id", "message_id"])?;
            Kind::MessageDeleted(pb::MessageDeletedRequest {
                channel_id: required(m, "channel_id")?,
                message_id: required(m, "message_id")?,
            })
        }
        "join" => {
            let m = fields(
                value,
                &["op", "user_id", "channel_id", "last_read_message_id"],
            )?;
            Kind::Join(pb::JoinRequest {
                user_id: required(m, "user_id")?,
                channel_id: required(m, "channel_id")?,
                last_read_message_id: optional(m, "last_read_message_id")?,
            })
        }
        "ack" => {
            let m = fields(value, &["op", "user_id", "channel_id", "message_id", "at"])?;
            Kind::Ack(pb::AckRequest {
                user_id: required(m, "user_id")?,
                channel_id: required(m, "channel_id")?,
                message_id: required(m, "message_id")?,
                at: stamp(m)?,
            })
        }
        "ack_all" => {
            let m = fields(value, &["op", "user_id"])?;
            Kind::AckAll(pb::AckAllRequest {
                user_id: required(m, "user_id")?,
            })
        }
        "unread" => {
            let m = fields(value, &["op", "user_id", "channel_id", "message_id"])?;
            Kind::Unread(pb::MarkUnreadRequest {
                user_id: required(m, "user_id")?,
                channel_id: required(m, "channel_id")?,
                message_id: required(m, "message_id")?,
            })
        }
        "leave" => {
            let m = fields(value, &["op", "user_id", "channel_id"])?;
            Kind::Leave(pb::LeaveRequest {
                user_id: required(m, "user_id")?,
                channel_id: required(m, "channel_id")?,
            })
        }
        "delete_channel" => {
            let m = fields(value, &["op", "channel_id"])?;
            Kind::DeleteChannel(pb::DeleteChannelRequest {
                channel_id: required(m, "channel_id")?,
            })
        }
        "set_channel" => {
            let m = fields(value, &["op", "channel_id", "parent_id", "group_id", "at"])?;
            Kind::SetChannel(pb::SetChannelRequest {
                channel_id: required(m, "channel_id")?,
                parent_id: optional(m, "parent_id")?,
                group_id: optional(m, "group_id")?,
                at: stamp(m)?,
            })
        }
        "settings" => {
            let m = fields(
                value,
                &["op", "user_id", "channel_id", "muted_until", "level", "at"],
            )?;
            Kind::Settings(pb::UpdateSettingsRequest {
                user_id: required(m, "user_id")?,
                channel_id: required(m, "channel_id")?,
                muted_until: muted_until(m)?,
                level: match m.get("level") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(v.as_str()?.to_owned()),
                },
                at: stamp(m)?,
            })
        }
        "delete_user" => {
            let m = fields(value, &["op", "user_id"])?;
            Kind::DeleteUser(pb::DeleteUserRequest {
                user_id: required(m, "user_id")?,
            })
        }
        _ => return None,
    };
    Some(pb::Op { op: Some(op) })
}

/// `key=value` pairs of a query string, when every key is one of `allowed` and none
/// repeats.
fn query_pairs<'a>(query: &'a str, allowed: &[&str]) -> Option<Vec<(&'a str, &'a str)>> {
    if query.is_empty() {
        return Some(Vec::new());
    }
    let pairs: Vec<(&str, &str)> = query
        .split('&')
        .map(|p| p.split_once('='))
        .collect::<Option<_>>()?;
    let mut keys: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
    keys.sort_unstable();
    keys.dedup();
    (keys.len() == pairs.len() && keys.iter().all(|k| allowed.contains(k))).then_some(pairs)
}

fn number(text: &str) -> Option<u64> {
    id(&Value::String(text.to_owned()))
}

impl Grpc {
    /// A client of the gRPC server at `addr` (connected on first use).
    pub fn new(addr: std::net::SocketAddr) -> Self {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("a valid URI")
            .connect_lazy();
        Self {
            client: ReadStatesClient::new(channel),
        }
    }

    /// The generated client, for the gRPC-only tests.
    pub fn client(&self) -> ReadStatesClient<Channel> {
        self.client.clone()
    }

    pub async fn message(
        &self,
        channel: u64,
        message: u64,
        author: Option<u64>,
        mentions: &[u64],
    ) -> Reply {
        let request = pb::MessageCreatedRequest {
            channel_id: channel,
            message_id: message,
            author_id: author,
            mentions: mentions.to_vec(),
        };
        reply(self.client().message_created(request).await, done)
    }

    pub async fn delete_message(&self, channel: u64, message: u64) -> Reply {
        let request = pb::MessageDeletedRequest {
            channel_id: channel,
            message_id: message,
        };
        reply(self.client().message_deleted(request).await, done)
    }

    pub async fn delete_channel(&self, channel: u64) -> Reply {
        let request = pb::DeleteChannelRequest {
            channel_id: channel,
        };
        reply(self.client().delete_channel(request).await, done)
    }

    /// `None` when the query has something protobuf cannot carry.
    pub async fn readers(&self, channel: u64, message: u64, query: &str) -> Option<Reply> {
        let mut request = pb::ReadersRequest {
            channel_id: channel,
            message_id: message,
            after: None,
            limit: None,
        };
        for (key, value) in query_pairs(query, &["after", "limit"])? {
            match key {
                "after" => request.after = Some(number(value)?),
                _ => request.limit = Some(u32::try_from(number(value)?).ok()?),
            }
        }
        Some(reply(self.client().readers(request).await, |r| {
            json_reply(
                StatusCode::OK,
                json!({
                    "readers": r.readers.iter().map(u64::to_string).collect::<Vec<_>>(),
                    "next": r.next.map(|n| n.to_string()),
                }),
            )
        }))
    }

    /// `None` when the body has something protobuf cannot carry.
    pub async fn join(&self, user: u64, channel: u64, body: Option<&Value>) -> Option<Reply> {
        let last_read_message_id = match body {
            None => None,
            Some(body) => optional(
                fields(body, &["last_read_message_id"])?,
                "last_read_message_id",
            )?,
        };
        let request = pb::JoinRequest {
            user_id: user,
            channel_id: channel,
            last_read_message_id,
        };
        Some(reply(self.client().join(request).await, state_reply))
    }

    pub async fn leave(&self, user: u64, channel: u64) -> Reply {
        let request = pb::LeaveRequest {
            user_id: user,
            channel_id: channel,
        };
        reply(self.client().leave(request).await, done)
    }

    pub async fn read_state(&self, user: u64, channel: u64) -> Reply {
        let request = pb::GetReadStateRequest {
            user_id: user,
            channel_id: channel,
        };
        reply(self.client().get_read_state(request).await, state_reply)
    }

    pub async fn ack(&self, user: u64, channel: u64, message: u64) -> Reply {
        let request = pb::AckRequest {
            user_id: user,
            channel_id: channel,
            message_id: message,
            at: None,
        };
        reply(self.client().ack(request).await, state_reply)
    }

    pub async fn unread(&self, user: u64, channel: u64, message: u64) -> Reply {
        let request = pb::MarkUnreadRequest {
            user_id: user,
            channel_id: channel,
            message_id: message,
        };
        reply(self.client().mark_unread(request).await, state_reply)
    }

    /// `None` when the query has something protobuf cannot carry (an empty list
    /// too: protobuf's empty list means "all").
    pub async fn read_states(&self, user: u64, query: &str) -> Option<Reply> {
        let mut channels = Vec::new();
        let mut group_id = None;
        for (key, value) in query_pairs(query, &["channels", "group_id"])? {
            match key {
                "channels" => {
                    channels = value.split(',').map(number).collect::<Option<Vec<u64>>>()?;
                }
                _ => group_id = Some(number(value)?),
            }
        }
        let request = pb::GetReadStatesRequest {
            user_id: user,
            channels,
            group_id,
        };
        Some(reply(
            self.client().get_read_states(request).await,
            states_reply,
        ))
    }

    pub async fn summary(&self, user: u64) -> Reply {
        let request = pb::GetSummaryRequest {
            user_id: user,
            group_id: None,
        };
        reply(self.client().get_summary(request).await, |s| {
            json_reply(StatusCode::OK, summary_json(&s))
        })
    }

    pub async fn ack_all(&self, user: u64) -> Reply {
        let request = pb::AckAllRequest { user_id: user };
        reply(self.client().ack_all(request).await, states_reply)
    }

    /// `None` when the body has something protobuf cannot carry.
    pub async fn summaries(&self, body: &Value) -> Option<Reply> {
        let user_ids = ids(fields(body, &["user_ids"])?.get("user_ids")?)?;
        let request = pb::GetSummariesRequest { user_ids };
        Some(reply(self.client().get_summaries(request).await, |s| {
            let mut map = Map::new();
            for u in s.summaries {
                map.insert(
                    u.user_id.to_string(),
                    json!({
                        "unread_channels": u.unread_channels,
                        "unread_threads": u.unread_threads,
                        "mentions": u.mentions,
                    }),
                );
            }
            json_reply(StatusCode::OK, json!({ "summaries": map }))
        }))
    }

    /// `None` when the body has something protobuf cannot carry.
    pub async fn batch(&self, body: &Value) -> Option<Reply> {
        let ops = fields(body, &["ops"])?
            .get("ops")?
            .as_array()?
            .iter()
            .map(batch_op)
            .collect::<Option<Vec<_>>>()?;
        let request = pb::BatchRequest { ops };
        Some(reply(self.client().batch(request).await, batch_reply))
    }
}
