//! The JSON of change events, shared by the SSE/WebSocket streams and the NATS
//! change publisher. Typed structs, so keys come out in the documented order
//! (`type`, `user_id`, `channel_id`, `read_state`), like every HTTP answer.

use serde::Serialize;

use crate::api::dto::ReadStateBody;
use crate::domain::{ChannelId, UserId};
use crate::live::Kind;
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

/// The JSON of one change: its kind, ids and the read state as it is now (null
/// when gone).
///
/// # Errors
/// The state could not be read (storage down).
pub async fn change_body(
    service: &Service,
    user: u64,
    channel: u64,
    kind: Kind,
) -> Result<ChangeBody, ServiceError> {
    let state = match (UserId::new(user), ChannelId::new(channel)) {
        (Ok(u), Ok(c)) => match service.read_state(u, c).await {
            Ok(view) => Some(ReadStateBody::from(view)),
            Err(ServiceError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        },
        _ => None,
    };
    Ok(ChangeBody {
        kind: kind.as_str(),
        user_id: user.to_string(),
        channel_id: channel.to_string(),
        read_state: state,
    })
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
