-- readstate schema for PostgreSQL: the same tables as the SQLite schema, with ids as
-- BIGINT (ids are 1..=2^63-1). Every row is written as a merge (lexicographic max of
-- read positions, set union of ids, sticky tombstones), so a replayed batch is
-- harmless and several nodes writing the same rows converge.
--
-- Applied by sqlx's migrator (`readstate migrate`, and at start). Its PostgreSQL
-- driver takes `pg_advisory_lock` (keyed by the database name) before it creates
-- `_sqlx_migrations` and releases it after the last migration (sqlx-postgres 0.9.0,
-- src/migrate.rs `lock`/`unlock`, called by sqlx-core's `Migrator::run_direct`), so
-- several nodes starting at once apply each migration exactly once.

-- Read positions: one row per (user, channel).
-- The primary key serves "all read states of a user" on a cache miss: one index
-- range scan on the user_id prefix.
create table read_states (
    user_id    bigint not null,
    channel_id bigint not null,
    epoch      bigint not null default 0,
    pos        bigint not null default 0,
    primary key (user_id, channel_id)
);

-- Readers of a message (read receipts): users of a channel paged by user id and
-- filtered on pos, answered from the index alone (pos is included, so no heap
-- lookups on an all-visible page). Deleting a channel finds its rows here too.
create index read_states_by_channel on read_states (channel_id, user_id) include (pos);

-- Mention ids of a read state (a set; the newest few per state are kept).
-- The primary key serves loading a user's mentions, the per-state trim (newest
-- first) and leave.
create table mentions (
    user_id    bigint not null,
    channel_id bigint not null,
    message_id bigint not null,
    primary key (user_id, channel_id, message_id)
);

-- Deleting a channel removes its mentions without scanning every user's.
create index mentions_by_channel on mentions (channel_id);

-- A channel's recent message ids, tombstones included (deleted = true). The
-- newest W are kept; older ones are trimmed and remembered as the channel's floor.
-- The primary key serves loading a channel's window, the trim (newest first) and
-- deleting a channel.
create table channel_messages (
    channel_id bigint  not null,
    message_id bigint  not null,
    deleted    boolean not null default false,
    primary key (channel_id, message_id)
);

-- floor: the largest message id trimmed from channel_messages (0: none). Only
-- channels that ever trimmed have a row; looked up by the primary key.
create table channels (
    channel_id bigint primary key,
    floor      bigint not null default 0
);
