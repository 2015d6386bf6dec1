-- read_states_by_channel without pos. An ack changes pos, and with pos in the index
-- every ack rewrote an index page as well as its table page: at 10 M read states a
-- checkpoint rewrote most of the index's 136 MB. The index still orders a channel's
-- members by user (a WITHOUT ROWID table's index holds its primary key), so readers
-- scan it and look pos up in the table; membership changes (join, leave, delete)
-- are the only writes it sees.
drop index read_states_by_channel;
create index read_states_by_channel on read_states (channel_id);
