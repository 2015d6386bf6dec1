//! The queries: read states, summaries, readers.

use crate::config::Durability;
use crate::domain::{
    ChannelId, MessageId, ReadPos, ReadStateView, StateRef, Summary, UserId, derive,
};

use super::{DEFAULT_READERS_LIMIT, Service, ServiceError};

impl Service {
    /// The read states of `user` (all, or those of the listed channels), with derived fields.
    ///
    /// # Errors
    /// Storage failures while loading.
    pub async fn read_states(
        &self,
        user: UserId,
        channels: Option<&[ChannelId]>,
    ) -> Result<Vec<ReadStateView>, ServiceError> {
        if let Some(channels) = channels
            && channels.len() > self.limits.max_channels_filter
        {
            return Err(ServiceError::invalid(
                "channels",
                format!("at most {} channels", self.limits.max_channels_filter),
            ));
        }
        let filter: Option<Vec<u64>> = channels.map(|cs| {
            let mut v: Vec<u64> = cs.iter().map(|c| c.get()).collect();
            v.sort_unstable();
            v.dedup();
            v
        });
        let states: Vec<OwnedState> = self
            .with_user(user.get(), |states| {
                states
                    .iter()
                    .filter(|s| {
                        filter
                            .as_ref()
                            .is_none_or(|f| f.binary_search(&s.channel).is_ok())
                    })
                    .map(|s| OwnedState {
                        channel: s.channel,
                        read: s.read,
                        mentions: s.mentions.to_vec(),
                    })
                    .collect()
            })
            .await?;
        let ids: Vec<u64> = states.iter().map(|s| s.channel).collect();
        let caps = self.caps;
        // `states` is sorted by channel (as the user's states are), so each lookup is a search.
        let mut views = self
            .with_channels(&ids, |c, window| {
                let at = states.partition_point(|s| s.channel < c);
                derive(states[at].as_ref(), window, caps)
            })
            .await?;
        Ok(ids.iter().filter_map(|c| views.remove(c)).collect())
    }

    /// One read state.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] when the user has no read state in the channel.
    pub async fn read_state(
        &self,
        user: UserId,
        channel: ChannelId,
    ) -> Result<ReadStateView, ServiceError> {
        self.read_states(user, Some(&[channel]))
            .await?
            .pop()
            .ok_or(ServiceError::NotFound { what: "read state" })
    }

    /// Unread channels and mention total of `user`.
    ///
    /// # Errors
    /// Storage failures while loading.
    pub async fn summary(&self, user: UserId) -> Result<Summary, ServiceError> {
        let mut summary = Summary::default();
        for view in self.read_states(user, None).await? {
            summary.add(&view);
        }
        Ok(summary)
    }

    /// Summaries of many users: one per distinct user, in the order asked.
    ///
    /// # Errors
    /// Too many users (counting repeats), or storage failures.
    pub async fn summaries(
        &self,
        users: &[UserId],
    ) -> Result<Vec<(UserId, Summary)>, ServiceError> {
        if users.len() > self.limits.max_summary_users {
            return Err(ServiceError::invalid(
                "user_ids",
                format!("at most {} users", self.limits.max_summary_users),
            ));
        }
        let mut seen = std::collections::HashSet::with_capacity(users.len());
        let mut out = Vec::with_capacity(users.len());
        for &user in users {
            if seen.insert(user) {
                out.push((user, self.summary(user).await?));
            }
        }
        Ok(out)
    }

    /// Read receipts: users whose read position in `channel` is at or past `message`,
    /// after the cursor `after`, at most `limit`; the next cursor when more may follow.
    ///
    /// # Errors
    /// A limit out of range, or storage failures.
    pub async fn readers(
        &self,
        channel: ChannelId,
        message: MessageId,
        after: Option<UserId>,
        limit: Option<u32>,
    ) -> Result<(Vec<UserId>, Option<UserId>), ServiceError> {
        let max_page = self.limits.max_page;
        let limit = match limit {
            None => DEFAULT_READERS_LIMIT.min(max_page),
            Some(limit) if (1..=max_page).contains(&limit) => limit,
            Some(_) => {
                return Err(ServiceError::invalid(
                    "limit",
                    format!("must be an integer between 1 and {max_page}"),
                ));
            }
        };
        // Receipts come from the database: in sync mode they show every acknowledged
        // write, so with the commit log the logged ones are checkpointed first.
        if self.committer.durability() == Durability::Sync
            && self.committer.database_lags()
            && self.committer.unflushed() > 0
        {
            self.committer.flush().await?;
        }
        let ids = self
            .store
            .readers(
                channel.get(),
                message.get(),
                after.map_or(0, UserId::get),
                limit,
            )
            .await?;
        let users: Vec<UserId> = ids
            .into_iter()
            .filter_map(|id| UserId::new(id).ok())
            .collect();
        let next = if users.len() == limit as usize {
            users.last().copied()
        } else {
            None
        };
        Ok((users, next))
    }
}

/// A read state with its mention ids, copied out of the cache.
struct OwnedState {
    channel: u64,
    read: ReadPos,
    mentions: Vec<(u64, u64)>,
}

impl OwnedState {
    fn as_ref(&self) -> StateRef<'_> {
        StateRef {
            channel: self.channel,
            read: self.read,
            mentions: &self.mentions,
        }
    }
}
