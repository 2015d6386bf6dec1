//! The change feed between nodes: the notifications a commit sends (naming every
//! user and channel it wrote) and [`PgFeed`], the listener other nodes read them
//! with.

use std::collections::BTreeSet;

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPool};

use super::{CHANGES_CHANNEL, MAX_PAYLOAD_BYTES};
use crate::store::{ChangeFeed, Changes, StoreError, Write};

/// Users and channels whose stored state `writes` change. A deleted channel names the
/// channel only: other nodes drop its readers' states when they see it.
pub(super) fn touched(writes: &[Write]) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let mut users = BTreeSet::new();
    let mut channels = BTreeSet::new();
    for w in writes {
        match *w {
            Write::ReadPos { user, .. }
            | Write::Mention { user, .. }
            | Write::Leave { user, .. }
            | Write::Settings { user, .. }
            | Write::DeleteUser { user } => {
                users.insert(user);
            }
            Write::Message { channel, .. }
            | Write::DeleteChannel { channel }
            | Write::ChannelMeta { channel, .. } => {
                channels.insert(channel);
            }
        }
    }
    (users, channels)
}

/// The JSON payloads `{"node":N,"u":[users],"c":[channels]}` naming every listed id,
/// each shorter than [`MAX_PAYLOAD_BYTES`]. None when there is nothing to name.
pub(super) fn notify_payloads(
    node: u64,
    users: &BTreeSet<u64>,
    channels: &BTreeSet<u64>,
) -> Vec<String> {
    fn finish(node: u64, users: &[u64], channels: &[u64]) -> String {
        let list = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        format!(
            "{{\"node\":{node},\"u\":[{}],\"c\":[{}]}}",
            list(users),
            list(channels)
        )
    }
    let base = finish(node, &[], &[]).len();
    let mut out = Vec::new();
    let (mut u, mut c) = (Vec::new(), Vec::new());
    let mut len = base;
    let ids = users
        .iter()
        .map(|&v| (true, v))
        .chain(channels.iter().map(|&v| (false, v)));
    for (is_user, v) in ids {
        // Digits plus a separating comma (one too many per list: a safe overcount).
        let cost = v.to_string().len() + 1;
        if len + cost >= MAX_PAYLOAD_BYTES && !(u.is_empty() && c.is_empty()) {
            out.push(finish(node, &u, &c));
            u.clear();
            c.clear();
            len = base;
        }
        if is_user { &mut u } else { &mut c }.push(v);
        len += cost;
    }
    if !(u.is_empty() && c.is_empty()) {
        out.push(finish(node, &u, &c));
    }
    out
}

/// A change notification as sent by [`commit_sql`].
#[derive(Debug, PartialEq, Eq, serde::Deserialize)]
struct Payload {
    node: u64,
    #[serde(default)]
    u: Vec<u64>,
    #[serde(default)]
    c: Vec<u64>,
    /// Deleted channels (one notification each; deletes are rare): other nodes drop
    /// every cached read state in them.
    #[serde(default)]
    d: Vec<u64>,
}

fn parse_payload(text: &str) -> Result<Payload, serde_json::Error> {
    serde_json::from_str(text)
}

/// [`ChangeFeed`] over `LISTEN readstate_changes` on a connection of its own.
pub(super) struct PgFeed {
    /// A one-connection pool the listener (re)connects through.
    pub(super) pool: PgPool,
    /// `None` after an error: rebuilt (and a resync reported) on the next call.
    pub(super) listener: Option<PgListener>,
    pub(super) node_id: u64,
}

impl PgFeed {
    pub(super) async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        Ok(listener)
    }
}

#[async_trait]
impl ChangeFeed for PgFeed {
    async fn next(&mut self) -> Result<Changes, StoreError> {
        let listener = match &mut self.listener {
            Some(listener) => listener,
            None => {
                // Whatever was notified while we were not listening is lost.
                self.listener = Some(Self::listen(&self.pool).await?);
                return Ok(Changes {
                    resync: true,
                    ..Changes::default()
                });
            }
        };
        loop {
            match listener.try_recv().await {
                Ok(Some(note)) => match parse_payload(note.payload()) {
                    Ok(p) if p.node == self.node_id => {}
                    Ok(p) => {
                        return Ok(Changes {
                            users: p.u,
                            channels: p.c,
                            deleted_channels: p.d,
                            resync: false,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, payload = note.payload(), "ignoring an unparseable change notification");
                    }
                },
                // The connection was lost and is listening again: notifications sent in
                // between were missed.
                Ok(None) => {
                    return Ok(Changes {
                        resync: true,
                        ..Changes::default()
                    });
                }
                Err(e) => {
                    // The listener may hold a dead connection it will not replace on
                    // its own; start over with a fresh one on the next call.
                    self.listener = None;
                    return Err(e.into());
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::postgres::sql::tests::{msg, read};

    #[test]
    fn notify_payloads_stay_under_the_limit_and_name_every_id() {
        let users: BTreeSet<u64> = (0..3000).map(|i| (1 << 62) + i * 7919).collect();
        let channels: BTreeSet<u64> = (1..2000).map(|i| i * 1_000_003).collect();
        let node = u64::MAX;
        let payloads = notify_payloads(node, &users, &channels);
        assert!(payloads.len() > 5, "{}", payloads.len());
        let (mut seen_u, mut seen_c) = (BTreeSet::new(), BTreeSet::new());
        for p in &payloads {
            assert!(p.len() < MAX_PAYLOAD_BYTES, "{} bytes", p.len());
            assert!(!p.contains('\''), "{p}");
            let parsed = parse_payload(p).unwrap();
            assert_eq!(parsed.node, node);
            seen_u.extend(parsed.u);
            seen_c.extend(parsed.c);
        }
        assert_eq!(seen_u, users);
        assert_eq!(seen_c, channels);
        assert!(notify_payloads(1, &BTreeSet::new(), &BTreeSet::new()).is_empty());
    }

    #[test]
    fn payloads_parse_and_garbage_does_not() {
        assert_eq!(
            parse_payload(r#"{"node":7,"u":[1,2],"c":[3]}"#).unwrap(),
            Payload {
                node: 7,
                u: vec![1, 2],
                c: vec![3],
                d: vec![]
            }
        );
        assert_eq!(
            parse_payload(r#"{"node":7,"d":[9]}"#).unwrap().d,
            vec![9],
            "a deleted channel travels in its own payload"
        );
        assert_eq!(
            parse_payload(r#"{"node":7,"c":[3]}"#).unwrap().u,
            Vec::<u64>::new()
        );
        assert!(parse_payload("").is_err());
        assert!(parse_payload("hello").is_err());
        assert!(parse_payload(r#"{"u":[1]}"#).is_err(), "node is required");
        assert!(parse_payload(r#"{"node":1,"u":[-1]}"#).is_err());
    }

    #[test]
    fn touched_names_users_and_channels_of_every_write_kind() {
        let writes = [
            read(1, 10, 1),
            Write::Mention {
                user: 2,
                channel: 11,
                message: 1,
            },
            msg(12, 1, false),
            Write::Leave {
                user: 3,
                channel: 13,
            },
            Write::DeleteChannel { channel: 14 },
        ];
        let (users, channels) = touched(&writes);
        assert_eq!(users.into_iter().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(channels.into_iter().collect::<Vec<_>>(), [12, 14]);
    }

    #[test]
    fn touched_names_the_user_of_settings_and_deleted_users_and_the_channel_of_metadata() {
        use crate::domain::{ChannelMeta, Settings};
        let writes = [
            Write::Settings {
                user: 4,
                channel: 20,
                settings: Settings::written(Some(1), None, 1),
            },
            Write::DeleteUser { user: 5 },
            Write::ChannelMeta {
                channel: 21,
                meta: ChannelMeta {
                    parent: 22,
                    group: 23,
                    at: 1,
                },
            },
        ];
        let (users, channels) = touched(&writes);
        assert_eq!(users.into_iter().collect::<Vec<_>>(), [4, 5]);
        assert_eq!(channels.into_iter().collect::<Vec<_>>(), [21]);
        let sql = super::super::sql::commit_sql(&writes, 10, 4, 3);
        assert!(sql.contains(r#"'{"node":3,"u":[4,5],"c":[21]}'"#), "{sql}");
        assert!(
            !sql.contains(r#""d":"#),
            "a deleted user is no deleted channel: {sql}"
        );
    }
}
