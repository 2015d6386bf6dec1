//! Bytes per read state held by the cache, at the `medium` preset's shape (10 read
//! states per user, 50 per channel, 20 message ids per channel), all overhead
//! included: the cache's own exact count, jemalloc's allocated bytes, and the
//! process's resident set growth.
//!
//! `cargo run --release --example cache_memory -- 1000000 10000000`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use readstate::cache::{Cache, Lookup};
use readstate::domain::{Caps, ChannelWindow, ReadPos, UserStates};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// splitmix64: deterministic ids without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn rss() -> u64 {
    readstate::metrics::resident_bytes().unwrap_or(0)
}

fn main() {
    let counts: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a read-state count"))
        .collect();
    let counts = if counts.is_empty() {
        vec![1_000_000]
    } else {
        counts
    };
    let caps = Caps::default();
    println!(
        "| read states | users | channels | cache-counted B/state | allocated B/state | RSS delta B/state |"
    );
    println!("|---|---|---|---|---|---|");
    for states in counts {
        let rss0 = rss();
        let alloc0 = readstate::metrics::allocated_bytes().unwrap_or(0);
        let users = states / 10;
        let channels = (states / 50).max(1);
        let cache = Cache::new(u64::MAX / 2);
        let mut rng = Rng(42);
        for c in 1..=channels {
            let mut w = ChannelWindow::new();
            for m in 0..20 {
                w.observe(c * 1_000 + m + 1, false, caps.channel_window());
            }
            let mut shard = cache.lock(cache.channel_shard(c));
            assert!(matches!(shard.lookup_channel(c), Lookup::Miss));
            shard.finish_channel_load(c, w);
        }
        for u in 1..=users {
            let mut s = UserStates::new();
            while s.len() < 10 {
                let c = rng.next() % channels + 1;
                s.merge_read(
                    c,
                    ReadPos {
                        epoch: 0,
                        pos: c * 1_000 + rng.next() % 20,
                    },
                );
            }
            let mut shard = cache.lock(cache.user_shard(u));
            assert!(matches!(shard.lookup_user(u), Lookup::Miss));
            shard.finish_user_load(u, s);
        }
        let stats = cache.stats();
        let alloc = readstate::metrics::allocated_bytes()
            .unwrap_or(0)
            .saturating_sub(alloc0);
        let rss_delta = rss().saturating_sub(rss0);
        let per = |b: u64| b as f64 / stats.read_states as f64;
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} |",
            stats.read_states,
            stats.users,
            stats.channels,
            per(stats.bytes),
            per(alloc),
            per(rss_delta)
        );
        drop(cache);
    }
}
