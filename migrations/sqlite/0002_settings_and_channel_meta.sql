-- Notification settings of a read state: two registers, each with the stamp (ms) of
-- the write that set it. Written only as merges (per register, the lexicographic max
-- of (stamp, value)), so replaying a write is harmless. muted_until: 0 = not muted,
-- 2^63-1 = until unmuted; level: 0 all, 1 mentions, 2 nothing. A row whose read
-- state has no row is ignored (loads are driven by read_states); leaving a channel
-- removes it. The primary key serves loading a user's states and leave.
create table settings (
    user_id     integer not null,
    channel_id  integer not null,
    muted_until integer not null default 0,
    muted_at    integer not null default 0,
    level       integer not null default 0,
    level_at    integer not null default 0,
    primary key (user_id, channel_id)
) without rowid;

-- Deleting a channel removes its settings.
create index settings_by_channel on settings (channel_id);

-- A channel's metadata: a thread's parent channel and a group (0 = unset), one
-- register stamped `at` (ms), merged by the max of (at, parent_id, group_id). Only
-- channels whose metadata was ever set have a row; looked up by the primary key.
create table channel_meta (
    channel_id integer primary key,
    parent_id  integer not null default 0,
    group_id   integer not null default 0,
    at         integer not null default 0
);
