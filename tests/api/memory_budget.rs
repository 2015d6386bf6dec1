//! The cache stays within `cache.max_bytes` under more read states than fit, and
//! evicted users reload exactly from storage.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_json, eventually, metric, read_states, spawn_app_with, state};

const BUDGET: u64 = 256 * 1024;
const USERS: u64 = 10_000;
const CHANNELS: [u64; 3] = [1, 2, 3];
const HEAD: u64 = 5;

/// Where user `u` has read up to (1..=HEAD), different across users and channels.
fn read_up_to(user: u64, channel: u64) -> u64 {
    (user + channel) % HEAD + 1
}

fn expected(user: u64) -> Value {
    let states: Vec<Value> = CHANNELS
        .iter()
        .map(|&c| {
            let read = read_up_to(user, c);
            state(c, read, HEAD, u32::try_from(HEAD - read).expect("small"), 0)
        })
        .collect();
    read_states(&states)
}

#[tokio::test]
async fn the_cache_stays_within_its_budget_and_evicted_users_reload_exactly() {
    let app = spawn_app_with(|s| {
        s.cache.max_bytes = readstate::config::ByteSize::kib(256);
        // With the commit log an entry is evictable once a checkpoint has put it in
        // the database; checkpoint often, so the test does not wait on the default
        // interval (10 s).
        s.storage.checkpoint_interval_ms = 100;
    })
    .await;
    for channel in CHANNELS {
        for message in 1..=HEAD {
            app.message_ok(channel, message, None, &[]).await;
        }
    }
    let ops: Vec<Value> = (1..=USERS)
        .flat_map(|u| {
            CHANNELS.iter().map(move |&c| {
                json!({ "op": "ack", "user_id": u.to_string(), "channel_id": c.to_string(), "message_id": read_up_to(u, c).to_string() })
            })
        })
        .collect();
    for chunk in ops.chunks(1000) {
        let (status, _, body) = app.batch(json!({ "ops": chunk })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let results = body["results"].as_array().expect("results");
        assert!(
            results.iter().all(|r| r == &json!({ "ok": true })),
            "{body}"
        );
    }

    // Checkpoints that can wait run under SCHED_IDLE, which gets almost no CPU while
    // the machine is busy with other work (a build beside the tests, say): patience
    // is for that, not for the service, which is done in well under a second.
    let (bytes, evictions) = eventually(std::time::Duration::from_secs(60), || async {
        let text = app.metrics().await;
        let bytes = metric(&text, "readstate_cache_bytes").ok_or("no readstate_cache_bytes")?;
        let evictions = metric(&text, "readstate_cache_evictions_total").unwrap_or(0.0);
        // Entries not yet in the database cannot be evicted: the cache is back within
        // its budget once a checkpoint has covered the last writes.
        if evictions > 0.0 && bytes <= BUDGET as f64 {
            Ok((bytes, evictions))
        } else {
            Err(format!("{evictions} evictions; {bytes} bytes cached"))
        }
    })
    .await;
    assert!(
        bytes <= BUDGET as f64,
        "readstate_cache_bytes {bytes} > {BUDGET}"
    );
    assert!(evictions > 0.0);

    for user in 1..=500 {
        assert_json(
            &app.read_states(user, "").await,
            StatusCode::OK,
            &expected(user),
        );
    }
    for user in (501..=USERS).step_by(97) {
        assert_json(
            &app.read_states(user, "").await,
            StatusCode::OK,
            &expected(user),
        );
    }
}
