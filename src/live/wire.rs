//! The JSON of change events, shared by the SSE/WebSocket streams and the NATS
//! change publisher.

use serde_json::{Value, json};

use crate::domain::{ChannelId, UserId};
use crate::http::dto::ReadStateBody;
use crate::live::Kind;
use crate::service::{Service, ServiceError};

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
) -> Result<Value, ServiceError> {
    let state = match (UserId::new(user), ChannelId::new(channel)) {
        (Ok(u), Ok(c)) => match service.read_state(u, c).await {
            Ok(view) => Some(ReadStateBody::from(view)),
            Err(ServiceError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        },
        _ => None,
    };
    Ok(json!({
        "type": kind.as_str(),
        "user_id": user.to_string(),
        "channel_id": channel.to_string(),
        "read_state": state,
    }))
}
