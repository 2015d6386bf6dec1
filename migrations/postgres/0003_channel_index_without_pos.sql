-- read_states_by_channel without the included pos. With pos in the index no ack
-- could be a heap-only (HOT) update: every ack inserted an index entry as well as a
-- row version. Without it an ack that fits on its page touches the heap alone;
-- readers look pos up in the heap.
drop index read_states_by_channel;
create index read_states_by_channel on read_states (channel_id, user_id);
