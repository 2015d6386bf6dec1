//! The memory-budgeted cache of users' read states and channels' windows.
//!
//! Design (see also docs/ARCHITECTURE.md):
//! - **Layout.** `SHARDS` shards, each behind its own mutex, each holding two tables
//!   (users, channels). A table is a slab `Vec<Slot<T>>` (id and value only; the
//!   pending counts and the referenced and stale bits lie beside it) indexed by a
//!   `hashbrown::HashTable<u32>` of slab positions: 4 bytes of index per entry and no
//!   per-entry allocation besides the value's own. A user's read states are one
//!   [`UserStates`] (one allocation, a few bytes per state: see its encoding), so
//!   "all read states of a user" is one lookup.
//! - **Budget.** Every shard gets `max_bytes / SHARDS`. Bytes are counted exactly from
//!   capacities (slab slots, index buckets, each value's heap), not estimated.
//!   After any insert or growth, the shard evicts with CLOCK (second chance) until it
//!   is back under budget.
//! - **Dirty entries are never evicted.** An entry's `pending` counts writes that are
//!   queued for storage and not yet committed; eviction skips entries with
//!   `pending > 0`. So an evicted entry is always equal to what storage holds, and a
//!   reload gives it back unchanged. If everything in a shard is dirty the shard stays
//!   over budget until the commit writer catches up; the writer's queue bound caps this
//!   slack (documented in the README).
//! - **Loads.** A miss marks the id as loading; other callers wait (in the service)
//!   instead of loading it twice, and writers cannot slip a write in between a load's
//!   storage read and its insert.
//! - **Locks.** The service holds a shard lock while it applies an operation to the
//!   cached value *and* queues the storage write, so queue order equals apply order
//!   for every entity. Nothing awaits while holding a lock (these are sync mutexes).
//! - **kill -9** loses the cache, which is only ever a copy of storage plus writes
//!   still queued; acknowledged writes in `sync` mode are already committed.

mod table;

use hashbrown::HashMap;
use parking_lot::{Mutex, MutexGuard};

use crate::domain::{ChannelWindow, UserStates};
pub use table::{Table, Weigh};

/// Number of shards; a power of two so the shard is a mask of the hash.
pub const SHARDS: usize = 64;

impl Weigh for UserStates {
    fn heap_bytes(&self) -> usize {
        UserStates::heap_bytes(self)
    }
}

impl Weigh for ChannelWindow {
    fn heap_bytes(&self) -> usize {
        ChannelWindow::heap_bytes(self)
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup<T> {
    /// Cached.
    Hit(T),
    /// Another caller is loading it from storage: wait and look again.
    Loading,
    /// Not cached and nobody loads it: the caller now owns the load (it was marked as
    /// loading) and must call `finish_*_load` or `abort_*_load`.
    Miss,
}

/// One shard: users and channels whose ids hash here.
#[derive(Debug)]
pub struct Shard {
    pub users: Table<UserStates>,
    pub channels: Table<ChannelWindow>,
    /// Ids being loaded; `true` once invalidated during the load (the loaded value
    /// may predate another node's commit, so it is discarded and loaded again).
    loading_users: HashMap<u64, bool, foldhash::fast::FixedState>,
    loading_channels: HashMap<u64, bool, foldhash::fast::FixedState>,
    budget: usize,
    evictions: u64,
    clock_turn: bool,
}

impl Shard {
    fn new(budget: usize) -> Self {
        Self {
            users: Table::new(),
            channels: Table::new(),
            loading_users: HashMap::default(),
            loading_channels: HashMap::default(),
            budget,
            evictions: 0,
            clock_turn: false,
        }
    }

    /// Bytes this shard holds, all overhead included.
    pub fn bytes(&self) -> usize {
        self.users.bytes() + self.channels.bytes()
    }

    /// Looks a user up; on a miss, marks it as loading by the caller.
    pub fn lookup_user(&mut self, user: u64) -> Lookup<()> {
        if self.users.touch(user) {
            Lookup::Hit(())
        } else if self.loading_users.contains_key(&user) {
            Lookup::Loading
        } else {
            self.loading_users.insert(user, false);
            Lookup::Miss
        }
    }

    /// Looks a channel up; on a miss, marks it as loading by the caller.
    pub fn lookup_channel(&mut self, channel: u64) -> Lookup<()> {
        if self.channels.touch(channel) {
            Lookup::Hit(())
        } else if self.loading_channels.contains_key(&channel) {
            Lookup::Loading
        } else {
            self.loading_channels.insert(channel, false);
            Lookup::Miss
        }
    }

    /// Inserts a user loaded from storage and ends its loading mark. Returns false
    /// (inserting nothing) when the user was invalidated during the load: the caller
    /// loads again.
    pub fn finish_user_load(&mut self, user: u64, mut states: UserStates) -> bool {
        if self.loading_users.remove(&user) == Some(true) {
            return false;
        }
        states.shrink();
        // Present already only if inserted without a load (a channel delete): keep that.
        if self.users.get(user).is_none() {
            self.users.insert(user, states);
        }
        self.enforce_budget(Some(user), None);
        true
    }

    /// Inserts a channel loaded from storage and ends its loading mark. Returns false
    /// (inserting nothing) when the channel was invalidated during the load.
    pub fn finish_channel_load(&mut self, channel: u64, window: ChannelWindow) -> bool {
        if self.loading_channels.remove(&channel) == Some(true) {
            return false;
        }
        // A channel delete that ran during the load inserted the deleted (empty)
        // channel: that one is newer than what the load read.
        if self.channels.get(channel).is_none() {
            self.channels.insert(channel, window);
        }
        self.enforce_budget(None, Some(channel));
        true
    }

    /// Another node committed writes for `user`: drop the cached copy (at once if
    /// clean, after its own writes commit if dirty) and discard a load in flight.
    pub fn invalidate_user(&mut self, user: u64) {
        if let Some(invalidated) = self.loading_users.get_mut(&user) {
            *invalidated = true;
        }
        self.users.invalidate(user);
    }

    /// Another node committed writes for `channel` (see [`Shard::invalidate_user`]).
    pub fn invalidate_channel(&mut self, channel: u64) {
        if let Some(invalidated) = self.loading_channels.get_mut(&channel) {
            *invalidated = true;
        }
        self.channels.invalidate(channel);
    }

    /// Another node deleted `channel`: drop (or mark, if dirty) the channel and every
    /// cached user holding a read state in it, and redo every user load in flight
    /// (it may have read the rows before the delete).
    pub fn invalidate_deleted_channel(&mut self, channel: u64) {
        self.loading_users.values_mut().for_each(|v| *v = true);
        let holders: Vec<u64> = self
            .users
            .iter()
            .filter(|(_, s)| s.get(channel).is_some())
            .map(|(id, _)| id)
            .collect();
        for user in holders {
            self.users.invalidate(user);
        }
        self.invalidate_channel(channel);
    }

    /// Notifications may have been missed: drop or mark every entry.
    pub fn invalidate_all(&mut self) {
        self.loading_users.values_mut().for_each(|v| *v = true);
        self.loading_channels.values_mut().for_each(|v| *v = true);
        self.users.invalidate_all();
        self.channels.invalidate_all();
    }

    /// Ends a failed user load (storage error) so that another caller may retry.
    pub fn abort_user_load(&mut self, user: u64) {
        self.loading_users.remove(&user);
    }

    /// Ends a failed channel load.
    pub fn abort_channel_load(&mut self, channel: u64) {
        self.loading_channels.remove(&channel);
    }

    /// Whether a user is cached right now (no side effects).
    pub fn has_user(&self, user: u64) -> bool {
        self.users.get(user).is_some()
    }

    /// Applies `f` to a cached user's states and marks them used: a read, which
    /// changes no byte count and evicts nothing. `None` if not cached.
    pub fn read_user<R>(&mut self, user: u64, f: impl FnOnce(&UserStates) -> R) -> Option<R> {
        self.users.read(user, f)
    }

    /// [`Shard::read_user`] for a cached channel's window.
    pub fn read_channel<R>(
        &mut self,
        channel: u64,
        f: impl FnOnce(&ChannelWindow) -> R,
    ) -> Option<R> {
        self.channels.read(channel, f)
    }

    /// Applies `f` to a cached user's states, keeps the byte count exact and evicts
    /// others if the change grew the shard past its budget. `None` if not cached.
    pub fn update_user<R>(&mut self, user: u64, f: impl FnOnce(&mut UserStates) -> R) -> Option<R> {
        let out = self.users.update(user, f)?;
        self.enforce_budget(Some(user), None);
        Some(out)
    }

    /// Applies `f` to a cached channel, like [`Shard::update_user`].
    pub fn update_channel<R>(
        &mut self,
        channel: u64,
        f: impl FnOnce(&mut ChannelWindow) -> R,
    ) -> Option<R> {
        let out = self.channels.update(channel, f)?;
        self.enforce_budget(None, Some(channel));
        Some(out)
    }

    /// Evicts clean entries (CLOCK) until the shard is within budget or nothing more
    /// can go, compacting a table first when half of its slab is free slots. The
    /// entries named by `keep_*` stay: the caller is using them.
    fn enforce_budget(&mut self, keep_user: Option<u64>, keep_channel: Option<u64>) {
        let mut stalled = [false, false];
        while self.bytes() > self.budget && !(stalled[0] && stalled[1]) {
            // Over budget may be slab capacity that evicted entries left: give that
            // back before evicting live entries for it.
            if self.users.compact_if_sparse() | self.channels.compact_if_sparse() {
                continue;
            }
            self.clock_turn = !self.clock_turn;
            let (evicted, side) = if self.clock_turn {
                (self.users.evict_one(keep_user), 0)
            } else {
                (self.channels.evict_one(keep_channel), 1)
            };
            if evicted {
                self.evictions += 1;
                stalled = [false, false];
            } else {
                stalled[side] = true;
            }
        }
    }

    /// Evicts clean entries until the shard is within budget again: called when
    /// entries become clean (their writes reached the database), which is when the
    /// budget slack that dirty entries took can be given back.
    pub fn trim(&mut self) {
        self.enforce_budget(None, None);
    }

    /// Evictions so far in this shard.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

/// Totals over all shards, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub bytes: u64,
    pub users: u64,
    pub read_states: u64,
    pub channels: u64,
    pub evictions: u64,
    pub dirty_entries: u64,
}

/// The cache: [`SHARDS`] independently locked shards.
#[derive(Debug)]
pub struct Cache {
    shards: Box<[Mutex<Shard>]>,
    max_bytes: u64,
}

fn shard_index(id: u64) -> usize {
    // Fibonacci hashing: ids are often sequential, the top bits mix them well.
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize & (SHARDS - 1)
}

impl Cache {
    /// A cache holding at most `max_bytes` (plus the dirty slack described above).
    pub fn new(max_bytes: u64) -> Self {
        let per_shard = usize::try_from(max_bytes / SHARDS as u64).unwrap_or(usize::MAX);
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(Shard::new(per_shard)))
            .collect();
        Self { shards, max_bytes }
    }

    /// The configured budget.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Index of the shard that holds `user`.
    pub fn user_shard(&self, user: u64) -> usize {
        shard_index(user)
    }

    /// Index of the shard that holds `channel` (a different mix so a user and a
    /// channel with the same id do not always share a lock).
    pub fn channel_shard(&self, channel: u64) -> usize {
        shard_index(channel ^ 0x5555_5555_5555_5555)
    }

    /// Locks shard `index`.
    pub fn lock(&self, index: usize) -> MutexGuard<'_, Shard> {
        self.shards[index].lock()
    }

    /// Locks every shard in index order (the only order anyone takes more than one in).
    pub fn lock_all(&self) -> Vec<MutexGuard<'_, Shard>> {
        self.shards.iter().map(|s| s.lock()).collect()
    }

    /// Sums every shard.
    pub fn stats(&self) -> CacheStats {
        let mut stats = CacheStats::default();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            stats.bytes += shard.bytes() as u64;
            stats.users += shard.users.len() as u64;
            stats.channels += shard.channels.len() as u64;
            stats.read_states += shard.users.iter().map(|(_, s)| s.len() as u64).sum::<u64>();
            stats.evictions += shard.evictions();
            stats.dirty_entries += (shard.users.dirty() + shard.channels.dirty()) as u64;
        }
        stats
    }
}

#[cfg(test)]
mod tests;
