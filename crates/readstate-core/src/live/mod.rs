//! Live change streams: the [`Hub`] every write reports its read-state changes to,
//! and the subscriptions (`/v1/users/{id}/events`, the NATS change publisher) that
//! read them.
//!
//! Every change gets a sequence number and goes into a bounded ring of recent changes
//! (of all users), so that a client that reconnects with `Last-Event-ID` gets exactly
//! what it missed, or a `resync` when that is no longer known (the id is older than
//! the ring, or from another process). A subscriber has a bounded queue; when it is
//! full the subscriber is marked, its backlog is dropped and it gets a `resync`
//! instead, so a slow client never blocks a writer nor grows memory.
//!
//! An event names what changed (user, channel, kind), not the new state: the
//! transport reads the state when it sends the event, so what a client receives is
//! never older than the event, and replaying an event twice is harmless.

pub mod wire;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::EventsSettings;
use crate::domain::{UserChange, UserEffect};

/// What kind of change an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The read position moved forward (ack, ack all, authoring a message).
    Ack,
    /// The user was mentioned.
    Mention,
    /// The read position moved back (mark unread).
    Unread,
    /// A read state was created.
    Join,
    /// A read state was removed (leave).
    Leave,
    /// A message of the channel was deleted: counts may have dropped.
    MessageDeleted,
    /// The channel was deleted: the read state is gone.
    ChannelDeleted,
    /// The read state's notification settings changed.
    Settings,
    /// The user was deleted: the read state is gone.
    UserDeleted,
}

impl Kind {
    /// The `type` field of the event.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ack => "ack",
            Kind::Mention => "mention",
            Kind::Unread => "unread",
            Kind::Join => "join",
            Kind::Leave => "leave",
            Kind::MessageDeleted => "message_deleted",
            Kind::ChannelDeleted => "channel_deleted",
            Kind::Settings => "settings",
            Kind::UserDeleted => "user_deleted",
        }
    }

    /// The kind of a stored change made by `effect`.
    pub fn of(effect: &UserEffect, change: &UserChange) -> Kind {
        match (effect, change) {
            (_, UserChange::Mention { .. }) => Kind::Mention,
            (_, UserChange::Settings { .. }) => Kind::Settings,
            (UserEffect::DeleteUser { .. }, _) => Kind::UserDeleted,
            (_, UserChange::Removed { .. }) => Kind::Leave,
            (UserEffect::Settings { .. }, _) => Kind::Join,
            (UserEffect::Unread { .. }, _) => Kind::Unread,
            (UserEffect::Join { .. }, _) => Kind::Join,
            _ => Kind::Ack,
        }
    }
}

/// One change, as the ring and the queues hold it (32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    /// The user whose read state changed; [`ALL_USERS`] for a channel-wide change.
    pub user: u64,
    pub channel: u64,
    pub kind: Kind,
}

/// The `user` of a channel-wide event: every subscriber checks whether it applies.
pub const ALL_USERS: u64 = 0;

/// An event id as clients see it: `<process>-<sequence>`. The process part changes
/// on every start, so an id from before a restart is recognised as unresumable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventId {
    pub boot: u64,
    pub seq: u64,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}-{}", self.boot, self.seq)
    }
}

impl EventId {
    /// Parses `<hex>-<decimal>`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let (boot, seq) = s.trim().split_once('-')?;
        Some(Self {
            boot: u64::from_str_radix(boot, 16).ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

/// What a subscription yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    /// The stream is open and nothing was missed; `seq` is the position to resume from.
    Ready { seq: u64 },
    /// Changes were missed (unresumable `Last-Event-ID`, or the subscriber fell behind):
    /// refetch the read states; the stream goes on from `seq`.
    Resync { seq: u64 },
    /// A change.
    Change(Event),
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("too many subscribers")]
    TooMany,
    #[error("shutting down")]
    Closed,
}

struct Slot {
    id: u64,
    tx: mpsc::Sender<Event>,
    overflow: Arc<AtomicBool>,
}

/// Queued to wake a subscriber whose resync flag was set from outside.
const WAKE_UP: Event = Event {
    seq: 0,
    user: ALL_USERS,
    channel: 0,
    kind: Kind::Ack,
};

impl Slot {
    /// Marks the subscriber for a resync and wakes it.
    fn force_resync(&self) {
        self.overflow.store(true, Ordering::Release);
        let _ = self.tx.try_send(WAKE_UP);
    }

    /// Queues `event`, or marks the subscriber as fallen behind.
    fn offer(&self, event: Event) {
        if self.overflow.load(Ordering::Relaxed) {
            return;
        }
        if self.tx.try_send(event).is_err() {
            self.overflow.store(true, Ordering::Release);
        }
    }
}

struct Inner {
    next_seq: u64,
    ring: VecDeque<Event>,
    subscribers: HashMap<u64, Vec<Slot>>,
    /// Subscribers to every user's changes (the NATS change publisher).
    firehose: Vec<Slot>,
    count: usize,
    closed: bool,
}

/// Where changes meet subscribers. One per process.
pub struct Hub {
    inner: Mutex<Inner>,
    boot: u64,
    next_slot: AtomicU64,
    settings: EventsSettings,
    closed: CancellationToken,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub").field("boot", &self.boot).finish()
    }
}

impl Hub {
    /// A hub with the given limits.
    pub fn new(settings: EventsSettings) -> Self {
        // Nanoseconds since the epoch: distinct across restarts of one node.
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .max(1);
        Self {
            inner: Mutex::new(Inner {
                next_seq: 1,
                ring: VecDeque::new(),
                subscribers: HashMap::new(),
                firehose: Vec::new(),
                count: 0,
                closed: false,
            }),
            boot,
            next_slot: AtomicU64::new(1),
            settings,
            closed: CancellationToken::new(),
        }
    }

    /// The id clients see for sequence number `seq`.
    pub fn event_id(&self, seq: u64) -> EventId {
        EventId {
            boot: self.boot,
            seq,
        }
    }

    /// Heartbeat interval of idle streams.
    pub fn heartbeat(&self) -> Duration {
        self.settings.heartbeat()
    }

    /// Cancelled when the hub closes (shutdown): streams end.
    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }

    /// Number of open subscriptions (per-user and firehose).
    pub fn subscribers(&self) -> usize {
        self.inner.lock().count
    }

    /// Reports a change of one user's read state.
    pub fn publish(&self, user: u64, channel: u64, kind: Kind) {
        let mut inner = self.inner.lock();
        let event = self.record(&mut inner, user, channel, kind);
        if let Some(slots) = inner.subscribers.get(&user) {
            for slot in slots {
                slot.offer(event);
            }
        }
        for slot in &inner.firehose {
            slot.offer(event);
        }
    }

    /// Reports a change of every read state in `channel` (a message deleted): each
    /// per-user subscriber gets it and checks whether its user is a member.
    pub fn publish_channel(&self, channel: u64, kind: Kind) {
        let mut inner = self.inner.lock();
        let event = self.record(&mut inner, ALL_USERS, channel, kind);
        for slot in inner.subscribers.values().flatten() {
            slot.offer(event);
        }
    }

    /// Users with at least one subscriber.
    pub fn subscribed_users(&self) -> Vec<u64> {
        self.inner.lock().subscribers.keys().copied().collect()
    }

    /// Tells the subscribers of `user` to refetch everything (their states changed in
    /// a way the hub cannot describe, e.g. on another node).
    pub fn resync_user(&self, user: u64) {
        let inner = self.inner.lock();
        if let Some(slots) = inner.subscribers.get(&user) {
            for slot in slots {
                slot.force_resync();
            }
        }
    }

    /// Tells every subscriber to refetch everything.
    pub fn resync_all(&self) {
        let inner = self.inner.lock();
        for slot in inner.subscribers.values().flatten().chain(&inner.firehose) {
            slot.force_resync();
        }
    }

    fn record(&self, inner: &mut Inner, user: u64, channel: u64, kind: Kind) -> Event {
        let event = Event {
            seq: inner.next_seq,
            user,
            channel,
            kind,
        };
        inner.next_seq += 1;
        if inner.ring.len() == self.settings.replay_window {
            inner.ring.pop_front();
        }
        inner.ring.push_back(event);
        event
    }

    /// Opens a subscription to `user`'s changes, resuming after `last` when given and
    /// still known.
    ///
    /// # Errors
    /// Too many subscribers, or the hub is closed.
    pub fn subscribe(
        self: &Arc<Self>,
        user: u64,
        last: Option<&str>,
    ) -> Result<Subscription, SubscribeError> {
        self.open(Some(user), last)
    }

    /// Opens a subscription to every user's changes (not channel-wide ones).
    ///
    /// # Errors
    /// The hub is closed.
    pub fn subscribe_all(self: &Arc<Self>) -> Result<Subscription, SubscribeError> {
        self.open(None, None)
    }

    fn open(
        self: &Arc<Self>,
        user: Option<u64>,
        last: Option<&str>,
    ) -> Result<Subscription, SubscribeError> {
        let (tx, rx) = mpsc::channel(self.settings.subscriber_buffer);
        let overflow = Arc::new(AtomicBool::new(false));
        let id = self.next_slot.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            id,
            tx,
            overflow: overflow.clone(),
        };
        let mut inner = self.inner.lock();
        if inner.closed {
            return Err(SubscribeError::Closed);
        }
        if user.is_some() && inner.count >= self.settings.max_subscribers {
            return Err(SubscribeError::TooMany);
        }
        let head = inner.next_seq - 1;
        let mut replay = VecDeque::new();
        let start = match (user, last.map(EventId::parse)) {
            (_, None) => Item::Ready { seq: head },
            (Some(user), Some(Some(id))) if id.boot == self.boot && id.seq <= head => {
                // Resumable when every change after `id.seq` is still in the ring.
                let oldest = inner.ring.front().map_or(head + 1, |e| e.seq);
                if id.seq + 1 >= oldest {
                    replay.extend(
                        inner
                            .ring
                            .iter()
                            .filter(|e| e.seq > id.seq && (e.user == user || e.user == ALL_USERS))
                            .copied(),
                    );
                    Item::Ready { seq: id.seq }
                } else {
                    Item::Resync { seq: head }
                }
            }
            _ => Item::Resync { seq: head },
        };
        match user {
            Some(user) => inner.subscribers.entry(user).or_default().push(slot),
            None => inner.firehose.push(slot),
        }
        inner.count += 1;
        drop(inner);
        if matches!(start, Item::Resync { .. }) {
            crate::metrics::event_resync();
        }
        Ok(Subscription {
            hub: self.clone(),
            user,
            id,
            start: Some(start),
            replay,
            rx,
            overflow,
        })
    }

    fn unsubscribe(&self, user: Option<u64>, id: u64) {
        let mut inner = self.inner.lock();
        let removed = match user {
            Some(user) => match inner.subscribers.get_mut(&user) {
                Some(slots) => {
                    let before = slots.len();
                    slots.retain(|s| s.id != id);
                    let removed = before - slots.len();
                    if slots.is_empty() {
                        inner.subscribers.remove(&user);
                    }
                    removed
                }
                None => 0,
            },
            None => {
                let before = inner.firehose.len();
                inner.firehose.retain(|s| s.id != id);
                before - inner.firehose.len()
            }
        };
        inner.count -= removed;
    }

    /// Ends every subscription (their streams finish) and refuses new ones.
    pub fn close(&self) {
        let mut inner = self.inner.lock();
        inner.closed = true;
        // Dropping the senders ends the receivers once they have drained.
        inner.subscribers.clear();
        inner.firehose.clear();
        drop(inner);
        self.closed.cancel();
    }

    fn head(&self) -> u64 {
        self.inner.lock().next_seq - 1
    }
}

/// An open subscription; dropping it unsubscribes.
pub struct Subscription {
    hub: Arc<Hub>,
    user: Option<u64>,
    id: u64,
    start: Option<Item>,
    replay: VecDeque<Event>,
    rx: mpsc::Receiver<Event>,
    overflow: Arc<AtomicBool>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("user", &self.user)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The hub this subscription reads.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The next item; `None` once the hub has closed.
    pub async fn next(&mut self) -> Option<Item> {
        if let Some(start) = self.start.take() {
            return Some(start);
        }
        if let Some(event) = self.replay.pop_front() {
            return Some(Item::Change(event));
        }
        loop {
            if let Some(resync) = self.take_overflow() {
                return Some(resync);
            }
            let event = self.rx.recv().await?;
            // A wake-up for a resync requested from outside (seq 0 is never a change),
            // or the queue filled up while this event waited in it: what follows is a gap.
            if let Some(resync) = self.take_overflow() {
                return Some(resync);
            }
            if event.seq != WAKE_UP.seq {
                return Some(Item::Change(event));
            }
        }
    }

    /// When the subscriber fell behind: drops the backlog and answers a resync.
    fn take_overflow(&mut self) -> Option<Item> {
        if !self.overflow.load(Ordering::Acquire) {
            return None;
        }
        self.replay.clear();
        while self.rx.try_recv().is_ok() {}
        // Cleared after draining: events queued from here on are delivered, and the
        // resync's position covers everything that was dropped.
        self.overflow.store(false, Ordering::Release);
        crate::metrics::event_resync();
        Some(Item::Resync {
            seq: self.hub.head(),
        })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.user, self.id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn hub(window: usize, buffer: usize) -> Arc<Hub> {
        Arc::new(Hub::new(EventsSettings {
            replay_window: window,
            subscriber_buffer: buffer,
            ..EventsSettings::default()
        }))
    }

    async fn changes(sub: &mut Subscription, n: usize) -> Vec<(u64, u64, Kind)> {
        let mut out = Vec::new();
        for _ in 0..n {
            match sub.next().await.unwrap() {
                Item::Change(e) => out.push((e.seq, e.channel, e.kind)),
                other => panic!("expected a change, got {other:?}"),
            }
        }
        out
    }

    #[tokio::test]
    async fn subscribers_get_their_users_changes_in_order() {
        let hub = hub(100, 16);
        let mut a = hub.subscribe(1, None).unwrap();
        let mut b = hub.subscribe(1, None).unwrap();
        let mut other = hub.subscribe(2, None).unwrap();
        assert_eq!(a.next().await, Some(Item::Ready { seq: 0 }));
        assert_eq!(b.next().await, Some(Item::Ready { seq: 0 }));
        assert_eq!(other.next().await, Some(Item::Ready { seq: 0 }));
        hub.publish(1, 10, Kind::Ack);
        hub.publish(2, 10, Kind::Mention);
        hub.publish(1, 11, Kind::Join);
        let want = vec![(1, 10, Kind::Ack), (3, 11, Kind::Join)];
        assert_eq!(changes(&mut a, 2).await, want);
        assert_eq!(changes(&mut b, 2).await, want);
        assert_eq!(changes(&mut other, 1).await, vec![(2, 10, Kind::Mention)]);
        assert_eq!(hub.subscribers(), 3);
        drop(a);
        assert_eq!(hub.subscribers(), 2);
    }

    #[tokio::test]
    async fn resume_replays_exactly_what_was_missed() {
        let hub = hub(100, 16);
        hub.publish(1, 10, Kind::Ack);
        let id = hub.event_id(1).to_string();
        hub.publish(2, 10, Kind::Ack);
        hub.publish(1, 11, Kind::Unread);
        hub.publish_channel(12, Kind::MessageDeleted);
        let mut sub = hub.subscribe(1, Some(&id)).unwrap();
        assert_eq!(sub.next().await, Some(Item::Ready { seq: 1 }));
        assert_eq!(
            changes(&mut sub, 2).await,
            vec![(3, 11, Kind::Unread), (4, 12, Kind::MessageDeleted)]
        );
        hub.publish(1, 13, Kind::Leave);
        assert_eq!(changes(&mut sub, 1).await, vec![(5, 13, Kind::Leave)]);
    }

    #[tokio::test]
    async fn unresumable_ids_get_a_resync() {
        let hub = hub(2, 16);
        for c in 1..=5 {
            hub.publish(1, c, Kind::Ack);
        }
        // Seq 1 is gone from a ring of 2 (holds 4 and 5): 2 and 3 would be missed.
        let old = hub.event_id(1).to_string();
        let mut sub = hub.subscribe(1, Some(&old)).unwrap();
        assert_eq!(sub.next().await, Some(Item::Resync { seq: 5 }));
        // Seq 3: everything after it (4, 5) is still there.
        let recent = hub.event_id(3).to_string();
        let mut sub = hub.subscribe(1, Some(&recent)).unwrap();
        assert_eq!(sub.next().await, Some(Item::Ready { seq: 3 }));
        assert_eq!(changes(&mut sub, 2).await.len(), 2);
        for bad in ["garbage", "1-2", &format!("{:x}-99", hub.boot)] {
            let mut sub = hub.subscribe(1, Some(bad)).unwrap();
            assert_eq!(sub.next().await, Some(Item::Resync { seq: 5 }), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_gets_a_resync_and_bounded_memory() {
        let hub = hub(1000, 4);
        let mut slow = hub.subscribe(1, None).unwrap();
        assert_eq!(slow.next().await, Some(Item::Ready { seq: 0 }));
        for c in 1..=100 {
            hub.publish(1, c, Kind::Ack);
        }
        // Only 4 were ever queued; the rest were dropped.
        assert_eq!(slow.next().await, Some(Item::Resync { seq: 100 }));
        hub.publish(1, 101, Kind::Ack);
        assert_eq!(changes(&mut slow, 1).await, vec![(101, 101, Kind::Ack)]);
    }

    #[tokio::test]
    async fn firehose_sees_every_user_and_close_ends_streams() {
        let hub = hub(10, 16);
        let mut all = hub.subscribe_all().unwrap();
        assert_eq!(all.next().await, Some(Item::Ready { seq: 0 }));
        hub.publish(1, 10, Kind::Ack);
        hub.publish(2, 10, Kind::Ack);
        hub.publish_channel(10, Kind::MessageDeleted);
        assert_eq!(changes(&mut all, 2).await.len(), 2);
        hub.close();
        assert_eq!(all.next().await, None);
        assert!(hub.closed().is_cancelled());
        assert_eq!(hub.subscribe(1, None).unwrap_err(), SubscribeError::Closed);
    }

    #[tokio::test]
    async fn subscriber_limit() {
        let hub = Arc::new(Hub::new(EventsSettings {
            max_subscribers: 1,
            ..EventsSettings::default()
        }));
        let _a = hub.subscribe(1, None).unwrap();
        assert_eq!(hub.subscribe(2, None).unwrap_err(), SubscribeError::TooMany);
    }

    #[tokio::test]
    async fn resync_from_outside_wakes_a_waiting_subscriber() {
        let hub = hub(10, 4);
        let mut sub = hub.subscribe(1, None).unwrap();
        assert_eq!(sub.next().await, Some(Item::Ready { seq: 0 }));
        let waiter = tokio::spawn(async move { (sub.next().await, sub) });
        tokio::task::yield_now().await;
        hub.resync_user(1);
        let (item, mut sub) = waiter.await.unwrap();
        assert_eq!(item, Some(Item::Resync { seq: 0 }));
        hub.publish(1, 5, Kind::Ack);
        assert_eq!(changes(&mut sub, 1).await, vec![(1, 5, Kind::Ack)]);
    }

    #[test]
    fn event_ids_round_trip() {
        let id = EventId {
            boot: 0xabc,
            seq: 42,
        };
        assert_eq!(id.to_string(), "abc-42");
        assert_eq!(EventId::parse("abc-42"), Some(id));
        assert_eq!(EventId::parse("abc"), None);
        assert_eq!(EventId::parse("xyz-1"), None);
    }
}
