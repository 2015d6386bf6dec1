//! The SQL of one commit: one multi-statement string per batch (see the module docs
//! of [`super`]), built from nothing but our own SQL text and integers.

use std::fmt::Write as _;

use super::CHANGES_CHANNEL;
use super::feed::{notify_payloads, touched};
use crate::domain::ReadPos;
use crate::store::Write;
use crate::store::batch::{Segment, Step, steps};
use crate::store::rows::id;

/// `'{1,2,3}'::bigint[]`: an array literal of our own integers.
fn bigints(values: impl IntoIterator<Item = u64>) -> String {
    let mut out = String::from("'{");
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}", id(v));
    }
    out.push_str("}'::bigint[]");
    out
}

/// `'{t,f}'::boolean[]`.
fn booleans(values: impl IntoIterator<Item = bool>) -> String {
    let mut out = String::from("'{");
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push(if v { 't' } else { 'f' });
    }
    out.push_str("}'::boolean[]");
    out
}

/// The SQL of one commit: every step of `writes` in order, then the change
/// notifications, in one explicit transaction.
///
/// The string contains nothing but our SQL text and integers (and `t`/`f`) formatted
/// by us from `u64`/`bool` values, so there is no injection risk in sending it
/// unparameterised. A multi-statement simple query runs as one implicit transaction
/// anyway; the explicit `begin`/`commit` only says so.
pub(super) fn commit_sql(
    writes: &[Write],
    channel_window: i64,
    mention_window: i64,
    node_id: u64,
) -> String {
    let mut sql = String::from("begin;\n");
    for step in steps(writes) {
        match step {
            Step::Merge(seg) => push_segment(&mut sql, &seg, channel_window, mention_window),
            Step::Remove(w) => push_removal(&mut sql, &w),
        }
    }
    let (users, channels) = touched(writes);
    let deleted = writes.iter().filter_map(|w| match *w {
        Write::DeleteChannel { channel } => {
            Some(format!("{{\"node\":{node_id},\"d\":[{channel}]}}"))
        }
        _ => None,
    });
    for payload in notify_payloads(node_id, &users, &channels)
        .into_iter()
        .chain(deleted)
    {
        // Payloads are digits, braces, brackets, commas, colons and double quotes only:
        // nothing to escape inside a single-quoted literal.
        let _ = writeln!(sql, "select pg_notify('{CHANGES_CHANNEL}', '{payload}');");
    }
    sql.push_str("commit;\n");
    sql
}

/// Writes one segment: one statement per table (plus the trims), rows in key order.
fn push_segment(sql: &mut String, seg: &Segment, channel_window: i64, mention_window: i64) {
    if !seg.messages.is_empty() {
        // channel_messages primary key: one unique probe per row; a tombstone is
        // sticky, and an unchanged row is not rewritten.
        let _ = writeln!(
            sql,
            "insert into channel_messages (channel_id, message_id, deleted) \
             select * from unnest({}, {}, {}) \
             on conflict (channel_id, message_id) do update \
             set deleted = channel_messages.deleted or excluded.deleted \
             where excluded.deleted and not channel_messages.deleted;",
            bigints(seg.messages.keys().map(|&(c, _)| c)),
            bigints(seg.messages.keys().map(|&(_, m)| m)),
            booleans(seg.messages.values().copied()),
        );
        let channels = bigints(seg.channels());
        // channel_messages primary key, scanned backwards per touched channel: the id
        // just past its newest `channel_window` becomes its floor (channels primary key).
        let _ = writeln!(
            sql,
            "insert into channels (channel_id, floor) \
             select c.channel_id, f.message_id from unnest({channels}) as c (channel_id) \
             cross join lateral (select m.message_id from channel_messages m \
               where m.channel_id = c.channel_id \
               order by m.message_id desc limit 1 offset {channel_window}) f \
             on conflict (channel_id) do update \
             set floor = greatest(channels.floor, excluded.floor) \
             where excluded.floor > channels.floor;"
        );
        // channel_messages primary key: a range delete of each touched channel's ids at
        // or below its floor (channels primary key).
        let _ = writeln!(
            sql,
            "delete from channel_messages m using channels c \
             where c.channel_id = any({channels}) and m.channel_id = c.channel_id \
             and m.message_id <= c.floor;"
        );
    }
    let states = seg.states();
    if !states.is_empty() {
        // read_states primary key: the lexicographic max of (epoch, pos); mentioned
        // states come at (0, 0), which creates them and never lowers one.
        let _ = writeln!(
            sql,
            "insert into read_states (user_id, channel_id, epoch, pos) \
             select * from unnest({}, {}, {}, {}) \
             on conflict (user_id, channel_id) do update \
             set epoch = excluded.epoch, pos = excluded.pos \
             where (excluded.epoch, excluded.pos) > (read_states.epoch, read_states.pos);",
            bigints(states.keys().map(|&(u, _)| u)),
            bigints(states.keys().map(|&(_, c)| c)),
            bigints(states.values().map(|r| r.epoch)),
            bigints(states.values().map(|r| r.pos)),
        );
    }
    if !seg.acks.is_empty() {
        // read_states primary key, rows the upsert above just locked: an ack that
        // this node applied in an older epoch than the stored one (another node
        // marked the state unread meanwhile) raises the position within the stored
        // epoch, unless it was made before that epoch began.
        let acks: Vec<((u64, u64), ReadPos, u64)> = seg
            .acks
            .iter()
            .filter_map(|(k, &at)| seg.reads.get(k).map(|&r| (*k, r, at)))
            .collect();
        let _ = writeln!(
            sql,
            "update read_states r set pos = t.pos \
             from unnest({}, {}, {}, {}, {}) as t (user_id, channel_id, epoch, pos, at) \
             where r.user_id = t.user_id and r.channel_id = t.channel_id \
             and r.epoch > t.epoch and t.at >= r.epoch and t.pos > r.pos;",
            bigints(acks.iter().map(|&((u, _), _, _)| u)),
            bigints(acks.iter().map(|&((_, c), _, _)| c)),
            bigints(acks.iter().map(|&(_, r, _)| r.epoch)),
            bigints(acks.iter().map(|&(_, r, _)| r.pos)),
            bigints(acks.iter().map(|&(_, _, at)| at)),
        );
    }
    if !seg.mentions.is_empty() {
        // mentions primary key: a set, so duplicates are dropped.
        let _ = writeln!(
            sql,
            "insert into mentions (user_id, channel_id, message_id) \
             select * from unnest({}, {}, {}) on conflict do nothing;",
            bigints(seg.mentions.iter().map(|&(u, _, _)| u)),
            bigints(seg.mentions.iter().map(|&(_, c, _)| c)),
            bigints(seg.mentions.iter().map(|&(_, _, m)| m)),
        );
        let keys = seg.mentioned_states();
        let keep = mention_window.max(1) - 1;
        // mentions primary key, scanned backwards per touched state: keep the newest
        // `mention_window` ids, range-delete the rest.
        let _ = writeln!(
            sql,
            "delete from mentions m using (select k.user_id, k.channel_id, t.message_id \
               from unnest({}, {}) as k (user_id, channel_id) \
               cross join lateral (select x.message_id from mentions x \
                 where x.user_id = k.user_id and x.channel_id = k.channel_id \
                 order by x.message_id desc limit 1 offset {keep}) t) cut \
             where m.user_id = cut.user_id and m.channel_id = cut.channel_id \
             and m.message_id < cut.message_id;",
            bigints(keys.iter().map(|&(u, _)| u)),
            bigints(keys.iter().map(|&(_, c)| c)),
        );
    }
    if !seg.settings.is_empty() {
        // settings primary key: each register is the lexicographic max of (stamp,
        // value), as `Settings::merge` has it; an unchanged row is not rewritten.
        let mute =
            "(excluded.muted_at, excluded.muted_until) > (settings.muted_at, settings.muted_until)";
        let level = "(excluded.level_at, excluded.level) > (settings.level_at, settings.level)";
        let _ = writeln!(
            sql,
            "insert into settings (user_id, channel_id, muted_until, muted_at, level, level_at) \
             select * from unnest({}, {}, {}, {}, {}, {}) \
             on conflict (user_id, channel_id) do update set \
             muted_until = case when {mute} then excluded.muted_until else settings.muted_until end, \
             muted_at = case when {mute} then excluded.muted_at else settings.muted_at end, \
             level = case when {level} then excluded.level else settings.level end, \
             level_at = case when {level} then excluded.level_at else settings.level_at end \
             where {mute} or {level};",
            bigints(seg.settings.keys().map(|&(u, _)| u)),
            bigints(seg.settings.keys().map(|&(_, c)| c)),
            bigints(seg.settings.values().map(|s| s.muted_until)),
            bigints(seg.settings.values().map(|s| s.muted_at)),
            bigints(seg.settings.values().map(|s| u64::from(s.level.code()))),
            bigints(seg.settings.values().map(|s| s.level_at)),
        );
    }
    if !seg.metas.is_empty() {
        // channel_meta primary key: the max of (at, parent_id, group_id).
        let _ = writeln!(
            sql,
            "insert into channel_meta (channel_id, parent_id, group_id, at) \
             select * from unnest({}, {}, {}, {}) \
             on conflict (channel_id) do update \
             set parent_id = excluded.parent_id, group_id = excluded.group_id, at = excluded.at \
             where (excluded.at, excluded.parent_id, excluded.group_id) \
               > (channel_meta.at, channel_meta.parent_id, channel_meta.group_id);",
            bigints(seg.metas.keys().copied()),
            bigints(seg.metas.values().map(|m| m.parent)),
            bigints(seg.metas.values().map(|m| m.group)),
            bigints(seg.metas.values().map(|m| m.at)),
        );
    }
}

/// Writes one removal.
fn push_removal(sql: &mut String, w: &Write) {
    match *w {
        Write::Leave { user, channel } => {
            let (u, c) = (id(user), id(channel));
            // read_states, mentions and settings primary keys.
            let _ = writeln!(
                sql,
                "delete from read_states where user_id = {u} and channel_id = {c};\n\
                 delete from mentions where user_id = {u} and channel_id = {c};\n\
                 delete from settings where user_id = {u} and channel_id = {c};"
            );
        }
        Write::DeleteChannel { channel } => {
            let c = id(channel);
            // read_states_by_channel, mentions_by_channel, settings_by_channel, and the
            // channel_messages, channels and channel_meta primary keys: index range
            // deletes.
            let _ = writeln!(
                sql,
                "delete from read_states where channel_id = {c};\n\
                 delete from mentions where channel_id = {c};\n\
                 delete from settings where channel_id = {c};\n\
                 delete from channel_messages where channel_id = {c};\n\
                 delete from channels where channel_id = {c};\n\
                 delete from channel_meta where channel_id = {c};"
            );
        }
        Write::DeleteUser { user } => {
            let u = id(user);
            // Range deletes on the user_id prefix of the read_states, mentions and
            // settings primary keys.
            let _ = writeln!(
                sql,
                "delete from read_states where user_id = {u};\n\
                 delete from mentions where user_id = {u};\n\
                 delete from settings where user_id = {u};"
            );
        }
        Write::ReadPos { .. }
        | Write::Mention { .. }
        | Write::Message { .. }
        | Write::Settings { .. }
        | Write::ChannelMeta { .. } => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(super) mod tests {
    use super::*;

    /// A read position write (shared with the feed's tests).
    pub(in crate::store::postgres) fn read(user: u64, channel: u64, pos: u64) -> Write {
        Write::ReadPos {
            user,
            channel,
            epoch: 0,
            pos,
            at: 0,
        }
    }

    /// A message write (shared with the feed's tests).
    pub(in crate::store::postgres) fn msg(channel: u64, message: u64, deleted: bool) -> Write {
        Write::Message {
            channel,
            message,
            deleted,
        }
    }

    #[test]
    fn a_batch_splits_into_segments_at_removals_only() {
        let writes = [
            read(1, 10, 5),
            msg(10, 7, false),
            read(1, 10, 3),
            Write::Leave {
                user: 1,
                channel: 10,
            },
            read(1, 10, 2),
            msg(10, 7, true),
            msg(10, 7, false),
            Write::DeleteChannel { channel: 10 },
            Write::DeleteChannel { channel: 11 },
            Write::Mention {
                user: 2,
                channel: 11,
                message: 9,
            },
        ];
        let steps = steps(&writes);
        assert_eq!(steps.len(), 6, "{steps:?}");
        let Step::Merge(first) = &steps[0] else {
            panic!("{steps:?}")
        };
        assert_eq!(first.reads[&(1, 10)], ReadPos { epoch: 0, pos: 5 });
        assert!(!first.messages[&(10, 7)]);
        assert_eq!(steps[1], Step::Remove(writes[3]));
        let Step::Merge(second) = &steps[2] else {
            panic!("{steps:?}")
        };
        assert_eq!(second.reads[&(1, 10)].pos, 2);
        assert!(second.messages[&(10, 7)], "tombstones are sticky");
        assert_eq!(steps[3], Step::Remove(writes[7]));
        assert_eq!(steps[4], Step::Remove(writes[8]));
        let Step::Merge(last) = &steps[5] else {
            panic!("{steps:?}")
        };
        assert!(last.mentions.contains(&(2, 11, 9)));
        assert_eq!(last.states()[&(2, 11)], ReadPos::default());
    }

    #[test]
    fn commit_sql_is_one_transaction_with_sorted_rows_and_removals_in_order() {
        let writes = [
            read(3, 10, 5),
            read(1, 20, 4),
            msg(20, 9, false),
            msg(10, 8, true),
            Write::Leave {
                user: 1,
                channel: 20,
            },
            read(1, 20, 1),
        ];
        let sql = commit_sql(&writes, 200, 200, 42);
        assert!(sql.starts_with("begin;\n"), "{sql}");
        assert!(sql.ends_with("commit;\n"), "{sql}");
        let upsert = sql.find("insert into read_states").unwrap();
        let leave = sql
            .find("delete from read_states where user_id = 1 and channel_id = 20")
            .unwrap();
        let again = sql.rfind("insert into read_states").unwrap();
        let notify = sql.find("pg_notify").unwrap();
        assert!(upsert < leave && leave < again && again < notify, "{sql}");
        assert!(
            sql.contains("unnest('{1,3}'::bigint[], '{20,10}'::bigint[]"),
            "{sql}"
        );
        assert!(
            sql.contains("unnest('{10,20}'::bigint[], '{8,9}'::bigint[], '{t,f}'::boolean[])"),
            "{sql}"
        );
        assert!(sql.contains("offset 200"), "{sql}");
        assert!(
            sql.contains(r#"'{"node":42,"u":[1,3],"c":[10,20]}'"#),
            "{sql}"
        );
        assert!(!sql.contains("''"), "no empty literals: {sql}");
    }

    #[test]
    fn a_mention_only_segment_creates_states_and_trims_per_state() {
        let writes = [
            Write::Mention {
                user: 5,
                channel: 6,
                message: 7,
            },
            Write::Mention {
                user: 5,
                channel: 6,
                message: 8,
            },
        ];
        let sql = commit_sql(&writes, 10, 4, 1);
        assert!(
            sql.contains(
                "unnest('{5}'::bigint[], '{6}'::bigint[], '{0}'::bigint[], '{0}'::bigint[])"
            ),
            "{sql}"
        );
        assert!(
            sql.contains("unnest('{5,5}'::bigint[], '{6,6}'::bigint[], '{7,8}'::bigint[])"),
            "{sql}"
        );
        assert!(sql.contains("offset 3"), "keeps the newest 4: {sql}");
        assert!(!sql.contains("channel_messages"), "{sql}");
    }

    #[test]
    fn an_ack_gets_an_update_within_the_stored_epoch_after_the_upsert() {
        let writes = [
            Write::ReadPos {
                user: 4,
                channel: 5,
                epoch: 0,
                pos: 9,
                at: crate::store::ACK_NOW,
            },
            read(6, 5, 2),
        ];
        let sql = commit_sql(&writes, 10, 4, 1);
        let upsert = sql.find("insert into read_states").unwrap();
        let update = sql.find("update read_states r set pos = t.pos").unwrap();
        assert!(upsert < update, "{sql}");
        assert!(
            sql.contains(&format!(
                "unnest('{{4}}'::bigint[], '{{5}}'::bigint[], '{{0}}'::bigint[], '{{9}}'::bigint[], '{{{}}}'::bigint[])",
                i64::MAX
            )),
            "only the ack, with its stamp: {sql}"
        );
        assert!(sql.contains("r.epoch > t.epoch and t.at >= r.epoch and t.pos > r.pos"));
        let plain = commit_sql(&[read(6, 5, 2)], 10, 4, 1);
        assert!(!plain.contains("update read_states"), "{plain}");
    }

    #[test]
    fn settings_and_metadata_upsert_in_key_order_and_removals_take_their_rows() {
        use crate::domain::{ChannelMeta, Level, MUTED_FOREVER, Settings};
        let settings = |user, channel, settings| Write::Settings {
            user,
            channel,
            settings,
        };
        let meta = |channel, group, at| Write::ChannelMeta {
            channel,
            meta: ChannelMeta {
                parent: 0,
                group,
                at,
            },
        };
        let writes = [
            settings(3, 10, Settings::written(Some(MUTED_FOREVER), None, 5)),
            settings(1, 20, Settings::written(None, Some(Level::Nothing), 6)),
            settings(3, 10, Settings::written(Some(7), Some(Level::Mentions), 5)),
            meta(30, 2, 1),
            meta(20, 1, 1),
            meta(30, 4, 1),
            Write::DeleteUser { user: 3 },
            Write::Leave {
                user: 1,
                channel: 20,
            },
            Write::DeleteChannel { channel: 30 },
        ];
        let sql = commit_sql(&writes, 10, 4, 1);
        // Keys ascending; each register of (3, 10) merged in memory first (the mute
        // at stamp 5: the larger value wins the tie).
        assert!(
            sql.contains(&format!(
                "unnest('{{1,3}}'::bigint[], '{{20,10}}'::bigint[], '{{0,{}}}'::bigint[], \
                 '{{0,5}}'::bigint[], '{{2,1}}'::bigint[], '{{6,5}}'::bigint[])",
                i64::MAX
            )),
            "{sql}"
        );
        assert!(
            sql.contains(
                "unnest('{20,30}'::bigint[], '{0,0}'::bigint[], '{1,4}'::bigint[], '{1,1}'::bigint[])"
            ),
            "{sql}"
        );
        assert!(
            sql.contains(
                "where (excluded.muted_at, excluded.muted_until) > (settings.muted_at, settings.muted_until) \
                 or (excluded.level_at, excluded.level) > (settings.level_at, settings.level);"
            ),
            "{sql}"
        );
        let upsert = sql.find("insert into settings").unwrap();
        let delete_user = sql.find("delete from settings where user_id = 3;").unwrap();
        let leave = sql
            .find("delete from settings where user_id = 1 and channel_id = 20;")
            .unwrap();
        let delete_channel = sql
            .find("delete from settings where channel_id = 30;")
            .unwrap();
        assert!(upsert < delete_user && delete_user < leave && leave < delete_channel);
        assert!(sql.contains("delete from read_states where user_id = 3;"));
        assert!(sql.contains("delete from mentions where user_id = 3;"));
        assert!(sql.contains("delete from channel_meta where channel_id = 30;"));
        assert!(!sql.contains("insert into read_states"), "{sql}");
    }
}
