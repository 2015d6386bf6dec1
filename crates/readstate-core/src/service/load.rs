//! Getting users and channels into the cache (each loaded once, however many
//! callers ask), and out of it when another node changed them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use crate::cache::Lookup;
use crate::domain::{ChannelWindow, UserStates};
use crate::store::Changes;

use super::{MAX_ATTEMPTS, Service, ServiceError};

impl Service {
    /// Makes sure `user` is cached, loading it (once, however many callers ask).
    pub(super) async fn ensure_user(&self, user: u64) -> Result<(), ServiceError> {
        let index = self.cache.user_shard(user);
        loop {
            let notified = self.user_loads[index].notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let lookup = self.cache.lock(index).lookup_user(user);
            match lookup {
                Lookup::Hit(()) => return Ok(()),
                Lookup::Loading => notified.await,
                Lookup::Miss => {
                    // If this future is dropped mid-load (request timeout, client gone),
                    // the guard clears the loading mark so that waiters retry.
                    let guard = UserLoadGuard {
                        service: self,
                        user,
                        index,
                    };
                    let loaded = self.load_user(user).await;
                    std::mem::forget(guard);
                    let inserted = {
                        let mut shard = self.cache.lock(index);
                        match loaded {
                            // A channel delete bumps the epoch holding every shard's
                            // lock: checked under this shard's lock, no delete can
                            // fall between the check and the insert.
                            Ok((states, epoch)) if self.no_delete_since(epoch) => {
                                Ok(shard.finish_user_load(user, states))
                            }
                            Ok(_) => {
                                shard.abort_user_load(user);
                                Ok(false)
                            }
                            Err(e) => {
                                shard.abort_user_load(user);
                                Err(e)
                            }
                        }
                    };
                    self.user_loads[index].notify_waiters();
                    // Not inserted: another node changed the user, or a channel was
                    // deleted, during the load; load again.
                    if inserted? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Reads `user` from storage once no channel delete is waiting to be stored (the
    /// rows it removes would be read), with the delete epoch the read began in: the
    /// caller inserts the states only if no delete ran since ([`Self::no_delete_since`]).
    pub(super) async fn load_user(&self, user: u64) -> Result<(UserStates, u64), ServiceError> {
        crate::metrics::cache_load("user");
        loop {
            if self.committer.deletes_pending() {
                self.committer.flush().await?;
            }
            let epoch = self.delete_epoch.load(Ordering::SeqCst);
            let states = self
                .store
                .load_user(user, self.caps.mention_window())
                .await?;
            if self.no_delete_since(epoch) {
                return Ok((states, epoch));
            }
        }
    }

    /// Whether no channel delete began since `epoch` was read: what a load read
    /// from storage then is still current. Loads check it again holding the shard
    /// lock they insert under; a delete changes the epoch holding every shard's lock.
    fn no_delete_since(&self, epoch: u64) -> bool {
        self.delete_epoch.load(Ordering::SeqCst) == epoch
    }

    /// Makes sure every listed channel is cached (one storage query for the misses).
    pub(super) async fn ensure_channels(&self, channels: &[u64]) -> Result<(), ServiceError> {
        loop {
            let notified = self.channel_loads.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut own = Vec::new();
            let mut waiting = false;
            for &channel in channels {
                match self
                    .cache
                    .lock(self.cache.channel_shard(channel))
                    .lookup_channel(channel)
                {
                    Lookup::Hit(()) => {}
                    Lookup::Loading => waiting = true,
                    Lookup::Miss => own.push(channel),
                }
            }
            if own.is_empty() {
                if !waiting {
                    return Ok(());
                }
                notified.await;
                continue;
            }
            crate::metrics::cache_load("channel");
            let guard = ChannelLoadGuard {
                service: self,
                channels: &own,
            };
            let epoch = self.delete_epoch.load(Ordering::SeqCst);
            let loaded = self
                .store
                .load_channels(&own, self.caps.channel_window())
                .await;
            std::mem::forget(guard);
            match loaded {
                Ok(windows) => {
                    let mut all_inserted = true;
                    for (channel, window) in windows {
                        let mut shard = self.cache.lock(self.cache.channel_shard(channel));
                        // A channel deleted during the load may have had its (empty)
                        // window evicted already once the delete was stored: what the
                        // load read predates it. The epoch is checked under the lock
                        // (see `no_delete_since`).
                        if self.no_delete_since(epoch) {
                            // False when another node changed it during the load.
                            all_inserted &= shard.finish_channel_load(channel, window);
                        } else {
                            shard.abort_channel_load(channel);
                            all_inserted = false;
                        }
                    }
                    self.channel_loads.notify_waiters();
                    if all_inserted && !waiting {
                        return Ok(());
                    }
                }
                Err(e) => {
                    for channel in own {
                        self.cache
                            .lock(self.cache.channel_shard(channel))
                            .abort_channel_load(channel);
                    }
                    self.channel_loads.notify_waiters();
                    return Err(e.into());
                }
            }
        }
    }

    pub(super) async fn heads(&self, channels: &[u64]) -> Result<HashMap<u64, u64>, ServiceError> {
        self.with_channels(channels, |_, w| w.head()).await
    }

    /// Applies `f` to each listed channel's window, from the cache when possible.
    pub(super) async fn with_channels<R>(
        &self,
        channels: &[u64],
        f: impl Fn(u64, &ChannelWindow) -> R,
    ) -> Result<HashMap<u64, R>, ServiceError> {
        let mut out = HashMap::with_capacity(channels.len());
        let mut missing: Vec<u64> = channels.to_vec();
        // Cached channels are read under one lock each; only misses are loaded.
        for attempt in 0..4 {
            if attempt > 0 {
                self.ensure_channels(&missing).await?;
            }
            missing.retain(|&c| {
                let read = self
                    .cache
                    .lock(self.cache.channel_shard(c))
                    .read_channel(c, |window| f(c, window));
                match read {
                    Some(r) => {
                        out.insert(c, r);
                        false
                    }
                    None => true,
                }
            });
            if missing.is_empty() {
                return Ok(out);
            }
        }
        // Evicted as fast as loaded (a budget far too small): read storage directly.
        if !missing.is_empty() {
            for (c, window) in self
                .store
                .load_channels(&missing, self.caps.channel_window())
                .await?
            {
                out.insert(c, f(c, &window));
            }
        }
        Ok(out)
    }

    /// `(channel, its parent)` up the chain of parents from `start` (`start` first),
    /// at most [`crate::domain::MAX_PARENT_DEPTH`] + 1 channels.
    pub(super) async fn parent_chain(&self, start: u64) -> Result<Vec<(u64, u64)>, ServiceError> {
        let mut chain = Vec::new();
        let mut at = start;
        while at != 0 && chain.len() <= crate::domain::MAX_PARENT_DEPTH {
            if chain.iter().any(|(c, _)| *c == at) {
                break;
            }
            let parent = self
                .with_channels(&[at], |_, w| w.meta().parent)
                .await?
                .remove(&at)
                .unwrap_or(0);
            chain.push((at, parent));
            at = parent;
        }
        Ok(chain)
    }

    pub(super) async fn user_channels(&self, user: u64) -> Result<Vec<u64>, ServiceError> {
        self.with_user(user, |states| states.channels().collect())
            .await
    }

    /// Applies `f` to the cached states of `user`, loading them if needed.
    pub(super) async fn with_user<R>(
        &self,
        user: u64,
        f: impl Fn(&UserStates) -> R,
    ) -> Result<R, ServiceError> {
        for _ in 0..MAX_ATTEMPTS {
            if let Some(r) = self
                .cache
                .lock(self.cache.user_shard(user))
                .read_user(user, |states| f(states))
            {
                return Ok(r);
            }
            self.ensure_user(user).await?;
        }
        Err(thrashing())
    }

    /// Drops cached entries that another node sharing the database has written (the
    /// change feed of [`Store::watch`]): clean ones at once, dirty ones once their own
    /// writes commit, loads in flight are redone.
    pub fn apply_remote_changes(&self, changes: &Changes) {
        if changes.resync {
            tracing::info!("change feed resynchronising: dropping every cached entry");
            for mut shard in self.cache.lock_all() {
                shard.invalidate_all();
            }
            self.hub.resync_all();
            crate::metrics::remote_invalidation(0, true);
            return;
        }
        for &user in &changes.users {
            self.cache
                .lock(self.cache.user_shard(user))
                .invalidate_user(user);
            // What changed is not known here: the user's subscribers refetch.
            self.hub.resync_user(user);
        }
        for &channel in &changes.channels {
            self.cache
                .lock(self.cache.channel_shard(channel))
                .invalidate_channel(channel);
        }
        if !changes.deleted_channels.is_empty() {
            // Which users hold a state in the channel is known only by scanning: lock
            // every shard, as a local delete does (deletes are rare).
            let mut shards = self.cache.lock_all();
            for &channel in &changes.deleted_channels {
                for shard in shards.iter_mut() {
                    shard.invalidate_deleted_channel(channel);
                }
            }
            drop(shards);
            self.hub.resync_all();
        }
        crate::metrics::remote_invalidation(
            changes.users.len() + changes.channels.len() + changes.deleted_channels.len(),
            false,
        );
    }
}

/// Clears a user's loading mark if the loading future is dropped before it finishes.
struct UserLoadGuard<'a> {
    service: &'a Service,
    user: u64,
    index: usize,
}

impl Drop for UserLoadGuard<'_> {
    fn drop(&mut self) {
        self.service
            .cache
            .lock(self.index)
            .abort_user_load(self.user);
        self.service.user_loads[self.index].notify_waiters();
    }
}

/// Clears channels' loading marks if the loading future is dropped before it finishes.
struct ChannelLoadGuard<'a> {
    service: &'a Service,
    channels: &'a [u64],
}

impl Drop for ChannelLoadGuard<'_> {
    fn drop(&mut self) {
        for &channel in self.channels {
            self.service
                .cache
                .lock(self.service.cache.channel_shard(channel))
                .abort_channel_load(channel);
        }
        self.service.channel_loads.notify_waiters();
    }
}

pub(super) fn thrashing() -> ServiceError {
    ServiceError::Unavailable {
        reason: "cache budget too small for the working set",
        source: None,
    }
}
