//! The write path: validate, reserve, load, apply under the shard lock, queue,
//! wait for the commit.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use crate::commit::{Entry, Key, Reserved};
use crate::config::Durability;
use crate::domain::{
    ChannelEffect, ChannelId, ChannelWindow, GroupId, Op, ParentError, UserChange, UserEffect,
    UserStates, apply_user_effect, channel_meta, check_parent, expand,
};
use crate::live::Kind;
use crate::store::{ACK_NOW, Write};

use super::load::thrashing;
use super::{Durable, MAX_ATTEMPTS, Service, ServiceError, now_ms};

impl Service {
    /// Checks an operation against the limits.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the offending field.
    pub fn validate(&self, op: &Op) -> Result<(), ServiceError> {
        match op {
            Op::MessageCreated { mentions, .. } if mentions.len() > self.limits.max_mentions => {
                Err(ServiceError::invalid(
                    "mentions",
                    format!("at most {} users", self.limits.max_mentions),
                ))
            }
            Op::SetChannel {
                channel,
                parent: Some(parent),
                ..
            } if parent == channel => Err(ServiceError::invalid(
                "parent_id",
                "must not be the channel itself",
            )),
            Op::Settings {
                muted_until: Some(until),
                ..
            } if *until > crate::domain::MUTED_FOREVER => Err(ServiceError::invalid(
                "muted_until",
                "must be a non-negative integer (ms since the Unix epoch) or null",
            )),
            Op::Settings { at: Some(at), .. }
            | Op::SetChannel { at: Some(at), .. }
            | Op::Ack { at: Some(at), .. }
                if *at > crate::domain::MAX_STAMP =>
            {
                Err(ServiceError::invalid(
                    "at",
                    "must be a non-negative integer (ms since the Unix epoch) below 2^63",
                ))
            }
            _ => Ok(()),
        }
    }

    /// Applies one write operation; in `sync` mode returns once it is durable.
    ///
    /// # Errors
    /// Invalid input, back pressure, or storage failure (the outcome is then unknown).
    pub async fn execute(&self, op: &Op) -> Result<(), ServiceError> {
        self.validate(op)?;
        // A full queue is found out before anything is applied.
        let barrier = self.reserve_barrier()?;
        self.apply(op).await?;
        self.wait_durable(barrier).await
    }

    /// Applies the ops of a batch in order, each with its own outcome, then waits
    /// once for all of them to be durable (`sync` mode). An op's invalid-input error
    /// names `ops[i].field`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] on `ops` when the batch has more than
    /// `max_batch_ops` ops (nothing is applied).
    pub async fn execute_batch(
        &self,
        ops: Vec<Result<Op, ServiceError>>,
    ) -> Result<Vec<Result<(), ServiceError>>, ServiceError> {
        self.execute_ops(0, ops).await
    }

    /// [`Service::execute_batch`] for ops numbered from `first` on (a stream of
    /// writes applied a group at a time): an invalid-input error names
    /// `ops[first + i].field`.
    ///
    /// # Errors
    /// As [`Service::execute_batch`].
    pub async fn execute_ops(
        &self,
        first: usize,
        ops: Vec<Result<Op, ServiceError>>,
    ) -> Result<Vec<Result<(), ServiceError>>, ServiceError> {
        if ops.len() > self.limits.max_batch_ops {
            return Err(ServiceError::invalid(
                "ops",
                format!("at most {} ops", self.limits.max_batch_ops),
            ));
        }
        let barrier = self.reserve_barrier()?;
        let mut results = self
            .apply_each(ops, |i| format!("ops[{}].", first + i))
            .await;
        if results.iter().any(Result::is_ok)
            && let Err(e) = self.wait_durable(barrier).await
        {
            let reason = e.to_string();
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(match &e {
                    ServiceError::Overloaded => ServiceError::Overloaded,
                    _ => ServiceError::Unavailable {
                        reason: "storage commit failed; the write may or may not have been applied",
                        source: None,
                    },
                });
            }
            tracing::debug!(%reason, "batch commit failed");
        }
        Ok(results)
    }

    /// Applies many write operations in order without waiting for storage, and returns
    /// a barrier that is answered once all of them are durable, whatever
    /// `storage.durability` says (event ingest acknowledges only what is on disk, and
    /// goes on applying the next batch meanwhile). Per-op results as in
    /// [`Service::execute_batch`].
    ///
    /// # Errors
    /// No barrier could be queued (the queue is full or the writer stopped): whether
    /// the ops will be durable is unknown.
    pub async fn apply_then_barrier(
        &self,
        ops: Vec<Result<Op, ServiceError>>,
    ) -> (Vec<Result<(), ServiceError>>, Result<Durable, ServiceError>) {
        // Room for the barrier first: with a full queue nothing is applied, and the
        // valid ops get the same error as the barrier (the ingest redelivers them).
        let reserved = match self.committer.reserve(1) {
            Ok(reserved) => reserved,
            Err(e) => {
                let results = ops
                    .into_iter()
                    .map(|op| op.and_then(|_| Err(ServiceError::from(e.clone()))))
                    .collect();
                return (results, Err(e.into()));
            }
        };
        let results = self.apply_each(ops, |_| String::new()).await;
        (results, self.durable(reserved))
    }

    /// Validates and applies each op in order (no wait for storage); one result each.
    /// A validation error's field is prefixed with `prefix(i)` for op `i`.
    async fn apply_each(
        &self,
        ops: Vec<Result<Op, ServiceError>>,
        prefix: impl Fn(usize) -> String,
    ) -> Vec<Result<(), ServiceError>> {
        let mut results = Vec::with_capacity(ops.len());
        for (i, op) in ops.into_iter().enumerate() {
            let named = |e: ServiceError| match e {
                ServiceError::Invalid { field, reason } => ServiceError::Invalid {
                    field: format!("{}{field}", prefix(i)),
                    reason,
                },
                e => e,
            };
            results.push(match op {
                // A parent cycle is found while applying: named like a validation error.
                Ok(op) => match self.validate(&op) {
                    Ok(()) => self.apply(&op).await.map_err(named),
                    Err(e) => Err(named(e)),
                },
                Err(e) => Err(e),
            });
        }
        results
    }

    /// In `sync` mode, room in the queue for the barrier a write waits on, reserved
    /// before the write applies anything (so a full queue answers 503 for a write
    /// that was not applied); nothing in `async` mode.
    fn reserve_barrier(&self) -> Result<Option<Reserved<'_>>, ServiceError> {
        if self.committer.durability() == Durability::Async {
            return Ok(None);
        }
        Ok(Some(self.committer.reserve(1)?))
    }

    /// Waits, in `sync` mode, until everything queued so far is durable.
    async fn wait_durable(&self, barrier: Option<Reserved<'_>>) -> Result<(), ServiceError> {
        match barrier {
            Some(reserved) => self.durable(reserved)?.wait().await,
            None => Ok(()),
        }
    }

    /// Spends `reserved` on a barrier behind every write queued so far.
    fn durable(&self, reserved: Reserved<'_>) -> Result<Durable, ServiceError> {
        Ok(Durable {
            barrier: reserved.into_barrier()?,
            timeout: self.commit_timeout,
        })
    }

    async fn apply(&self, op: &Op) -> Result<(), ServiceError> {
        let now = now_ms();
        match *op {
            Op::DeleteChannel { channel } => return self.delete_channel(channel.get()),
            Op::SetChannel {
                channel,
                parent,
                group,
                at,
            } => return self.set_channel(channel, parent, group, at, now).await,
            _ => {}
        }
        let (channel, users) = expand(op, now);
        let mut reserved = self
            .committer
            .reserve(usize::from(channel.is_some()) + users.len())?;
        if let Some(effect) = channel {
            self.apply_channel(effect, &mut reserved).await?;
        }
        for effect in users {
            self.apply_user(effect, &mut reserved, now).await?;
        }
        Ok(())
    }

    async fn apply_channel(
        &self,
        effect: ChannelEffect,
        reserved: &mut Reserved<'_>,
    ) -> Result<(), ServiceError> {
        let (channel, message, deleted) =
            (effect.channel.get(), effect.message.get(), effect.deleted);
        let window = self.caps.channel_window();
        for _ in 0..MAX_ATTEMPTS {
            // Cached: one lock. Missing: load it, then try again.
            let applied = {
                let mut shard = self.cache.lock(self.cache.channel_shard(channel));
                shard
                    .update_channel(channel, |w| w.observe(message, deleted, window))
                    .map(|changed| {
                        if changed {
                            if deleted {
                                self.hub.publish_channel(channel, Kind::MessageDeleted);
                            }
                            shard.channels.add_pending(channel);
                            reserved.send(Entry {
                                keys: vec![Key::Channel(channel)],
                                writes: vec![Write::Message {
                                    channel,
                                    message,
                                    deleted,
                                }],
                                reply: None,
                                ..Entry::default()
                            });
                        }
                    })
            };
            if applied.is_some() {
                return Ok(());
            }
            self.ensure_channels(&[channel]).await?;
        }
        Err(thrashing())
    }

    async fn apply_user(
        &self,
        effect: UserEffect,
        reserved: &mut Reserved<'_>,
        now: u64,
    ) -> Result<(), ServiceError> {
        let user = effect.user().get();
        // Heads of the channels the effect needs, read before taking the user's lock.
        let heads: HashMap<u64, u64> = match effect {
            UserEffect::Join {
                channel,
                read: None,
                ..
            }
            | UserEffect::Settings { channel, .. } => self.heads(&[channel.get()]).await?,
            UserEffect::AckAll { .. } => {
                let channels = self.user_channels(user).await?;
                self.heads(&channels).await?
            }
            _ => HashMap::new(),
        };
        let delete_user = matches!(effect, UserEffect::DeleteUser { .. });
        let mention_window = self.caps.mention_window();
        let shared = self.store.shared();
        let stamp = ack_stamp(&effect);
        for _ in 0..MAX_ATTEMPTS {
            // Cached: one lock. Missing: load it, then try again.
            let applied = {
                let mut shard = self.cache.lock(self.cache.user_shard(user));
                let head_of = |c: u64| heads.get(&c).copied().unwrap_or(0);
                shard
                    .update_user(user, |states| {
                        let changes =
                            apply_user_effect(states, &effect, head_of, now, mention_window);
                        let mut writes: Vec<Write> = if delete_user {
                            // One removal of everything stored, whatever the cached
                            // copy held (on a shared database it may lag).
                            vec![Write::DeleteUser { user }]
                        } else {
                            changes
                                .iter()
                                .map(|c| user_write(user, *c, stamp))
                                .collect()
                        };
                        if shared {
                            unchanged_acks(states, &effect, head_of, &mut writes);
                        }
                        (changes, writes)
                    })
                    .map(|(changes, writes)| {
                        for change in &changes {
                            self.hub
                                .publish(user, change.channel(), Kind::of(&effect, change));
                        }
                        if !writes.is_empty() {
                            shard.users.add_pending(user);
                            reserved.send(Entry {
                                keys: vec![Key::User(user)],
                                writes,
                                reply: None,
                                ..Entry::default()
                            });
                        }
                    })
            };
            if applied.is_some() {
                return Ok(());
            }
            self.ensure_user(user).await?;
        }
        Err(thrashing())
    }

    /// Sets a channel's metadata, after checking that its parent forms no cycle
    /// (walking the parent's chain, loading the channels on it).
    async fn set_channel(
        &self,
        channel: ChannelId,
        parent: Option<ChannelId>,
        group: Option<GroupId>,
        at: Option<u64>,
        now: u64,
    ) -> Result<(), ServiceError> {
        let meta = channel_meta(parent, group, at, now);
        let channel = channel.get();
        if meta.parent != 0 {
            let chain = self.parent_chain(meta.parent).await?;
            let parent_of = |c: u64| chain.iter().find(|(id, _)| *id == c).map_or(0, |(_, p)| *p);
            check_parent(channel, meta.parent, parent_of).map_err(|e| {
                ServiceError::invalid(
                    "parent_id",
                    match e {
                        ParentError::SelfParent => "must not be the channel itself".to_owned(),
                        ParentError::Cycle => {
                            "would form a cycle: the channel is an ancestor of this parent"
                                .to_owned()
                        }
                        ParentError::TooDeep => format!(
                            "the parent's chain of parents is deeper than {}",
                            crate::domain::MAX_PARENT_DEPTH
                        ),
                    },
                )
            })?;
        }
        let mut reserved = self.committer.reserve(1)?;
        for _ in 0..MAX_ATTEMPTS {
            let applied = {
                let mut shard = self.cache.lock(self.cache.channel_shard(channel));
                shard
                    .update_channel(channel, |w| w.merge_meta(&meta))
                    .map(|changed| {
                        if changed {
                            shard.channels.add_pending(channel);
                            reserved.send(Entry {
                                keys: vec![Key::Channel(channel)],
                                writes: vec![Write::ChannelMeta { channel, meta }],
                                reply: None,
                                ..Entry::default()
                            });
                        }
                    })
            };
            if applied.is_some() {
                return Ok(());
            }
            self.ensure_channels(&[channel]).await?;
        }
        Err(thrashing())
    }

    fn delete_channel(&self, channel: u64) -> Result<(), ServiceError> {
        let mut reserved = self.committer.reserve(1)?;
        let mut shards = self.cache.lock_all();
        // Loads that overlap this delete must not insert what storage held before it.
        self.delete_epoch.fetch_add(1, Ordering::SeqCst);
        self.committer.delete_started();
        let ci = self.cache.channel_shard(channel);
        shards[ci].channels.insert(channel, ChannelWindow::new());
        shards[ci].channels.add_pending(channel);
        let mut keys = vec![Key::Channel(channel)];
        let mut subscribed = self.hub.subscribed_users();
        subscribed.sort_unstable();
        for shard in shards.iter_mut() {
            for user in shard
                .users
                .update_all(|states| states.remove(channel).is_yes())
            {
                if subscribed.binary_search(&user).is_ok() {
                    self.hub.publish(user, channel, Kind::ChannelDeleted);
                }
                shard.users.add_pending(user);
                keys.push(Key::User(user));
            }
        }
        // A subscriber whose user is not cached may have had a state in the channel:
        // tell it too (a `channel_deleted` for a channel it was not in is harmless).
        for &user in &subscribed {
            if shards[self.cache.user_shard(user)]
                .users
                .get(user)
                .is_none()
            {
                self.hub.publish(user, channel, Kind::ChannelDeleted);
            }
        }
        reserved.send(Entry {
            keys,
            writes: vec![Write::DeleteChannel { channel }],
            reply: None,
            ..Entry::default()
        });
        Ok(())
    }
}

/// [`Write::ReadPos::at`] of the read positions `effect` writes: when the ack was
/// made, or 0 for what is not an ack.
fn ack_stamp(effect: &UserEffect) -> u64 {
    match *effect {
        UserEffect::Ack { at, .. } => at.unwrap_or(ACK_NOW),
        UserEffect::AckAll { .. } => ACK_NOW,
        UserEffect::Mention { .. }
        | UserEffect::Unread { .. }
        | UserEffect::Join { .. }
        | UserEffect::Leave { .. }
        | UserEffect::Settings { .. }
        | UserEffect::DeleteUser { .. } => 0,
    }
}

/// On a database other nodes write too ([`crate::store::Store::shared`]): the acks of
/// `effect` that changed nothing in this node's copy, written anyway. The copy may
/// not yet have another node's mark unread of the state, which the stored state
/// has; the database applies the ack against that (see [`Write::ReadPos`]). An ack
/// older than the cached epoch is older than the stored one too: left out.
fn unchanged_acks(
    states: &UserStates,
    effect: &UserEffect,
    head_of: impl Fn(u64) -> u64,
    writes: &mut Vec<Write>,
) {
    let user = effect.user().get();
    let written = |writes: &[Write], c: u64| {
        writes
            .iter()
            .any(|w| matches!(*w, Write::ReadPos { channel, .. } if channel == c))
    };
    let mut again = |channel: u64, pos: u64, at: Option<u64>| {
        let Some(state) = states.get(channel) else {
            return;
        };
        if written(writes, channel) || at.is_some_and(|at| at < state.read.epoch) {
            return;
        }
        writes.push(Write::ReadPos {
            user,
            channel,
            epoch: state.read.epoch,
            pos,
            at: at.unwrap_or(ACK_NOW),
        });
    };
    match *effect {
        UserEffect::Ack {
            channel,
            message,
            at,
            ..
        } => again(channel.get(), message.get(), at),
        UserEffect::AckAll { .. } => {
            let channels: Vec<u64> = states.channels().collect();
            for channel in channels {
                let head = head_of(channel);
                if head != 0 {
                    again(channel, head, None);
                }
            }
        }
        UserEffect::Mention { .. }
        | UserEffect::Unread { .. }
        | UserEffect::Join { .. }
        | UserEffect::Leave { .. }
        | UserEffect::Settings { .. }
        | UserEffect::DeleteUser { .. } => {}
    }
}

fn user_write(user: u64, change: UserChange, stamp: u64) -> Write {
    match change {
        UserChange::Read { channel, read } => Write::ReadPos {
            user,
            channel,
            epoch: read.epoch,
            pos: read.pos,
            at: stamp,
        },
        UserChange::Mention { channel, message } => Write::Mention {
            user,
            channel,
            message,
        },
        UserChange::Removed { channel } => Write::Leave { user, channel },
        UserChange::Settings { channel, settings } => Write::Settings {
            user,
            channel,
            settings,
        },
    }
}
