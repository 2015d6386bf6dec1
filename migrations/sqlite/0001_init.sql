-- Read positions: one row per (user, channel). Written only as merges
-- (lexicographic max of (epoch, pos)), so replaying a write is harmless.
-- The primary key serves "all read states of a user" (a prefix scan on user_id).
create table read_states (
    user_id    integer not null,
    channel_id integer not null,
    epoch      integer not null default 0,
    pos        integer not null default 0,
    primary key (user_id, channel_id)
) without rowid;

-- Readers of a message (read receipts) page by user id within a channel and filter
-- on pos; deleting a channel removes its rows. Covering, so no table lookups.
create index read_states_by_channel on read_states (channel_id, user_id, pos);

-- Mention ids of a read state (a set; the newest few per state are kept).
create table mentions (
    user_id    integer not null,
    channel_id integer not null,
    message_id integer not null,
    primary key (user_id, channel_id, message_id)
) without rowid;

-- Deleting a channel removes its mentions.
create index mentions_by_channel on mentions (channel_id);

-- A channel's recent message ids, tombstones included (deleted = 1). The newest
-- W are kept; older ones are trimmed and remembered as the channel's floor.
create table channel_messages (
    channel_id integer not null,
    message_id integer not null,
    deleted    integer not null default 0,
    primary key (channel_id, message_id)
) without rowid;

-- floor: the largest message id trimmed from channel_messages (0: none).
create table channels (
    channel_id integer primary key,
    floor      integer not null default 0
);
