-- Notification settings and channel metadata (issue 14): the same tables as the
-- SQLite schema, with ids and stamps as BIGINT. Every row is written as a merge
-- (lexicographic max of (stamp, value) per register), so a replayed batch is
-- harmless and several nodes writing the same rows converge.

-- Notification settings of a read state: two registers, each with the stamp (ms) of
-- the write that set it. muted_until: 0 = not muted, 2^63-1 = until unmuted; level:
-- 0 all, 1 mentions, 2 nothing. A row whose read state has no row is ignored (loads
-- are driven by read_states); leaving a channel removes it.
-- The primary key serves loading a user's states (joined on the full key), leave
-- and deleting a user (a range on the user_id prefix).
create table settings (
    user_id     bigint not null,
    channel_id  bigint not null,
    muted_until bigint not null default 0,
    muted_at    bigint not null default 0,
    level       bigint not null default 0,
    level_at    bigint not null default 0,
    primary key (user_id, channel_id)
);

-- Deleting a channel removes its settings without scanning every user's.
create index settings_by_channel on settings (channel_id);

-- A channel's metadata: a thread's parent channel and a group (0 = unset), one
-- register stamped `at` (ms), merged by the max of (at, parent_id, group_id). Only
-- channels whose metadata was ever set have a row; looked up by the primary key.
create table channel_meta (
    channel_id bigint primary key,
    parent_id  bigint not null default 0,
    group_id   bigint not null default 0,
    at         bigint not null default 0
);
