//! Channel metadata, notification settings, groups, threads, and deleting and
//! exporting a user, against a real readstate: each method with its answers and
//! errors, the new ops in batches and write streams, and their live events.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use readstate_client::{
    Channel, Client, Error, Event, ExportReply, Level, Mute, Op, ReadState, Settings,
    StoredReadState, Summary, Threads,
};
use support::{Server, next_event, wait_for};

const U: u64 = 1; // a reader
const A: u64 = 2; // an author
const V: u64 = 3; // another reader
const C: u64 = 100; // a channel
const T: u64 = 101; // a thread under C
const T2: u64 = 102; // another thread under C
const T3: u64 = 103; // a third one
const D: u64 = 200; // another channel
const E: u64 = 300; // a channel in no group
const G: u64 = 7; // a guild
const H: u64 = 8; // another guild

fn summary(unread_channels: u64, mentions: u64, unread_threads: u64) -> Summary {
    Summary {
        unread_channels,
        mentions,
        unread_threads,
    }
}

fn channel(id: u64, parent: Option<u64>, group: Option<u64>, last: u64) -> Channel {
    Channel {
        channel_id: id,
        parent_id: parent,
        group_id: group,
        last_message_id: last,
    }
}

fn ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn channels_of(states: &[ReadState]) -> Vec<u64> {
    states.iter().map(|s| s.channel_id).collect()
}

/// The read state, which must exist.
async fn state(client: &Client, user: u64, channel: u64) -> ReadState {
    client
        .read_state(user, channel)
        .await
        .expect("read")
        .expect("a read state")
}

fn assert_invalid(e: &Error, field: &str) {
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    assert_eq!(e.field(), Some(field), "{e}");
    assert!(!e.is_retryable());
}

#[tokio::test(flavor = "multi_thread")]
async fn set_channel_and_channel_answer_the_metadata() {
    let server = Server::start();
    let client = server.client().await;

    // A channel the server has never seen is None, not an error.
    assert_eq!(client.channel(C).await.expect("channel"), None);

    // Channel C in guild G; its answer is the channel.
    assert_eq!(
        client.set_channel(C, None, Some(G)).await.expect("set"),
        channel(C, None, Some(G), 0)
    );
    assert_eq!(
        client.channel(C).await.expect("channel"),
        Some(channel(C, None, Some(G), 0))
    );
    // Setting it again is idempotent.
    assert_eq!(
        client.set_channel(C, None, Some(G)).await.expect("set"),
        channel(C, None, Some(G), 0)
    );
    // The channel's head.
    client
        .message_created(C, 10, Some(A), &[])
        .await
        .expect("message");
    assert_eq!(
        client.channel(C).await.expect("channel"),
        Some(channel(C, None, Some(G), 10))
    );
    // A channel known from its messages only has no metadata.
    client
        .message_created(D, 20, Some(A), &[])
        .await
        .expect("message");
    assert_eq!(
        client.channel(D).await.expect("channel"),
        Some(channel(D, None, None, 20))
    );

    // T is a thread under C (its group is C's, not its own).
    assert_eq!(
        client.set_channel(T, Some(C), None).await.expect("set"),
        channel(T, Some(C), None, 0)
    );
    // Setting it again replaces both.
    assert_eq!(
        client.set_channel(D, None, Some(H)).await.expect("set"),
        channel(D, None, Some(H), 20)
    );
    assert_eq!(
        client.set_channel(D, None, None).await.expect("unset"),
        channel(D, None, None, 20)
    );

    // A parent equal to the channel, or a cycle, is refused on parent_id.
    let e = client
        .set_channel(C, Some(C), None)
        .await
        .expect_err("its own parent");
    assert_invalid(&e, "parent_id");
    let e = client
        .set_channel(C, Some(T), Some(G))
        .await
        .expect_err("a cycle");
    assert_invalid(&e, "parent_id");
    assert_eq!(
        client.channel(C).await.expect("channel"),
        Some(channel(C, None, Some(G), 10))
    );
    // Ids of 0.
    assert_invalid(
        &client.set_channel(0, None, None).await.expect_err("0"),
        "channel_id",
    );
    assert_invalid(
        &client.set_channel(C, None, Some(0)).await.expect_err("0"),
        "group_id",
    );
    assert_invalid(&client.channel(0).await.expect_err("0"), "channel_id");
}

#[tokio::test(flavor = "multi_thread")]
async fn set_channel_at_keeps_the_newest() {
    let server = Server::start();
    let client = server.client().await;

    assert_eq!(
        client
            .set_channel_at(C, None, Some(G), ms(2))
            .await
            .expect("set"),
        channel(C, None, Some(G), 0)
    );
    // An older write (a redelivered one) changes nothing.
    assert_eq!(
        client
            .set_channel_at(C, None, Some(H), ms(1))
            .await
            .expect("old"),
        channel(C, None, Some(G), 0)
    );
    // A write without `at` is stamped on arrival: newer than both...
    assert_eq!(
        client.set_channel(C, None, Some(H)).await.expect("set"),
        channel(C, None, Some(H), 0)
    );
    // ... so that an old stamp cannot undo it.
    assert_eq!(
        client
            .set_channel_at(C, None, Some(G), ms(3))
            .await
            .expect("old"),
        channel(C, None, Some(H), 0)
    );
    let later = SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(
        client
            .set_channel_at(C, None, Some(G), later)
            .await
            .expect("newer"),
        channel(C, None, Some(G), 0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn update_settings_mutes_and_sets_the_level() {
    let server = Server::start();
    let client = server.client().await;

    client
        .message_created(C, 1, Some(A), &[])
        .await
        .expect("message");
    client
        .message_created(C, 2, Some(A), &[U])
        .await
        .expect("message");
    client
        .message_created(D, 5, Some(A), &[])
        .await
        .expect("message");
    let joined = client.join(U, C, Some(0)).await.expect("join");
    assert_eq!(
        (joined.first_unread_message_id, joined.muted, joined.level()),
        (Some(1), false, Level::All)
    );
    assert_eq!(joined.level, "all");
    client.join(U, D, Some(0)).await.expect("join");
    assert_eq!(client.summary(U).await.expect("summary"), summary(2, 1, 0));

    // Muted: not an unread channel, but the mention still counts.
    let muted = client
        .update_settings(U, C, Settings::new().mute(Mute::Forever))
        .await
        .expect("mute");
    assert!(muted.muted);
    assert_eq!(muted.level(), Level::All);
    assert_eq!((muted.unread_count, muted.mention_count), (2, 1));
    assert!(state(&client, U, C).await.muted);
    assert_eq!(client.summary(U).await.expect("summary"), summary(1, 1, 0));

    // Level nothing: neither unread nor mentions.
    let quiet = client
        .update_settings(U, D, Settings::new().level(Level::Nothing))
        .await
        .expect("level");
    assert_eq!(
        (quiet.level(), quiet.level.as_str()),
        (Level::Nothing, "nothing")
    );
    assert_eq!(client.summary(U).await.expect("summary"), summary(0, 1, 0));

    // Unmuted; then level mentions: only the mention counts.
    let state_c = client
        .update_settings(U, C, Settings::new().unmute())
        .await
        .expect("unmute");
    assert!(!state_c.muted);
    assert_eq!(client.summary(U).await.expect("summary"), summary(1, 1, 0));
    client
        .update_settings(U, C, Settings::new().level(Level::Mentions))
        .await
        .expect("level");
    assert_eq!(client.summary(U).await.expect("summary"), summary(0, 1, 0));

    // Fields left None keep their value.
    let kept = client
        .update_settings(U, C, Settings::new())
        .await
        .expect("nothing");
    assert_eq!((kept.muted, kept.level()), (false, Level::Mentions));

    // Muted until a time: muted before it, not after it.
    let past = client
        .update_settings(U, C, Settings::new().mute(Mute::Until(1000)))
        .await
        .expect("mute until the past");
    assert!(!past.muted);
    let hour = SystemTime::now() + Duration::from_secs(3600);
    let until = client
        .update_settings(U, C, Settings::new().mute(Mute::until(hour)))
        .await
        .expect("mute for an hour");
    assert!(until.muted);

    // Per field, the newest `at` wins: a settings write made long ago (a
    // redelivered one) changes nothing; fields it leaves None are not touched.
    let stale = client
        .update_settings(
            U,
            C,
            Settings {
                muted_until: Some(Mute::Off),
                level: Some(Level::All),
                at: Some(1),
            },
        )
        .await
        .expect("stale settings");
    assert_eq!((stale.muted, stale.level()), (true, Level::Mentions));
    let newer = client
        .update_settings(
            U,
            C,
            Settings::new()
                .level(Level::All)
                .made_at(SystemTime::now() + Duration::from_secs(60)),
        )
        .await
        .expect("newer settings");
    assert_eq!((newer.muted, newer.level()), (true, Level::All));

    // Settings create the read state, like a join.
    assert_eq!(client.read_state(V, C).await.expect("read"), None);
    let created = client
        .update_settings(V, C, Settings::new().level(Level::Mentions))
        .await
        .expect("create");
    assert_eq!((created.channel_id, created.level()), (C, Level::Mentions));
    assert_eq!(state(&client, V, C).await, created);

    // Errors: past 2^63-1, and ids of 0.
    let e = client
        .update_settings(U, C, Settings::new().mute(Mute::Until(u64::MAX)))
        .await
        .expect_err("too late");
    assert_invalid(&e, "muted_until");
    let e = client
        .update_settings(0, C, Settings::new())
        .await
        .expect_err("user 0");
    assert_invalid(&e, "user_id");
    let e = client
        .update_settings(U, 0, Settings::new())
        .await
        .expect_err("channel 0");
    assert_invalid(&e, "channel_id");
}

/// Guild G holds channel C and its thread T; guild H holds D; E is in none.
/// U has read nothing: C has a mention of U, T, D and E one message each.
async fn guilds(client: &Client) {
    client.set_channel(C, None, Some(G)).await.expect("C");
    client.set_channel(T, Some(C), None).await.expect("T");
    client.set_channel(D, None, Some(H)).await.expect("D");
    for (channel, message, mentions) in [(C, 1, &[U][..]), (T, 2, &[]), (D, 3, &[]), (E, 4, &[])] {
        client
            .message_created(channel, message, Some(A), mentions)
            .await
            .expect("message");
        client.join(U, channel, Some(0)).await.expect("join");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn group_summary_and_groups_count_per_guild() {
    let server = Server::start();
    let client = server.client().await;
    guilds(&client).await;

    // Threads are not channels: they have their own count.
    assert_eq!(client.summary(U).await.expect("summary"), summary(3, 1, 1));
    // T is in G through its parent.
    assert_eq!(
        client.group_summary(U, G).await.expect("group summary"),
        summary(1, 1, 1)
    );
    assert_eq!(
        client.group_summary(U, H).await.expect("group summary"),
        summary(1, 0, 0)
    );
    assert_eq!(
        client.group_summary(U, 999).await.expect("no such group"),
        summary(0, 0, 0)
    );
    assert_invalid(
        &client.group_summary(U, 0).await.expect_err("group 0"),
        "group_id",
    );

    // Every guild's badges in one call.
    assert_eq!(
        client.groups(U).await.expect("groups"),
        BTreeMap::from([(G, summary(1, 1, 1)), (H, summary(1, 0, 0))])
    );
    // A muted thread is not an unread thread.
    client
        .update_settings(U, T, Settings::new().mute(Mute::Forever))
        .await
        .expect("mute");
    assert_eq!(
        client.groups(U).await.expect("groups"),
        BTreeMap::from([(G, summary(1, 1, 0)), (H, summary(1, 0, 0))])
    );
    // A user without read states has no groups.
    assert_eq!(client.groups(V).await.expect("groups"), BTreeMap::new());
    assert_invalid(&client.groups(0).await.expect_err("user 0"), "user_id");
}

#[tokio::test(flavor = "multi_thread")]
async fn read_states_in_group_filter_by_guild() {
    let server = Server::start();
    let client = server.client().await;
    guilds(&client).await;

    assert_eq!(
        channels_of(&client.read_states(U, &[]).await.expect("all")),
        vec![C, T, D, E]
    );
    let in_g = client.read_states_in_group(U, G).await.expect("in G");
    assert_eq!(channels_of(&in_g), vec![C, T]);
    assert_eq!(in_g[0], state(&client, U, C).await);
    assert_eq!(
        channels_of(&client.read_states_in_group(U, H).await.expect("in H")),
        vec![D]
    );
    assert_eq!(
        client.read_states_in_group(U, 999).await.expect("none"),
        vec![]
    );
    assert_invalid(
        &client
            .read_states_in_group(U, 0)
            .await
            .expect_err("group 0"),
        "group_id",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn threads_page_through_the_unread_threads_of_a_channel() {
    let server = Server::start();
    let client = server.client().await;
    client.set_channel(C, None, Some(G)).await.expect("C");
    for thread in [T, T2, T3] {
        client
            .set_channel(thread, Some(C), None)
            .await
            .expect("thread");
        client.join(U, thread, Some(0)).await.expect("join");
    }
    // T unread, T2 with a mention, T3 read.
    client
        .message_created(T, 1, Some(A), &[])
        .await
        .expect("message");
    client
        .message_created(T2, 2, Some(A), &[U])
        .await
        .expect("message");
    client
        .message_created(T3, 3, Some(A), &[])
        .await
        .expect("message");
    client.ack(U, T3, 3).await.expect("ack");

    let all = client.threads(U, C, None, None).await.expect("threads");
    assert_eq!(
        all,
        Threads {
            unread_threads: 2,
            mentions: 1,
            read_states: vec![state(&client, U, T).await, state(&client, U, T2).await],
            next: None,
        }
    );
    assert_eq!(all.read_states[0].first_unread_message_id, Some(1));

    // One at a time.
    let first = client.threads(U, C, None, Some(1)).await.expect("page 1");
    assert_eq!(
        (channels_of(&first.read_states), first.next),
        (vec![T], Some(T))
    );
    assert_eq!((first.unread_threads, first.mentions), (2, 1));
    let second = client
        .threads(U, C, first.next, Some(1))
        .await
        .expect("page 2");
    assert_eq!(
        (channels_of(&second.read_states), second.next),
        (vec![T2], None)
    );
    assert_invalid(
        &client
            .threads(U, C, None, Some(0))
            .await
            .expect_err("limit 0"),
        "limit",
    );

    // Level mentions: T is no longer an unread thread, T2's mention counts.
    client
        .update_settings(U, T, Settings::new().level(Level::Mentions))
        .await
        .expect("level");
    let threads = client.threads(U, C, None, None).await.expect("threads");
    assert_eq!((threads.unread_threads, threads.mentions), (1, 1));

    // A channel without threads, and a user without read states.
    assert_eq!(
        client.threads(U, D, None, None).await.expect("none"),
        Threads::default()
    );
    assert_eq!(
        client.threads(V, C, None, None).await.expect("none"),
        Threads::default()
    );
    assert_invalid(
        &client.threads(U, 0, None, None).await.expect_err("0"),
        "channel_id",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn export_user_answers_everything_stored() {
    let server = Server::start();
    let client = server.client().await;

    // Nothing stored about an unknown user.
    assert_eq!(
        client.export_user(U).await.expect("export"),
        ExportReply {
            user_id: U,
            read_states: vec![],
        }
    );

    client.join(U, C, Some(0)).await.expect("join");
    client
        .message_created(C, 1, Some(A), &[U])
        .await
        .expect("message");
    client
        .message_created(C, 2, Some(A), &[U])
        .await
        .expect("message");
    client
        .update_settings(
            U,
            C,
            Settings::new()
                .mute(Mute::Forever)
                .level(Level::Mentions)
                .made_at(ms(5000)),
        )
        .await
        .expect("settings");
    client.join(U, D, Some(0)).await.expect("join");
    client.mark_unread(U, D, 1).await.expect("unread");

    let export = client.export_user(U).await.expect("export");
    assert_eq!(export.user_id, U);
    assert_eq!(
        export.read_states[0],
        StoredReadState {
            channel_id: C,
            epoch: 0,
            last_read_message_id: 0,
            mention_ids: vec![1, 2],
            muted_until: Mute::FOREVER_MS,
            muted_at: 5000,
            level: "mentions".to_owned(),
            level_at: 5000,
        }
    );
    assert_eq!(export.read_states[0].mute(), Mute::Forever);
    assert_eq!(export.read_states[0].level(), Level::Mentions);
    let d = &export.read_states[1];
    assert_eq!((d.channel_id, d.mention_ids.len()), (D, 0));
    // Marked unread: the epoch is the time of it.
    assert!(d.epoch > 0, "{d:?}");
    assert_eq!(
        (d.mute(), d.level(), d.muted_at),
        (Mute::Off, Level::All, 0)
    );
    assert_eq!(export.read_states.len(), 2);

    assert_invalid(&client.export_user(0).await.expect_err("0"), "user_id");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_user_removes_every_read_state_of_the_user() {
    let server = Server::start();
    let client = server.client().await;
    client
        .message_created(C, 1, Some(A), &[U, V])
        .await
        .expect("message");
    for user in [U, V] {
        client.join(user, C, Some(0)).await.expect("join");
        client.join(user, D, Some(0)).await.expect("join");
        client.ack(user, C, 1).await.expect("ack");
    }
    client
        .update_settings(U, D, Settings::new().mute(Mute::Forever))
        .await
        .expect("mute");

    client.delete_user(U).await.expect("delete user");
    // Idempotent.
    client.delete_user(U).await.expect("delete user again");
    assert_eq!(
        client.read_states(U, &[]).await.expect("read states"),
        vec![]
    );
    assert_eq!(client.read_state(U, C).await.expect("read"), None);
    assert_eq!(client.summary(U).await.expect("summary"), summary(0, 0, 0));
    assert_eq!(client.groups(U).await.expect("groups"), BTreeMap::new());
    assert_eq!(
        client.export_user(U).await.expect("export").read_states,
        vec![]
    );
    // Gone from the read receipts; the other user is untouched.
    assert_eq!(
        client
            .readers(C, 1, None, None)
            .await
            .expect("readers")
            .readers,
        vec![A, V]
    );
    assert_eq!(
        client.read_states(V, &[]).await.expect("read states").len(),
        2
    );

    // A later write about the user starts afresh (no settings kept).
    let again = client.join(U, D, Some(0)).await.expect("join");
    assert!(!again.muted);
    assert_eq!(again.level(), Level::All);

    assert_invalid(&client.delete_user(0).await.expect_err("0"), "user_id");
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_and_write_streams_carry_the_new_ops() {
    let server = Server::start();
    let client = server.client().await;
    client.join(V, E, Some(0)).await.expect("join");

    let results = client
        .batch(vec![
            Op::set_channel(C, None, Some(G)),
            Op::set_channel_at(T, Some(C), None, ms(10)),
            Op::message_created(T, 1, Some(A), &[U]),
            Op::join(U, T, Some(0)),
            Op::update_settings(U, T, Settings::new().level(Level::Nothing)),
            Op::set_channel(C, Some(C), None), // bad: its own parent
            Op::update_settings(U, C, Settings::new().mute(Mute::Until(u64::MAX))), // bad
            Op::delete_user(V),
        ])
        .await
        .expect("batch");
    assert_eq!(results.len(), 8);
    for (i, result) in results.iter().enumerate() {
        match i {
            5 => assert_eq!(
                result.as_ref().expect_err("bad").field.as_deref(),
                Some("ops[5].parent_id")
            ),
            6 => assert_eq!(
                result.as_ref().expect_err("bad").field.as_deref(),
                Some("ops[6].muted_until")
            ),
            _ => assert!(result.is_ok(), "op {i}: {result:?}"),
        }
    }
    assert_eq!(
        client.channel(T).await.expect("channel"),
        Some(channel(T, Some(C), None, 1))
    );
    assert_eq!(
        client.channel(C).await.expect("channel"),
        Some(channel(C, None, Some(G), 0))
    );
    assert_eq!(state(&client, U, T).await.level(), Level::Nothing);
    assert_eq!(
        client.group_summary(U, G).await.expect("summary"),
        summary(0, 0, 0)
    );
    assert_eq!(
        client.read_states(V, &[]).await.expect("read states"),
        vec![]
    );

    let results = client
        .write_iter(vec![
            Op::update_settings(U, T, Settings::new().level(Level::All)),
            Op::set_channel(D, None, Some(H)),
            Op::delete_user(0), // bad
            Op::delete_user(U),
        ])
        .await
        .expect("write");
    assert_eq!(results.len(), 4);
    assert_eq!(
        results[2].as_ref().expect_err("bad").field.as_deref(),
        Some("ops[2].user_id")
    );
    assert!(results[0].is_ok() && results[1].is_ok() && results[3].is_ok());
    assert_eq!(
        client.channel(D).await.expect("channel"),
        Some(channel(D, None, Some(H), 0))
    );
    assert_eq!(client.read_state(U, T).await.expect("read"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_and_user_deletion_are_live_events() {
    let server = Server::start();
    let client = server.client().await;
    client.join(U, C, Some(0)).await.expect("join");

    let mut events = client.subscribe(U);
    let ready = next_event(&mut events).await.expect("ready");
    assert!(matches!(ready, Event::Ready { .. }), "{ready:?}");

    client
        .update_settings(U, C, Settings::new().mute(Mute::Forever))
        .await
        .expect("mute");
    let event = wait_for(
        &mut events,
        |e| matches!(e, Event::Change { kind, .. } if kind == "settings"),
    )
    .await;
    let Event::Change {
        channel,
        read_state,
        ..
    } = event
    else {
        unreachable!()
    };
    assert_eq!(channel, C);
    assert!(read_state.expect("the read state").muted);

    client.delete_user(U).await.expect("delete user");
    let event = wait_for(
        &mut events,
        |e| matches!(e, Event::Change { kind, .. } if kind == "user_deleted"),
    )
    .await;
    let Event::Change {
        channel,
        read_state,
        ..
    } = event
    else {
        unreachable!()
    };
    assert_eq!((channel, read_state), (C, None));
}
