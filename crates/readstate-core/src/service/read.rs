//! The queries: read states, summaries (overall, per group, of threads), readers,
//! a channel's metadata and a user's export.

use std::collections::HashMap;

use crate::config::Durability;
use crate::domain::{
    ChannelId, ChannelMeta, GroupId, GroupSummaries, MAX_PARENT_DEPTH, MessageId, ReadPos,
    ReadStateView, Settings, StateRef, Summary, UserId, derive, group_of,
};

use super::{DEFAULT_READERS_LIMIT, Service, ServiceError, now_ms};

/// A channel's metadata and head, as `GET /v1/channels/{id}` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelInfo {
    pub channel: u64,
    /// The thread's parent (0: none).
    pub parent: u64,
    /// The group set on the channel itself (0: none).
    pub group: u64,
    /// The newest non-deleted message (0: none).
    pub last_message_id: u64,
}

/// One read state as stored: everything the export of a user holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredState {
    pub channel: u64,
    pub read: ReadPos,
    pub mentions: Vec<u64>,
    pub settings: Settings,
}

/// Read states of threads under one channel: their summary, and one page of those
/// that are unread or mention the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Threads {
    pub summary: Summary,
    pub read_states: Vec<ReadStateView>,
    /// The cursor of the next page, when more may follow.
    pub next: Option<ChannelId>,
}

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
        let filter = self.channel_filter(channels)?;
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
                        settings: s.settings,
                    })
                    .collect()
            })
            .await?;
        Ok(self
            .views(states)
            .await?
            .into_iter()
            .map(|(view, _)| view)
            .collect())
    }

    /// The listed channels, sorted and deduplicated, after checking how many.
    fn channel_filter(
        &self,
        channels: Option<&[ChannelId]>,
    ) -> Result<Option<Vec<u64>>, ServiceError> {
        let Some(channels) = channels else {
            return Ok(None);
        };
        if channels.len() > self.limits.max_channels_filter {
            return Err(ServiceError::invalid(
                "channels",
                format!("at most {} channels", self.limits.max_channels_filter),
            ));
        }
        let mut v: Vec<u64> = channels.iter().map(|c| c.get()).collect();
        v.sort_unstable();
        v.dedup();
        Ok(Some(v))
    }

    /// The read states of `user`: all, those of the listed channels, those of the
    /// channels of `group` (own or inherited), or with both filters the listed
    /// channels that are in the group.
    ///
    /// # Errors
    /// Too many channels listed, or storage failures.
    pub async fn read_states_filtered(
        &self,
        user: UserId,
        channels: Option<&[ChannelId]>,
        group: Option<GroupId>,
    ) -> Result<Vec<ReadStateView>, ServiceError> {
        let Some(group) = group else {
            return self.read_states(user, channels).await;
        };
        let filter = self.channel_filter(channels)?;
        Ok(self
            .grouped_views(user)
            .await?
            .into_iter()
            .filter(|(view, g)| {
                *g == Some(group.get())
                    && filter
                        .as_ref()
                        .is_none_or(|f| f.binary_search(&view.channel_id).is_ok())
            })
            .map(|(view, _)| view)
            .collect())
    }

    /// The derived fields of `states` (sorted by channel) with each channel's
    /// metadata, in the same order.
    async fn views(
        &self,
        states: Vec<OwnedState>,
    ) -> Result<Vec<(ReadStateView, ChannelMeta)>, ServiceError> {
        let ids: Vec<u64> = states.iter().map(|s| s.channel).collect();
        let caps = self.caps;
        let now = now_ms();
        // `states` is sorted by channel (as the user's states are), so each lookup is a search.
        let mut views = self
            .with_channels(&ids, |c, window| {
                let at = states.partition_point(|s| s.channel < c);
                (
                    derive(states[at].as_ref(), window, caps, now),
                    window.meta(),
                )
            })
            .await?;
        Ok(ids.iter().filter_map(|c| views.remove(c)).collect())
    }

    /// Every read state of `user` with its channel's group (own or inherited).
    async fn grouped_views(
        &self,
        user: UserId,
    ) -> Result<Vec<(ReadStateView, Option<u64>)>, ServiceError> {
        let states = self.owned_states(user).await?;
        let views = self.views(states).await?;
        let mut metas: HashMap<u64, ChannelMeta> =
            views.iter().map(|(v, m)| (v.channel_id, *m)).collect();
        // Threads without a group of their own take their parents': load the metadata
        // up the chains, a level at a time.
        for _ in 0..MAX_PARENT_DEPTH {
            let mut missing: Vec<u64> = metas
                .values()
                .filter(|m| m.group == 0 && m.parent != 0 && !metas.contains_key(&m.parent))
                .map(|m| m.parent)
                .collect();
            if missing.is_empty() {
                break;
            }
            missing.sort_unstable();
            missing.dedup();
            metas.extend(self.with_channels(&missing, |_, w| w.meta()).await?);
        }
        let meta_of = |c: u64| metas.get(&c).copied().unwrap_or_default();
        Ok(views
            .into_iter()
            .map(|(view, _)| {
                let group = group_of(view.channel_id, meta_of);
                (view, group)
            })
            .collect())
    }

    async fn owned_states(&self, user: UserId) -> Result<Vec<OwnedState>, ServiceError> {
        self.with_user(user.get(), |states| {
            states
                .iter()
                .map(|s| OwnedState {
                    channel: s.channel,
                    read: s.read,
                    mentions: s.mentions.to_vec(),
                    settings: s.settings,
                })
                .collect()
        })
        .await
    }

    /// The read states of `user` in channels of `group` (own or inherited).
    ///
    /// # Errors
    /// Storage failures while loading.
    pub async fn read_states_in_group(
        &self,
        user: UserId,
        group: GroupId,
    ) -> Result<Vec<ReadStateView>, ServiceError> {
        self.read_states_filtered(user, None, Some(group)).await
    }

    /// The summary of `user` over the read states in `group`.
    ///
    /// # Errors
    /// Storage failures while loading.
    pub async fn group_summary(
        &self,
        user: UserId,
        group: GroupId,
    ) -> Result<Summary, ServiceError> {
        let mut summary = Summary::default();
        for view in self.read_states_in_group(user, group).await? {
            summary.add(&view);
        }
        Ok(summary)
    }

    /// A summary per group in which `user` has a read state (the guild list's
    /// badges in one call).
    ///
    /// # Errors
    /// Storage failures while loading.
    pub async fn groups(&self, user: UserId) -> Result<GroupSummaries, ServiceError> {
        let mut out = GroupSummaries::new();
        for (view, group) in self.grouped_views(user).await? {
            if let Some(group) = group {
                out.entry(group).or_default().add(&view);
            }
        }
        Ok(out)
    }

    /// `user`'s read states of threads under `channel`: the summary over all of
    /// them, and a page (channel ids after `after`, at most `limit`) of those that
    /// are unread or mention the user.
    ///
    /// # Errors
    /// A limit out of range, or storage failures.
    pub async fn threads(
        &self,
        user: UserId,
        channel: ChannelId,
        after: Option<ChannelId>,
        limit: Option<u32>,
    ) -> Result<Threads, ServiceError> {
        let limit = self.page_limit(limit)?;
        let states = self.owned_states(user).await?;
        let mut summary = Summary::default();
        let mut page = Vec::new();
        let mut next = None;
        for (view, meta) in self.views(states).await? {
            if meta.parent != channel.get() {
                continue;
            }
            summary.add(&view);
            if !(view.has_unread || view.mention_count > 0)
                || after.is_some_and(|a| view.channel_id <= a.get())
            {
                continue;
            }
            if page.len() == limit as usize {
                next = page
                    .last()
                    .and_then(|v: &ReadStateView| ChannelId::new(v.channel_id).ok());
            } else {
                page.push(view);
            }
        }
        Ok(Threads {
            summary,
            read_states: page,
            next,
        })
    }

    /// A channel's metadata and head.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] for a channel the service has never seen (no
    /// message, no metadata).
    pub async fn channel(&self, channel: ChannelId) -> Result<ChannelInfo, ServiceError> {
        self.channel_info(channel, true)
            .await?
            .ok_or(ServiceError::NotFound { what: "channel" })
    }

    /// The channel after a write of its metadata: what [`Self::channel`] answers,
    /// except that a channel the service still does not know is answered as an
    /// empty one rather than not found. (A write of empty metadata stamped 0 stores
    /// nothing: it is what an unseen channel already has.)
    ///
    /// # Errors
    /// The storage errors of loading the channel.
    pub async fn channel_after_write(
        &self,
        channel: ChannelId,
    ) -> Result<ChannelInfo, ServiceError> {
        Ok(self
            .channel_info(channel, false)
            .await?
            .unwrap_or(ChannelInfo {
                channel: channel.get(),
                parent: 0,
                group: 0,
                last_message_id: 0,
            }))
    }

    async fn channel_info(
        &self,
        channel: ChannelId,
        known_only: bool,
    ) -> Result<Option<ChannelInfo>, ServiceError> {
        let c = channel.get();
        Ok(self
            .with_channels(&[c], |_, w| {
                (w.is_known() || !known_only).then(|| {
                    let meta = w.meta();
                    ChannelInfo {
                        channel: c,
                        parent: meta.parent,
                        group: meta.group,
                        last_message_id: w.head(),
                    }
                })
            })
            .await?
            .remove(&c)
            .flatten())
    }

    /// Everything stored about `user`: each read state's position with its unread
    /// epoch, its mention ids and its settings.
    ///
    /// # Errors
    /// Storage failures while loading.
    pub async fn export(&self, user: UserId) -> Result<Vec<StoredState>, ServiceError> {
        Ok(self
            .owned_states(user)
            .await?
            .into_iter()
            .map(|s| StoredState {
                channel: s.channel,
                read: s.read,
                mentions: s.mentions.iter().map(|(_, m)| *m).collect(),
                settings: s.settings,
            })
            .collect())
    }

    /// A page size: `limit`, or the default when `None`.
    fn page_limit(&self, limit: Option<u32>) -> Result<u32, ServiceError> {
        let max_page = self.limits.max_page;
        match limit {
            None => Ok(DEFAULT_READERS_LIMIT.min(max_page)),
            Some(limit) if (1..=max_page).contains(&limit) => Ok(limit),
            Some(_) => Err(ServiceError::invalid(
                "limit",
                format!("must be an integer between 1 and {max_page}"),
            )),
        }
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
        let limit = self.page_limit(limit)?;
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
    settings: Settings,
}

impl OwnedState {
    fn as_ref(&self) -> StateRef<'_> {
        StateRef {
            channel: self.channel,
            read: self.read,
            mentions: &self.mentions,
            settings: self.settings,
        }
    }
}
