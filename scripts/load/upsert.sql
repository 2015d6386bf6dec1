-- pgbench script: one merge UPSERT per transaction, the peer of readstate's group commit.
-- pgbench -h 127.0.0.1 -U postgres -n -c 64 -j 2 -T 15 -f scripts/load/upsert.sql DB  (DB migrated by readstate)
\set user random(1, 10000)
\set channel random(1, 100)
\set msg random(1, 100000000)
insert into read_states (user_id, channel_id, epoch, pos) values (:user, :channel, 0, :msg) on conflict (user_id, channel_id) do update set epoch = excluded.epoch, pos = excluded.pos where (excluded.epoch, excluded.pos) > (read_states.epoch, read_states.pos);
