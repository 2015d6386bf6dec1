//! The JSON of change events, shared by the SSE/WebSocket streams and the NATS
//! change publisher. Typed structs, so keys come out in the documented order
//! (`type`, `user_id`, `channel_id`, `read_state`), like every HTTP answer.

use serde::Serialize;

use crate::api::dto::ReadStateBody;
use crate::domain::{ChannelId, ReadStateView, UserId};
use crate::live::{ALL_USERS, EventId, Item, Kind};
use crate::service::{Service, ServiceError};

/// One change: its kind, ids and the read state as it is now (`None` when gone).
#[derive(Debug, Clone, Serialize)]
pub struct ChangeBody {
    /// What changed (`ack`, `mention`, ...).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The user whose read state changed, as a decimal string.
    pub user_id: String,
    /// The channel, as a decimal string.
    pub channel_id: String,
    /// The read state when the event is sent; `null` once it is gone.
    pub read_state: Option<ReadStateBody>,
}

/// The data of `ready` and `resync` events.
#[derive(Debug, Clone, Serialize)]
pub struct UserBody {
    /// The subscribed user, as a decimal string.
    pub user_id: String,
}

/// What the change publisher sends when changes were dropped.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ResyncBody {
    /// Always `resync`.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl ResyncBody {
    /// `{"type":"resync"}`.
    pub const RESYNC: Self = Self { kind: "resync" };
}

/// One change as every transport reports it: its kind, the user and channel, and
/// the read state as it is now (`None` once it is gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: Kind,
    pub user: u64,
    pub channel: u64,
    pub state: Option<ReadStateView>,
}

impl From<Change> for ChangeBody {
    fn from(c: Change) -> Self {
        Self {
            kind: c.kind.as_str(),
            user_id: c.user.to_string(),
            channel_id: c.channel.to_string(),
            read_state: c.state.map(ReadStateBody::from),
        }
    }
}

/// A change of `user`'s read state in `channel`, with the state as it is now.
///
/// # Errors
/// The state could not be read (storage down).
pub async fn change(
    service: &Service,
    user: u64,
    channel: u64,
    kind: Kind,
) -> Result<Change, ServiceError> {
    let state = match (UserId::new(user), ChannelId::new(channel)) {
        (Ok(u), Ok(c)) => match service.read_state(u, c).await {
            Ok(view) => Some(view),
            Err(ServiceError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        },
        _ => None,
    };
    Ok(Change {
        kind,
        user,
        channel,
        state,
    })
}

/// One event of a user's live stream, as every transport sends it (SSE, WebSocket,
/// gRPC `Subscribe`): its id (the resume token) and what it says.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// The stream is open and nothing was missed.
    Ready { id: EventId },
    /// Changes were missed: refetch the read states; the stream goes on.
    Resync { id: EventId },
    /// A read state changed.
    Change { id: EventId, change: Change },
}

/// What subscription item `item` of `user`'s stream becomes, or `None` when it is
/// not for this client (a message deleted in a channel the user is not in). When
/// the state cannot be read (storage down) the client is told to resync, and
/// refetches once it can.
pub async fn live_event(service: &Service, user: u64, item: Item) -> Option<LiveEvent> {
    match item {
        Item::Ready { seq } => Some(LiveEvent::Ready {
            id: service.event_id(seq),
        }),
        Item::Resync { seq } => Some(LiveEvent::Resync {
            id: service.event_id(seq),
        }),
        Item::Change(event) => match self::change(service, user, event.channel, event.kind).await {
            Ok(change) if event.user == ALL_USERS && change.state.is_none() => None,
            Ok(change) => {
                crate::metrics::event_sent();
                Some(LiveEvent::Change {
                    id: service.event_id(event.seq),
                    change,
                })
            }
            Err(e) => {
                tracing::debug!(error = %e, "event stream: cannot read the state; resync");
                crate::metrics::event_resync();
                Some(LiveEvent::Resync {
                    id: service.event_id(event.seq),
                })
            }
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_out_in_the_documented_order() {
        let body = ChangeBody {
            kind: "ack",
            user_id: "2".into(),
            channel_id: "10".into(),
            read_state: None,
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"type":"ack","user_id":"2","channel_id":"10","read_state":null}"#
        );
        assert_eq!(
            serde_json::to_string(&ResyncBody::RESYNC).unwrap(),
            r#"{"type":"resync"}"#
        );
    }
}
