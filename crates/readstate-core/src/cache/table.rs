//! A slab of entries indexed by a `HashTable<u32>`, with CLOCK eviction and exact
//! byte accounting. Synchronous and lock-free by itself: the shard's mutex guards it.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::domain::allocated;

/// Values that know how many heap bytes they own.
pub trait Weigh: Default {
    fn heap_bytes(&self) -> usize;
}

/// An entry of the slab: the id and the value, nothing else, so that a user's entry
/// is three words. What eviction needs per entry lives beside the slab, in
/// `Table::pending` and two bit sets.
#[derive(Debug, Default)]
struct Slot<T> {
    /// 0 = free slot (ids are never 0).
    id: u64,
    value: T,
}

/// One bit per slab position.
#[derive(Debug, Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn get(&self, pos: usize) -> bool {
        self.0[pos / 64] & (1 << (pos % 64)) != 0
    }

    fn set(&mut self, pos: usize, on: bool) {
        let word = &mut self.0[pos / 64];
        if on {
            *word |= 1 << (pos % 64);
        } else {
            *word &= !(1 << (pos % 64));
        }
    }

    /// Room for positions below `len`.
    fn cover(&mut self, len: usize) {
        self.0.resize(len.div_ceil(64), 0);
    }

    fn bytes(&self) -> usize {
        allocated(self.0.capacity() * std::mem::size_of::<u64>())
    }
}

/// Entries of one kind in one shard.
#[derive(Debug)]
pub struct Table<T> {
    slots: Vec<Slot<T>>,
    /// Per slab position: storage writes queued for the entry and not yet committed
    /// (it is unevictable while any are).
    pending: Vec<u32>,
    /// Per slab position: CLOCK's second-chance bit, set on every access.
    referenced: Bits,
    /// Per slab position: another node changed the entry while it was dirty; it goes
    /// as soon as its own writes have committed.
    stale: Bits,
    index: HashTable<u32>,
    free: Vec<u32>,
    hand: usize,
    heap: usize,
    /// Bytes of the slab, what lies beside it, the index and the free list, as of the
    /// last change of a capacity ([`Table::recount`]): the budget check after every
    /// update reads it rather than recomputing six size classes.
    overhead: usize,
    len: usize,
    hasher: foldhash::fast::FixedState,
}

impl<T: Weigh> Default for Table<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Weigh> Table<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            slots: Vec::new(),
            pending: Vec::new(),
            referenced: Bits::default(),
            stale: Bits::default(),
            index: HashTable::new(),
            free: Vec::new(),
            hand: 0,
            heap: 0,
            overhead: 0,
            len: 0,
            hasher: foldhash::fast::FixedState::with_seed(0x7265_6164_7374_6174),
        }
    }

    fn hash(&self, id: u64) -> u64 {
        self.hasher.hash_one(id)
    }

    fn position(&self, id: u64) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(self.hash(id), |&pos| slots[pos as usize].id == id)
            .map(|&pos| pos as usize)
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no entry is live.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held: the slab and what lies beside it, the index and the free list as
    /// allocated (by capacity, rounded to the allocator's size class), plus every
    /// value's heap.
    pub fn bytes(&self) -> usize {
        debug_assert_eq!(
            self.overhead,
            self.structure_bytes(),
            "recounted after every change of a capacity"
        );
        self.overhead + self.heap
    }

    /// Counts the bytes of the structures again; called after anything that may have
    /// changed one of their capacities.
    fn recount(&mut self) {
        self.overhead = self.structure_bytes();
    }

    fn structure_bytes(&self) -> usize {
        allocated(self.slots.capacity() * std::mem::size_of::<Slot<T>>())
            + allocated(self.pending.capacity() * std::mem::size_of::<u32>())
            + self.referenced.bytes()
            + self.stale.bytes()
            + allocated(self.index.allocation_size())
            + allocated(self.free.capacity() * std::mem::size_of::<u32>())
    }

    /// The value of `id`, without marking it used.
    pub fn get(&self, id: u64) -> Option<&T> {
        self.position(id).map(|pos| &self.slots[pos].value)
    }

    /// Marks `id` as recently used; false when it is not cached.
    pub fn touch(&mut self, id: u64) -> bool {
        match self.position(id) {
            Some(pos) => {
                self.referenced.set(pos, true);
                true
            }
            None => false,
        }
    }

    /// Applies `f` to the value of `id` and marks it used: a read, which cannot change
    /// the byte count (so nothing is recounted). `None` when it is not cached.
    pub fn read<R>(&mut self, id: u64, f: impl FnOnce(&T) -> R) -> Option<R> {
        let pos = self.position(id)?;
        self.referenced.set(pos, true);
        Some(f(&self.slots[pos].value))
    }

    /// Applies `f` to the value of `id`, keeping the byte count exact.
    pub fn update<R>(&mut self, id: u64, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let pos = self.position(id)?;
        self.referenced.set(pos, true);
        let slot = &mut self.slots[pos];
        let before = slot.value.heap_bytes();
        let out = f(&mut slot.value);
        let after = slot.value.heap_bytes();
        self.heap = self.heap - before + after;
        Some(out)
    }

    /// Inserts or replaces the value of `id`.
    pub fn insert(&mut self, id: u64, value: T) {
        debug_assert!(id != 0, "ids are never 0");
        if let Some(pos) = self.position(id) {
            let slot = &mut self.slots[pos];
            self.heap = self.heap - slot.value.heap_bytes() + value.heap_bytes();
            slot.value = value;
            self.referenced.set(pos, true);
            return;
        }
        self.heap += value.heap_bytes();
        let slot = Slot { id, value };
        let pos = match self.free.pop() {
            Some(pos) => {
                // A free slot's pending count and stale bit were cleared when it
                // was freed.
                self.slots[pos as usize] = slot;
                pos
            }
            None => {
                if self.slots.len() == self.slots.capacity() {
                    // Grow by an eighth, not by doubling: the slab's capacity counts
                    // against the budget, and doubling a full slab could take the
                    // shard over it with nothing left to evict.
                    let more = (self.slots.len() / 8).max(4);
                    self.slots.reserve_exact(more);
                    self.pending.reserve_exact(more);
                }
                self.slots.push(slot);
                self.pending.push(0);
                self.referenced.cover(self.slots.len());
                self.stale.cover(self.slots.len());
                u32::try_from(self.slots.len() - 1).expect("a shard holds fewer than 2^32 entries")
            }
        };
        self.referenced.set(pos as usize, true);
        let hash = self.hash(id);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index
            .insert_unique(hash, pos, |&p| hasher.hash_one(slots[p as usize].id));
        self.len += 1;
        self.recount();
    }

    /// Counts a queued storage write for `id` (it becomes unevictable).
    pub fn add_pending(&mut self, id: u64) {
        if let Some(pos) = self.position(id) {
            self.pending[pos] += 1;
        }
    }

    /// Counts a committed storage write for `id`; a stale entry goes once clean.
    pub fn done_pending(&mut self, id: u64) {
        if let Some(pos) = self.position(id) {
            self.pending[pos] = self.pending[pos].saturating_sub(1);
            if self.pending[pos] == 0 && self.stale.get(pos) {
                self.remove_at(pos);
            }
        }
    }

    /// The stored value changed elsewhere: remove the entry now if clean, else mark it
    /// stale so that it goes when its own writes have committed.
    pub fn invalidate(&mut self, id: u64) {
        if let Some(pos) = self.position(id) {
            if self.pending[pos] == 0 {
                self.remove_at(pos);
            } else {
                self.stale.set(pos, true);
            }
        }
    }

    /// [`Table::invalidate`] for every entry.
    pub fn invalidate_all(&mut self) {
        for pos in 0..self.slots.len() {
            if self.slots[pos].id == 0 {
                continue;
            }
            if self.pending[pos] == 0 {
                self.remove_at(pos);
            } else {
                self.stale.set(pos, true);
            }
        }
    }

    /// Removes the live entry at slab position `pos`.
    fn remove_at(&mut self, pos: usize) {
        let slot = &mut self.slots[pos];
        let id = slot.id;
        let value = std::mem::take(&mut slot.value);
        slot.id = 0;
        self.stale.set(pos, false);
        self.pending[pos] = 0;
        self.heap -= value.heap_bytes();
        drop(value);
        let hash = self.hash(id);
        if let Ok(entry) = self.index.find_entry(hash, |&p| p as usize == pos) {
            entry.remove();
        }
        let free_capacity = self.free.capacity();
        self.free
            .push(u32::try_from(pos).expect("a shard holds fewer than 2^32 entries"));
        self.len -= 1;
        // Removing from the index never shrinks it: only the free list can have grown.
        if self.free.capacity() != free_capacity {
            self.recount();
        }
    }

    /// Rebuilds the slab and its index around the live entries when at least half of
    /// the slab is free slots (and at least 16 are): a burst of dirty entries grows
    /// the slab, and its capacity, which counts against the budget, would otherwise
    /// stay at that high-water mark after the entries are evicted. The condition
    /// makes the O(n) rebuild amortised: the next one needs as many removals again.
    /// Returns whether it rebuilt.
    pub fn compact_if_sparse(&mut self) -> bool {
        let free = self.slots.len() - self.len;
        if free < 16 || free < self.len {
            return false;
        }
        let mut slots: Vec<Slot<T>> = Vec::with_capacity(self.len);
        let mut pending: Vec<u32> = Vec::with_capacity(self.len);
        let (mut referenced, mut stale) = (Bits::default(), Bits::default());
        referenced.cover(self.len);
        stale.cover(self.len);
        for (pos, slot) in std::mem::take(&mut self.slots).into_iter().enumerate() {
            if slot.id == 0 {
                continue;
            }
            let to = slots.len();
            referenced.set(to, self.referenced.get(pos));
            stale.set(to, self.stale.get(pos));
            pending.push(self.pending[pos]);
            slots.push(slot);
        }
        (self.slots, self.pending) = (slots, pending);
        (self.referenced, self.stale) = (referenced, stale);
        self.free = Vec::new();
        self.hand = 0;
        let mut index = HashTable::with_capacity(self.slots.len());
        for (pos, slot) in self.slots.iter().enumerate() {
            let pos = u32::try_from(pos).expect("a shard holds fewer than 2^32 entries");
            let (slots, hasher) = (&self.slots, &self.hasher);
            index.insert_unique(self.hash(slot.id), pos, |&p| {
                hasher.hash_one(slots[p as usize].id)
            });
        }
        self.index = index;
        self.recount();
        true
    }

    /// Entries with writes not yet committed.
    pub fn dirty(&self) -> usize {
        self.slots
            .iter()
            .zip(&self.pending)
            .filter(|(s, pending)| s.id != 0 && **pending > 0)
            .count()
    }

    /// Live `(id, value)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> + '_ {
        self.slots
            .iter()
            .filter(|s| s.id != 0)
            .map(|s| (s.id, &s.value))
    }

    /// Applies `f` to every live value; returns the ids for which `f` returned true.
    pub fn update_all(&mut self, mut f: impl FnMut(&mut T) -> bool) -> Vec<u64> {
        let mut touched = Vec::new();
        for slot in self.slots.iter_mut().filter(|s| s.id != 0) {
            let before = slot.value.heap_bytes();
            if f(&mut slot.value) {
                touched.push(slot.id);
            }
            self.heap = self.heap - before + slot.value.heap_bytes();
        }
        touched
    }

    /// Evicts one clean entry chosen by CLOCK, never `keep`. False when every entry
    /// is dirty, kept, or the table is empty.
    pub fn evict_one(&mut self, keep: Option<u64>) -> bool {
        let n = self.slots.len();
        for _ in 0..2 * n {
            if self.hand >= n {
                self.hand = 0;
            }
            let pos = self.hand;
            self.hand += 1;
            let id = self.slots[pos].id;
            if id == 0 || self.pending[pos] > 0 || Some(id) == keep {
                continue;
            }
            if self.referenced.get(pos) {
                self.referenced.set(pos, false);
                continue;
            }
            self.remove_at(pos);
            return true;
        }
        false
    }
}
