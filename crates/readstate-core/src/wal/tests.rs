//! Tests of the commit log: codec, recovery rules on real files and on the in-memory
//! file system, fail-closed behaviour under injected I/O errors, and a model-based
//! property test with crashes. All deterministic.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};

use super::codec::{self, HEADER_LEN, PrevSegment, SegmentHeader};
use super::memfs::{Fault, FaultOp, MemFs};
use super::*;
use crate::domain::{ChannelMeta, Level, MUTED_FOREVER, Settings};

// ---------------------------------------------------------------------------------
// Helpers

/// A group of 1 to 4 writes, unique by `id` (the message id).
fn group(id: u64) -> Vec<Write> {
    let channel = id % 13 + 1;
    let mut g = vec![Write::Message {
        channel,
        message: id,
        deleted: id.is_multiple_of(5),
    }];
    if id % 4 >= 1 {
        g.push(Write::ReadPos {
            user: id % 97,
            channel,
            epoch: id / 1000,
            pos: id,
            // Every other one an ack (with its stamp in the record).
            at: if id % 8 >= 4 { id * 3 } else { 0 },
        });
    }
    if id % 4 >= 2 {
        // Mentions mostly; now and then settings or channel metadata.
        g.push(match id % 6 {
            1 => Write::Settings {
                user: id % 89 + 1,
                channel: 3,
                settings: Settings {
                    muted_until: if id.is_multiple_of(7) {
                        MUTED_FOREVER
                    } else {
                        id * 1000
                    },
                    muted_at: id,
                    level: Level::from_code((id % 3) as u8).unwrap(),
                    level_at: id / 2,
                },
            },
            3 => Write::ChannelMeta {
                channel,
                meta: ChannelMeta {
                    parent: id % 7,
                    group: id % 5,
                    at: id,
                },
            },
            _ => Write::Mention {
                user: id % 89 + 1,
                channel: 3,
                message: id << 20,
            },
        });
    }
    if id % 4 >= 3 {
        g.push(match id % 3 {
            0 => Write::Leave {
                user: id,
                channel: 1,
            },
            1 => Write::DeleteChannel {
                channel: u64::MAX - id,
            },
            _ => Write::DeleteUser { user: id % 97 },
        });
    }
    g
}

fn big_group(id: u64) -> Vec<Write> {
    (0..20).flat_map(|i| group(id * 100 + i)).collect()
}

fn writes(recs: &[Recovered]) -> Vec<Vec<Write>> {
    recs.iter().map(|r| r.writes.clone()).collect()
}

fn options(segment_bytes: u64) -> WalOptions {
    WalOptions { segment_bytes }
}

fn mem_open(
    fs: &MemFs,
    segment_bytes: u64,
) -> Result<(Wal, Vec<Recovered>, RecoveryReport), WalError> {
    Wal::open(Arc::new(fs.clone()), options(segment_bytes))
}

fn seg(seq: u64) -> String {
    codec::segment_name(seq)
}

/// Segment files in a directory: (seq, size), sorted.
fn dir_segments(dir: &std::path::Path) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let seq = codec::parse_segment_name(e.file_name().to_str()?)?;
            Some((seq, e.metadata().unwrap().len()))
        })
        .collect();
    out.sort_unstable();
    out
}

/// Appends the groups, syncing after each, and returns their end positions.
fn append_synced(wal: &mut Wal, groups: &[Vec<Write>]) -> Vec<Position> {
    groups
        .iter()
        .map(|g| {
            let p = wal.append(g).unwrap();
            assert_eq!(wal.sync().unwrap(), p);
            p
        })
        .collect()
}

fn expect_corrupt(
    result: Result<(Wal, Vec<Recovered>, RecoveryReport), WalError>,
) -> (String, u64, String) {
    match result {
        Err(WalError::Corrupt {
            file,
            offset,
            reason,
        }) => (file, offset, reason),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok((_, recs, _)) => panic!("expected Corrupt, opened with {} records", recs.len()),
    }
}

// ---------------------------------------------------------------------------------
// Codec

#[test]
fn varints_round_trip_and_reject_overflow_and_overlong_forms() {
    let values = [
        0,
        1,
        127,
        128,
        255,
        300,
        16_383,
        16_384,
        u64::from(u32::MAX),
        u64::MAX - 1,
        u64::MAX,
    ];
    for v in values {
        let w = [Write::DeleteChannel { channel: v }];
        let mut buf = Vec::new();
        codec::encode_payload(&mut buf, &w);
        assert_eq!(codec::decode_payload(&buf).unwrap(), w, "value {v}");
    }
    let mut max = Vec::new();
    codec::put_varint(&mut max, u64::MAX);
    assert_eq!(max.len(), 10);
    // count 1, tag DeleteChannel, then a varint.
    let with = |v: &[u8]| {
        let mut p = vec![1, 6];
        p.extend_from_slice(v);
        codec::decode_payload(&p)
    };
    let mut overflow = vec![0xff; 9];
    overflow.push(0x02);
    assert_eq!(with(&overflow), Err(codec::DecodeError::VarintOverflow));
    assert_eq!(with(&[0x80, 0x00]), Err(codec::DecodeError::VarintOverlong));
    assert_eq!(with(&[0x80]), Err(codec::DecodeError::Truncated));
}

#[test]
fn payloads_round_trip_every_write_kind() {
    let all = [
        Write::ReadPos {
            user: 1,
            channel: 2,
            epoch: 3,
            pos: 4,
            at: 0,
        },
        Write::ReadPos {
            user: 1,
            channel: 2,
            epoch: 3,
            pos: 4,
            at: 5,
        },
        Write::ReadPos {
            user: 1,
            channel: 2,
            epoch: 3,
            pos: 4,
            at: crate::store::ACK_NOW,
        },
        Write::Mention {
            user: u64::MAX,
            channel: 0,
            message: 1 << 40,
        },
        Write::Message {
            channel: 7,
            message: 8,
            deleted: false,
        },
        Write::Message {
            channel: 7,
            message: 9,
            deleted: true,
        },
        Write::Leave {
            user: 5,
            channel: 6,
        },
        Write::DeleteChannel { channel: 10 },
        Write::Settings {
            user: 11,
            channel: 12,
            settings: Settings {
                muted_until: MUTED_FOREVER,
                muted_at: 1_750_000_000_000,
                level: Level::Nothing,
                level_at: 1_750_000_000_001,
            },
        },
        Write::Settings {
            user: 11,
            channel: 12,
            settings: Settings::written(None, Some(Level::Mentions), 5),
        },
        Write::Settings {
            user: 1,
            channel: 2,
            settings: Settings::default(),
        },
        Write::ChannelMeta {
            channel: 13,
            meta: ChannelMeta {
                parent: 14,
                group: 15,
                at: 16,
            },
        },
        Write::ChannelMeta {
            channel: u64::MAX,
            meta: ChannelMeta::default(),
        },
        Write::DeleteUser { user: 17 },
        Write::DeleteUser { user: u64::MAX },
    ];
    for n in 0..=all.len() {
        let mut buf = Vec::new();
        codec::encode_payload(&mut buf, &all[..n]);
        assert_eq!(codec::decode_payload(&buf).unwrap(), &all[..n]);
    }
    // Small ids stay small: ReadPos{1,2,3,4} is a tag and four one-byte varints.
    let mut buf = Vec::new();
    codec::encode_payload(&mut buf, &all[..1]);
    assert_eq!(buf, [1, 1, 1, 2, 3, 4]);
}

#[test]
fn the_new_write_kinds_have_their_own_tags_and_the_old_tags_still_decode() {
    let encoded = |w: Write| {
        let mut buf = Vec::new();
        codec::encode_payload(&mut buf, &[w]);
        buf
    };
    // Tags 8, 9 and 10, their fields as varints in order (level as its code).
    assert_eq!(
        encoded(Write::Settings {
            user: 1,
            channel: 2,
            settings: Settings {
                muted_until: 3,
                muted_at: 4,
                level: Level::Mentions,
                level_at: 5,
            },
        }),
        [1, 8, 1, 2, 3, 4, 1, 5]
    );
    assert_eq!(
        encoded(Write::ChannelMeta {
            channel: 1,
            meta: ChannelMeta {
                parent: 2,
                group: 3,
                at: 4,
            },
        }),
        [1, 9, 1, 2, 3, 4]
    );
    assert_eq!(
        encoded(Write::DeleteUser { user: 300 }),
        [1, 10, 0xac, 0x02]
    );
    // Records as an older build wrote them (tags 1 to 7) decode as before.
    let old: [(&[u8], Write); 7] = [
        (
            &[1, 1, 1, 2, 3, 4],
            Write::ReadPos {
                user: 1,
                channel: 2,
                epoch: 3,
                pos: 4,
                at: 0,
            },
        ),
        (
            &[1, 2, 1, 2, 3],
            Write::Mention {
                user: 1,
                channel: 2,
                message: 3,
            },
        ),
        (
            &[1, 3, 1, 2],
            Write::Message {
                channel: 1,
                message: 2,
                deleted: false,
            },
        ),
        (
            &[1, 4, 1, 2],
            Write::Message {
                channel: 1,
                message: 2,
                deleted: true,
            },
        ),
        (
            &[1, 5, 1, 2],
            Write::Leave {
                user: 1,
                channel: 2,
            },
        ),
        (&[1, 6, 1], Write::DeleteChannel { channel: 1 }),
        (
            &[1, 7, 1, 2, 3, 4, 5],
            Write::ReadPos {
                user: 1,
                channel: 2,
                epoch: 3,
                pos: 4,
                at: 5,
            },
        ),
    ];
    for (bytes, write) in old {
        assert_eq!(codec::decode_payload(bytes).unwrap(), [write], "{bytes:?}");
    }
    // A level code no build wrote, a truncated write of each new kind, and the first
    // tag after them.
    use codec::DecodeError::*;
    assert_eq!(
        codec::decode_payload(&[1, 8, 1, 2, 3, 4, 3, 5]),
        Err(BadLevel(3))
    );
    assert_eq!(
        codec::decode_payload(&[1, 8, 1, 2, 3, 4, 0x80, 0x02, 5]),
        Err(BadLevel(256))
    );
    assert_eq!(
        codec::decode_payload(&[1, 8, 1, 2, 3, 4, 1]),
        Err(Truncated)
    );
    assert_eq!(codec::decode_payload(&[1, 9, 1, 2, 3]), Err(Truncated));
    assert_eq!(codec::decode_payload(&[1, 10, 0x80]), Err(Truncated));
    assert_eq!(codec::decode_payload(&[1, 11, 1]), Err(BadTag(11)));
}

#[test]
fn every_write_kind_appears_in_the_generated_groups() {
    // The recovery and crash tests replay `group`s: make sure they cover every kind.
    let kinds: std::collections::HashSet<std::mem::Discriminant<Write>> = (1..=48)
        .flat_map(group)
        .map(|w| std::mem::discriminant(&w))
        .collect();
    assert_eq!(kinds.len(), 8, "{kinds:?}");
}

#[test]
fn damaged_payloads_do_not_decode() {
    use codec::DecodeError::*;
    assert_eq!(codec::decode_payload(&[]), Err(Truncated));
    assert_eq!(codec::decode_payload(&[1, 99, 1]), Err(BadTag(99)));
    assert_eq!(codec::decode_payload(&[1, 0, 1]), Err(BadTag(0)));
    assert_eq!(codec::decode_payload(&[1, 6, 1, 0]), Err(TrailingBytes(1)));
    assert_eq!(codec::decode_payload(&[2, 6, 1]), Err(CountTooLarge(2)));
    assert_eq!(codec::decode_payload(&[1, 1, 1, 1]), Err(Truncated));
    // An absurd count is refused before anything is allocated for it.
    let mut huge = Vec::new();
    codec::put_varint(&mut huge, u64::MAX);
    huge.extend_from_slice(&[6, 1]);
    assert_eq!(codec::decode_payload(&huge), Err(CountTooLarge(u64::MAX)));
}

#[test]
fn headers_names_and_checkpoints_round_trip_and_reject_damage() {
    for prev in [
        None,
        Some(PrevSegment {
            seq: 41,
            valid_upto: 12_345,
        }),
    ] {
        let h = SegmentHeader { seq: 42, prev };
        let mut buf = Vec::new();
        h.encode(&mut buf);
        assert_eq!(buf.len(), HEADER_LEN);
        assert_eq!(&buf[..8], b"RSWAL001");
        assert_eq!(SegmentHeader::parse(&buf, 42).unwrap(), h);
        assert!(
            SegmentHeader::parse(&buf, 43).is_err(),
            "seq must match the name"
        );
        assert!(SegmentHeader::parse(&buf[..39], 42).is_err());
        for i in 0..HEADER_LEN {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert!(SegmentHeader::parse(&bad, 42).is_err(), "flip at {i}");
        }
    }
    assert_eq!(seg(7), "wal-00000000000000000007.log");
    assert_eq!(codec::parse_segment_name(&seg(u64::MAX)), Some(u64::MAX));
    for bad in [
        "wal-7.log",
        "wal-0000000000000000000x.log",
        "checkpoint",
        "wal-00000000000000000007.log.tmp",
    ] {
        assert_eq!(codec::parse_segment_name(bad), None, "{bad}");
    }
    let p = Position {
        segment: 3,
        offset: 999,
    };
    let c = codec::encode_checkpoint(p);
    assert_eq!(codec::parse_checkpoint(&c).unwrap(), p);
    for i in 0..c.len() {
        let mut bad = c;
        bad[i] ^= 1;
        assert!(codec::parse_checkpoint(&bad).is_err(), "flip at {i}");
    }
    assert!(codec::parse_checkpoint(&c[..27]).is_err());
}

// ---------------------------------------------------------------------------------
// Round trips, rotation, checkpoints (real files)

#[test]
fn round_trip_across_rotations_then_checkpoint_deletes_covered_segments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let opts = options(1024);
    let (mut wal, recs, report) = Wal::open_dir(&path, opts.clone()).unwrap();
    assert!(recs.is_empty());
    assert_eq!(report, RecoveryReport::default());
    assert_eq!(wal.durable_end(), Position::default());
    assert_eq!(wal.bytes_on_disk(), 0);

    let groups: Vec<Vec<Write>> = (1..=500).map(group).collect();
    let mut ends = Vec::new();
    let mut i = 0;
    let mut batch = 1;
    while i < groups.len() {
        for g in groups.iter().skip(i).take(batch) {
            ends.push(wal.append(g).unwrap());
        }
        i = ends.len();
        let end = wal.sync().unwrap();
        assert_eq!(end, *ends.last().unwrap());
        assert_eq!(wal.durable_end(), end);
        batch = batch % 7 + 1;
    }
    assert!(ends.windows(2).all(|w| w[0] < w[1]));
    let segments = dir_segments(&path);
    assert!(segments.len() >= 5, "{segments:?}");
    assert_eq!(
        wal.bytes_on_disk(),
        segments.iter().map(|s| s.1).sum::<u64>()
    );
    // A segment is closed once it reaches the limit, passing it by at most one sync.
    for s in &segments[..segments.len() - 1] {
        assert!(s.1 >= 1024 && s.1 < 1024 + 7 * 60, "{s:?}");
    }
    drop(wal);

    let (wal, recs, report) = Wal::open_dir(&path, opts.clone()).unwrap();
    assert_eq!(writes(&recs), groups);
    assert_eq!(recs.iter().map(|r| r.end).collect::<Vec<_>>(), ends);
    assert_eq!(report.records, 500);
    assert_eq!(report.writes, groups.iter().map(Vec::len).sum::<usize>());
    assert_eq!(report.torn_tail_truncated, None);
    assert_eq!(report.checkpoint, None);
    assert_eq!(wal.durable_end(), ends[499]);
    let mut wal = wal;

    // Checkpoint after record 300: every segment before its segment goes.
    let upto = ends[299];
    let before: u64 = dir_segments(&path)
        .iter()
        .filter(|s| s.0 < upto.segment)
        .map(|s| s.1)
        .sum();
    assert!(before > 0);
    assert_eq!(wal.checkpointed(upto).unwrap(), before);
    let segments = dir_segments(&path);
    assert_eq!(segments[0].0, upto.segment);
    assert_eq!(
        wal.bytes_on_disk(),
        segments.iter().map(|s| s.1).sum::<u64>()
    );
    assert_eq!(wal.checkpoint(), Some(upto));
    // Going back is a no-op.
    assert_eq!(wal.checkpointed(ends[10]).unwrap(), 0);
    assert_eq!(wal.checkpoint(), Some(upto));
    drop(wal);

    let (mut wal, recs, report) = Wal::open_dir(&path, opts.clone()).unwrap();
    assert_eq!(writes(&recs), &groups[300..]);
    assert_eq!(report.checkpoint, Some(upto));
    let more: Vec<Vec<Write>> = (501..=520).map(group).collect();
    append_synced(&mut wal, &more);
    drop(wal);
    let (_, recs, _) = Wal::open_dir(&path, opts).unwrap();
    let expected: Vec<Vec<Write>> = groups[300..].iter().chain(&more).cloned().collect();
    assert_eq!(writes(&recs), expected);
}

#[test]
fn checkpoint_at_the_durable_end_keeps_only_the_current_segment() {
    let fs = MemFs::new();
    let (mut wal, _, _) = mem_open(&fs, 200).unwrap();
    let groups: Vec<Vec<Write>> = (1..=60).map(group).collect();
    append_synced(&mut wal, &groups);
    let end = wal.durable_end();
    assert!(end.segment > 3);
    assert!(wal.checkpointed(end).unwrap() > 0);
    assert_eq!(fs.names(), vec!["checkpoint".to_owned(), seg(end.segment)]);
    drop(wal);
    fs.crash_losing_unsynced();
    let (mut wal, recs, report) = mem_open(&fs, 200).unwrap();
    assert!(recs.is_empty());
    assert_eq!(report.checkpoint, Some(end));
    let p = wal.append(&group(61)).unwrap();
    assert!(p > end);
    wal.sync().unwrap();
    drop(wal);
    let (_, recs, _) = mem_open(&fs, 200).unwrap();
    assert_eq!(writes(&recs), vec![group(61)]);
}

#[test]
fn segments_are_deleted_outside_the_lock_and_a_failed_delete_is_retried_next_checkpoint() {
    let fs = MemFs::new();
    let (mut wal, _, _) = mem_open(&fs, 200).unwrap();
    append_synced(&mut wal, &(1..=30).map(group).collect::<Vec<_>>());
    let first = wal.durable_end();
    assert!(first.segment > 3);
    // The checkpoint moves at once; the segments go only when deleted and booked.
    let on_disk = wal.bytes_on_disk();
    let job = wal.checkpoint_job(first).unwrap().expect("a new position");
    job.write().unwrap();
    let doomed = wal.checkpoint_written(first);
    assert_eq!(wal.checkpoint(), Some(first));
    assert_eq!(
        wal.bytes_on_disk(),
        on_disk,
        "nothing booked before the delete"
    );
    // The oldest segment's delete fails: deleting stops there, everything stays
    // listed.
    let before = fs.names().len();
    fs.fail_next(FaultOp::Remove, Fault::Fail);
    let deleted = doomed.delete();
    assert!(wal.deleted(deleted).is_err(), "the error is reported");
    assert_eq!(
        fs.names().len(),
        before,
        "the failed delete stopped at once"
    );
    assert_eq!(wal.bytes_on_disk(), on_disk);
    // The next checkpoint deletes what is left below it.
    append_synced(&mut wal, &(31..=40).map(group).collect::<Vec<_>>());
    let second = wal.durable_end();
    assert!(wal.checkpointed(second).unwrap() > 0);
    assert_eq!(
        fs.names(),
        vec!["checkpoint".to_owned(), seg(second.segment)]
    );
    drop(wal);
    let (_, recs, report) = mem_open(&fs, 200).unwrap();
    assert!(recs.is_empty());
    assert_eq!(report.checkpoint, Some(second));
}

#[test]
fn sync_is_one_write_and_one_fdatasync_and_nothing_when_idle() {
    let fs = MemFs::new();
    let (mut wal, _, _) = mem_open(&fs, 1 << 20).unwrap();
    // The first sync creates the segment: create + write + fdatasync + directory fsync.
    wal.append(&group(1)).unwrap();
    let s0 = fs.stats();
    wal.sync().unwrap();
    let s1 = fs.stats();
    assert_eq!(
        (
            s1.creates - s0.creates,
            s1.writes - s0.writes,
            s1.syncs - s0.syncs,
            s1.dir_syncs - s0.dir_syncs
        ),
        (1, 1, 1, 1)
    );
    for i in 2..50 {
        wal.append(&group(i)).unwrap();
    }
    assert_eq!(fs.stats(), s1, "append does no I/O");
    wal.sync().unwrap();
    let s2 = fs.stats();
    assert_eq!(
        (
            s2.creates - s1.creates,
            s2.writes - s1.writes,
            s2.syncs - s1.syncs,
            s2.dir_syncs - s1.dir_syncs
        ),
        (0, 1, 1, 0)
    );
    assert_eq!(wal.sync().unwrap(), wal.durable_end());
    assert_eq!(fs.stats(), s2, "nothing to sync: no I/O");
}

#[test]
fn oversized_group_is_refused_and_the_log_stays_usable() {
    let fs = MemFs::new();
    let (mut wal, _, _) = mem_open(&fs, 1 << 20).unwrap();
    let huge = vec![Write::DeleteChannel { channel: u64::MAX }; MAX_RECORD_PAYLOAD / 11 + 1];
    match wal.append(&huge) {
        Err(WalError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput),
        other => panic!("{other:?}"),
    }
    assert!(!wal.has_unsynced());
    wal.append(&group(1)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, recs, _) = mem_open(&fs, 1 << 20).unwrap();
    assert_eq!(writes(&recs), vec![group(1)]);
}

// ---------------------------------------------------------------------------------
// Torn tails and corruption

#[test]
fn torn_tail_at_every_byte_offset_of_the_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions::default();
    let (mut wal, _, _) = Wal::open_dir(dir.path(), opts.clone()).unwrap();
    let mut groups: Vec<Vec<Write>> = (1..=4).map(group).collect();
    groups.push(big_group(5));
    let ends: Vec<Position> = groups.iter().map(|g| wal.append(g).unwrap()).collect();
    wal.sync().unwrap();
    drop(wal);

    let path = dir.path().join(seg(1));
    let shown = path.display().to_string();
    let full = std::fs::read(&path).unwrap();
    assert_eq!(full.len() as u64, ends[4].offset);
    let start = ends[3].offset as usize;
    assert!(full.len() - start > 100);
    let extra = group(99);
    let extra_len = codec::encode_record(&mut Vec::new(), &extra).unwrap() as u64;
    let mut expected: Vec<Vec<Write>> = groups[..4].to_vec();
    for k in start..full.len() {
        std::fs::write(&path, &full[..k]).unwrap();
        let (mut wal, recs, report) = Wal::open_dir(dir.path(), opts.clone()).unwrap();
        assert_eq!(writes(&recs), groups[..4], "cut at {k}");
        let torn = (k > start).then(|| (shown.clone(), start as u64));
        assert_eq!(report.torn_tail_truncated, torn, "cut at {k}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), start as u64);
        assert_eq!(wal.durable_end(), ends[3]);

        assert_eq!(
            wal.append(&extra).unwrap(),
            Position {
                segment: 1,
                offset: start as u64 + extra_len
            }
        );
        wal.sync().unwrap();
        drop(wal);
        let (_, recs, report) = Wal::open_dir(dir.path(), opts.clone()).unwrap();
        expected.truncate(4);
        expected.push(extra.clone());
        assert_eq!(writes(&recs), expected, "cut at {k}, then appended");
        assert_eq!(report.torn_tail_truncated, None);
    }
}

#[test]
fn zeros_or_garbage_after_the_last_record_are_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions::default();
    let (mut wal, _, _) = Wal::open_dir(dir.path(), opts.clone()).unwrap();
    let groups: Vec<Vec<Write>> = (1..=5).map(group).collect();
    let ends = append_synced(&mut wal, &groups);
    drop(wal);
    let path = dir.path().join(seg(1));
    let full = std::fs::read(&path).unwrap();
    let mut lcg = 0x2545_f491_4f6c_dd1d_u64;
    let garbage: Vec<u8> = (0..3000)
        .map(|_| {
            lcg = lcg.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (lcg >> 56) as u8
        })
        .collect();
    for tail in [vec![0u8; 1], vec![0u8; 4096], vec![0xff; 8], garbage] {
        let mut bytes = full.clone();
        bytes.extend_from_slice(&tail);
        std::fs::write(&path, &bytes).unwrap();
        let (_, recs, report) = Wal::open_dir(dir.path(), opts.clone()).unwrap();
        assert_eq!(writes(&recs), groups);
        assert_eq!(
            report.torn_tail_truncated,
            Some((path.display().to_string(), ends[4].offset))
        );
        assert_eq!(std::fs::read(&path).unwrap(), full);
    }
}

/// Five records in segment 1 of a `MemFs`; returns their ends and the file bytes.
fn five_records(fs: &MemFs) -> (Vec<Vec<Write>>, Vec<Position>, Vec<u8>) {
    let (mut wal, _, _) = mem_open(fs, 1 << 20).unwrap();
    let groups: Vec<Vec<Write>> = (1..=5).map(group).collect();
    let ends = append_synced(&mut wal, &groups);
    drop(wal);
    let full = fs.file(&seg(1)).unwrap();
    (groups, ends, full)
}

#[test]
fn a_flipped_byte_in_an_earlier_record_is_corruption_at_that_record() {
    let fs = MemFs::new();
    let (_, ends, full) = five_records(&fs);
    // Record 3 spans ends[1]..ends[2]: every byte of it, header and payload.
    for i in ends[1].offset..ends[2].offset {
        let mut bad = full.clone();
        bad[i as usize] ^= 0x55;
        fs.put_file(&seg(1), bad.clone());
        let (file, offset, reason) = expect_corrupt(mem_open(&fs, 1 << 20));
        assert_eq!(
            (file.as_str(), offset),
            (seg(1).as_str(), ends[1].offset),
            "flip at {i}: {reason}"
        );
        assert_eq!(fs.file(&seg(1)).unwrap(), bad, "nothing truncated");
    }
    // The same in the second-to-last record (a valid record still follows).
    let mut bad = full.clone();
    bad[ends[3].offset as usize - 1] ^= 1;
    fs.put_file(&seg(1), bad);
    let (_, offset, _) = expect_corrupt(mem_open(&fs, 1 << 20));
    assert_eq!(offset, ends[2].offset);
    // The first record.
    let mut bad = full;
    bad[HEADER_LEN + 9] ^= 1;
    fs.put_file(&seg(1), bad);
    let (_, offset, _) = expect_corrupt(mem_open(&fs, 1 << 20));
    assert_eq!(offset, HEADER_LEN as u64);
}

#[test]
fn an_absurd_length_is_a_torn_tail_at_the_end_and_corruption_before_it() {
    let fs = MemFs::new();
    let (groups, ends, full) = five_records(&fs);
    let mut tail = full.clone();
    tail.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4, 5]);
    fs.put_file(&seg(1), tail);
    let (_, recs, report) = mem_open(&fs, 1 << 20).unwrap();
    assert_eq!(writes(&recs), groups);
    assert_eq!(report.torn_tail_truncated, Some((seg(1), ends[4].offset)));

    let mut middle = full;
    let at = ends[1].offset as usize;
    middle[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    fs.put_file(&seg(1), middle);
    let (_, offset, reason) = expect_corrupt(mem_open(&fs, 1 << 20));
    assert_eq!(offset, ends[1].offset, "{reason}");
}

#[test]
fn a_payload_that_passes_its_checksum_but_does_not_decode_is_corruption() {
    let fs = MemFs::new();
    let (_, ends, full) = five_records(&fs);
    let payload = [1u8, 99, 1];
    let mut bytes = full;
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&codec::crc(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    fs.put_file(&seg(1), bytes);
    let (file, offset, reason) = expect_corrupt(mem_open(&fs, 1 << 20));
    assert_eq!((file, offset), (seg(1), ends[4].offset));
    assert!(reason.contains("does not decode"), "{reason}");
}

/// Three or more segments in a `MemFs`; returns the groups and their end positions.
fn several_segments(fs: &MemFs) -> (Vec<Vec<Write>>, Vec<Position>) {
    let (mut wal, _, _) = mem_open(fs, 200).unwrap();
    let groups: Vec<Vec<Write>> = (1..=40).map(group).collect();
    let ends = append_synced(&mut wal, &groups);
    assert!(ends.last().unwrap().segment >= 3);
    (groups, ends)
}

#[test]
fn damage_in_a_non_last_segment_is_corruption() {
    let fs = MemFs::new();
    let (groups, ends) = several_segments(&fs);
    let in_seg1: Vec<Position> = ends.iter().copied().filter(|p| p.segment == 1).collect();
    let n = in_seg1.len();
    let seg1 = fs.file(&seg(1)).unwrap();
    assert_eq!(seg1.len() as u64, in_seg1[n - 1].offset);

    // Its last record looks like a torn tail, but segment 2 records its full length.
    let mut bad = seg1.clone();
    *bad.last_mut().unwrap() ^= 1;
    fs.put_file(&seg(1), bad);
    let (file, offset, _) = expect_corrupt(mem_open(&fs, 200));
    assert_eq!((file, offset), (seg(1), in_seg1[n - 2].offset));

    // Shorter than recorded.
    fs.put_file(&seg(1), seg1[..seg1.len() - 1].to_vec());
    let (file, offset, reason) = expect_corrupt(mem_open(&fs, 200));
    assert_eq!((file, offset), (seg(1), seg1.len() as u64 - 1), "{reason}");

    // A damaged header.
    let mut bad = seg1.clone();
    bad[20] ^= 1;
    fs.put_file(&seg(1), bad);
    let (file, offset, _) = expect_corrupt(mem_open(&fs, 200));
    assert_eq!((file, offset), (seg(1), 0));

    // The first record of a middle segment.
    fs.put_file(&seg(1), seg1.clone());
    let seg2 = fs.file(&seg(2)).unwrap();
    let mut bad = seg2.clone();
    bad[HEADER_LEN + 8] ^= 0x80;
    fs.put_file(&seg(2), bad);
    let (file, offset, _) = expect_corrupt(mem_open(&fs, 200));
    assert_eq!((file, offset), (seg(2), HEADER_LEN as u64));

    // Bytes past the recorded length (what a failed write can leave) are ignored.
    let mut longer = seg2;
    longer.extend_from_slice(&[0xab; 100]);
    fs.put_file(&seg(2), longer);
    let (_, recs, report) = mem_open(&fs, 200).unwrap();
    assert_eq!(writes(&recs), groups);
    assert_eq!(report.torn_tail_truncated, None);
}

#[test]
fn a_missing_segment_is_corruption_naming_it() {
    let fs = MemFs::new();
    several_segments(&fs);
    let fs2 = MemFs::new();
    for name in fs.names() {
        if name != seg(2) {
            fs2.put_file(&name, fs.file(&name).unwrap());
        }
    }
    let (file, offset, reason) = expect_corrupt(mem_open(&fs2, 200));
    assert_eq!((file, offset), (seg(2), 0), "{reason}");
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn a_torn_segment_creation_is_removed_and_a_damaged_newest_header_is_corruption() {
    let fs = MemFs::new();
    let (groups, ends, _) = five_records(&fs);
    let mut header = Vec::new();
    SegmentHeader {
        seq: 2,
        prev: Some(PrevSegment {
            seq: 1,
            valid_upto: ends[4].offset,
        }),
    }
    .encode(&mut header);
    for torn in [Vec::new(), header[..17].to_vec(), vec![0u8; 4096]] {
        fs.put_file(&seg(2), torn);
        let (wal, recs, _) = mem_open(&fs, 1 << 20).unwrap();
        assert_eq!(writes(&recs), groups);
        assert_eq!(fs.names(), vec![seg(1)]);
        assert_eq!(wal.durable_end(), ends[4]);
        drop(wal);
        fs.crash_losing_unsynced();
    }
    let mut damaged = header.clone();
    damaged[3] ^= 1;
    damaged.extend_from_slice(&[1; 30]);
    fs.put_file(&seg(2), damaged);
    let (file, offset, _) = expect_corrupt(mem_open(&fs, 1 << 20));
    assert_eq!((file, offset), (seg(2), 0));
}

#[test]
fn checkpoint_file_damage_leftovers_and_misuse() {
    let fs = MemFs::new();
    let (groups, ends, _) = five_records(&fs);
    let (mut wal, _, _) = mem_open(&fs, 1 << 20).unwrap();
    match wal.checkpointed(Position {
        segment: 1,
        offset: ends[4].offset + 1,
    }) {
        Err(WalError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput),
        other => panic!("{other:?}"),
    }
    wal.checkpointed(ends[1]).unwrap();
    drop(wal);
    fs.crash_losing_unsynced();
    let (_, recs, report) = mem_open(&fs, 1 << 20).unwrap();
    assert_eq!(writes(&recs), groups[2..]);
    assert_eq!(report.checkpoint, Some(ends[1]));
    assert_eq!(recs[0].end, ends[2]);

    // An interrupted checkpoint write: the old checkpoint stands, the leftover goes.
    fs.put_file("checkpoint.tmp", vec![1, 2, 3]);
    let (_, recs, _) = mem_open(&fs, 1 << 20).unwrap();
    assert_eq!(writes(&recs), groups[2..]);
    assert!(!fs.names().contains(&"checkpoint.tmp".to_owned()));

    let good = fs.file("checkpoint").unwrap();
    let mut bad = good.clone();
    bad[10] ^= 1;
    fs.put_file("checkpoint", bad);
    let (file, _, _) = expect_corrupt(mem_open(&fs, 1 << 20));
    assert_eq!(file, "checkpoint");

    fs.put_file(
        "checkpoint",
        codec::encode_checkpoint(Position {
            segment: 9,
            offset: 100,
        })
        .to_vec(),
    );
    let (file, _, reason) = expect_corrupt(mem_open(&fs, 1 << 20));
    assert_eq!(file, "checkpoint", "{reason}");
    fs.put_file("checkpoint", good);
    assert!(mem_open(&fs, 1 << 20).is_ok());
}

// ---------------------------------------------------------------------------------
// Failed fsync, fail-closed and repair

#[test]
fn a_failed_fsync_fails_closed_and_repair_moves_the_records_to_a_new_segment() {
    for fault in [Fault::Fail, Fault::FailDroppingCache] {
        for repair_by in ["append", "sync", "repair"] {
            let fs = MemFs::new();
            let (mut wal, _, _) = mem_open(&fs, 1 << 20).unwrap();
            let acked: Vec<Vec<Write>> = (1..=3).map(group).collect();
            let acked_ends = append_synced(&mut wal, &acked);
            let end1 = wal.durable_end();

            let kept: Vec<Vec<Write>> = (4..=5).map(group).collect();
            let provisional: Vec<Position> = kept.iter().map(|g| wal.append(g).unwrap()).collect();
            fs.fail_next(FaultOp::SyncData, fault);
            assert!(matches!(wal.sync(), Err(WalError::Io(_))));
            assert!(wal.is_failed());
            assert!(wal.has_unsynced());
            assert_eq!(wal.durable_end(), end1);
            assert_eq!(fs.names(), vec![seg(1)]);

            let extra = group(6);
            let end = match repair_by {
                "append" => {
                    let p = wal.append(&extra).unwrap();
                    assert!(!wal.is_failed());
                    assert_eq!(p.segment, 2);
                    let end = wal.sync().unwrap();
                    assert_eq!(end, p);
                    end
                }
                "sync" => {
                    let end = wal.sync().unwrap();
                    assert!(!wal.is_failed());
                    wal.append(&extra).unwrap();
                    wal.sync().unwrap();
                    assert!(end < wal.durable_end());
                    wal.durable_end()
                }
                _ => {
                    let end = wal.repair().unwrap();
                    assert_eq!(end, wal.durable_end());
                    assert!(!wal.is_failed());
                    wal.append(&extra).unwrap();
                    wal.sync().unwrap()
                }
            };
            assert_eq!(end.segment, 2);
            assert_eq!(fs.names(), vec![seg(1), seg(2)]);
            drop(wal);

            let mut expected = acked.clone();
            expected.extend(kept.iter().cloned());
            expected.push(extra.clone());
            // A restart without a crash: with Fault::Fail the page cache of segment 1
            // still shows the two failed records after `end1`, valid and checksummed;
            // segment 2's header makes recovery ignore them.
            let (wal, recs, report) = mem_open(&fs, 1 << 20).unwrap();
            assert_eq!(writes(&recs), expected, "{fault:?} {repair_by}");
            assert_eq!(report.torn_tail_truncated, None);
            assert_eq!(
                recs.iter().take(3).map(|r| r.end).collect::<Vec<_>>(),
                acked_ends
            );
            for (r, p) in recs[3..5].iter().zip(&provisional) {
                assert!(r.end > *p, "a record only moves forward");
                assert_eq!(r.end.segment, 2);
            }
            drop(wal);
            // After a crash too (on disk, segment 1 has zeros after `end1`).
            fs.crash(|_, len| len);
            let (_, recs, _) = mem_open(&fs, 1 << 20).unwrap();
            assert_eq!(writes(&recs), expected, "{fault:?} {repair_by}, crashed");
        }
    }
}

#[test]
fn a_failed_write_fails_closed_too() {
    for fault in [
        Fault::Fail,
        Fault::PartialWrite(0),
        Fault::PartialWrite(11),
        Fault::PartialWrite(25),
    ] {
        let fs = MemFs::new();
        let (mut wal, _, _) = mem_open(&fs, 1 << 20).unwrap();
        let acked: Vec<Vec<Write>> = (1..=3).map(group).collect();
        append_synced(&mut wal, &acked);
        let kept: Vec<Vec<Write>> = (4..=6).map(group).collect();
        for g in &kept {
            wal.append(g).unwrap();
        }
        fs.fail_next(FaultOp::Write, fault);
        assert!(wal.sync().is_err());
        assert!(wal.is_failed());
        wal.sync().unwrap();
        assert!(!wal.is_failed());
        drop(wal);
        fs.crash(|_, len| len);
        let (_, recs, report) = mem_open(&fs, 1 << 20).unwrap();
        let expected: Vec<Vec<Write>> = acked.iter().chain(&kept).cloned().collect();
        assert_eq!(writes(&recs), expected, "{fault:?}");
        assert_eq!(report.torn_tail_truncated, None);
    }
}

#[test]
fn a_failing_repair_keeps_the_log_failed_closed_until_one_succeeds() {
    let faults = [
        (FaultOp::Create, Fault::Fail),
        (FaultOp::Write, Fault::Fail),
        (FaultOp::Write, Fault::PartialWrite(30)),
        (FaultOp::SyncData, Fault::Fail),
        (FaultOp::SyncData, Fault::FailDroppingCache),
        (FaultOp::SyncDir, Fault::Fail),
    ];
    let fs = MemFs::new();
    let (mut wal, _, _) = mem_open(&fs, 1 << 20).unwrap();
    let acked: Vec<Vec<Write>> = (1..=3).map(group).collect();
    append_synced(&mut wal, &acked);
    let end1 = wal.durable_end();
    let kept: Vec<Vec<Write>> = (4..=5).map(group).collect();
    for g in &kept {
        wal.append(g).unwrap();
    }
    fs.fail_next(FaultOp::SyncData, Fault::Fail);
    assert!(wal.sync().is_err());

    for (op, fault) in faults {
        fs.fail_next(op, fault);
        assert!(matches!(wal.repair(), Err(WalError::Io(_))), "{op:?}");
        assert!(wal.is_failed());
        fs.fail_next(op, fault);
        assert!(
            matches!(wal.append(&group(100)), Err(WalError::FailedClosed)),
            "{op:?}"
        );
        fs.fail_next(op, fault);
        assert!(matches!(wal.sync(), Err(WalError::FailedClosed)), "{op:?}");
        assert!(wal.is_failed());
        assert_eq!(wal.durable_end(), end1);
        fs.clear_faults();
    }
    let end = wal.repair().unwrap();
    assert!(!wal.is_failed());
    assert_eq!(wal.durable_end(), end);
    // The failed attempts' files are gone: segment 1 and the repaired one remain.
    assert_eq!(fs.names(), vec![seg(1), seg(end.segment)]);
    assert_eq!(end.segment, 2 + 3 * faults.len() as u64);
    drop(wal);
    fs.crash(|_, len| len / 2);
    let (_, recs, _) = mem_open(&fs, 1 << 20).unwrap();
    let expected: Vec<Vec<Write>> = acked.iter().chain(&kept).cloned().collect();
    assert_eq!(writes(&recs), expected);
}

#[test]
fn a_crash_while_failed_closed_keeps_every_acknowledged_record_and_no_garbage() {
    let sync_faults = [
        (FaultOp::SyncData, Fault::Fail),
        (FaultOp::SyncData, Fault::FailDroppingCache),
        (FaultOp::Write, Fault::PartialWrite(13)),
    ];
    let repair_faults = [
        None,
        Some((FaultOp::Write, Fault::PartialWrite(50))),
        Some((FaultOp::SyncData, Fault::Fail)),
        Some((FaultOp::SyncDir, Fault::Fail)),
    ];
    for (sop, sfault) in sync_faults {
        for rfault in repair_faults {
            for keep in [0usize, 1, 7, 40, usize::MAX] {
                for checkpoint in [false, true] {
                    let fs = MemFs::new();
                    let (mut wal, _, _) = mem_open(&fs, 1 << 20).unwrap();
                    let acked: Vec<Vec<Write>> = (1..=3).map(group).collect();
                    append_synced(&mut wal, &acked);
                    let end1 = wal.durable_end();
                    let unacked: Vec<Vec<Write>> = (4..=6).map(group).collect();
                    for g in &unacked {
                        wal.append(g).unwrap();
                    }
                    fs.fail_next(sop, sfault);
                    assert!(wal.sync().is_err());
                    if let Some((op, fault)) = rfault {
                        fs.fail_next(op, fault);
                        assert!(wal.repair().is_err());
                    }
                    if checkpoint {
                        // A directory fsync while failed closed (the failed repair's
                        // file, if any, must not become a durable file of zeros).
                        wal.checkpointed(end1).unwrap();
                    }
                    assert!(wal.is_failed());
                    drop(wal);
                    fs.crash(|_, len| keep.min(len));
                    let case = format!(
                        "{sop:?}/{sfault:?}, repair {rfault:?}, keep {keep}, checkpoint {checkpoint}"
                    );
                    let (mut wal, recs, _) =
                        mem_open(&fs, 1 << 20).unwrap_or_else(|e| panic!("{case}: {e}"));
                    let got = writes(&recs);
                    let skip = if checkpoint { 3 } else { 0 };
                    assert!(got.len() + skip >= 3, "{case}");
                    let all: Vec<Vec<Write>> = acked.iter().chain(&unacked).cloned().collect();
                    assert_eq!(got, all[skip..skip + got.len()], "{case}");
                    // And the log goes on.
                    wal.append(&group(7)).unwrap();
                    wal.sync().unwrap();
                }
            }
        }
    }
}

#[test]
fn a_failure_while_starting_a_new_segment_is_repaired_into_the_next_one() {
    for (op, fault) in [
        (FaultOp::Create, Fault::Fail),
        (FaultOp::Write, Fault::PartialWrite(20)),
        (FaultOp::SyncData, Fault::Fail),
        (FaultOp::SyncDir, Fault::Fail),
    ] {
        let fs = MemFs::new();
        let (mut wal, _, _) = mem_open(&fs, 100).unwrap();
        let mut groups: Vec<Vec<Write>> = Vec::new();
        let mut id = 1;
        while wal.durable_end().offset < 100 {
            groups.push(group(id));
            append_synced(&mut wal, &groups[groups.len() - 1..]);
            id += 1;
        }
        // Segment 1 is full: the next sync starts segment 2.
        groups.push(group(id));
        let p = wal.append(&groups[groups.len() - 1]).unwrap();
        assert_eq!(p.segment, 2);
        fs.fail_next(op, fault);
        assert!(wal.sync().is_err(), "{op:?}");
        let end = wal.sync().unwrap();
        assert_eq!(end.segment, 3);
        assert_eq!(fs.names(), vec![seg(1), seg(3)]);
        drop(wal);
        fs.crash(|_, len| len);
        let (_, recs, _) = mem_open(&fs, 100).unwrap();
        assert_eq!(writes(&recs), groups, "{op:?}");
    }
}

// ---------------------------------------------------------------------------------
// Model-based property test with crashes

#[derive(Debug, Clone)]
enum Op {
    Append(u8),
    Sync,
    FailingSync(FaultOp, Fault),
    FailingAppend(FaultOp, Fault),
    Repair,
    FailingRepair(FaultOp, Fault),
    Checkpoint(prop::sample::Index),
    Crash(u64),
    /// A crash while a sync is under way: its write reached the page cache, and the
    /// fdatasync (or the directory fsync of a new segment) never completed.
    CrashMidSync(FaultOp, u64),
    Restart,
}

fn fault() -> impl Strategy<Value = (FaultOp, Fault)> {
    prop_oneof![
        Just((FaultOp::Write, Fault::Fail)),
        (0usize..120).prop_map(|n| (FaultOp::Write, Fault::PartialWrite(n))),
        Just((FaultOp::SyncData, Fault::Fail)),
        Just((FaultOp::SyncData, Fault::FailDroppingCache)),
        Just((FaultOp::SyncDir, Fault::Fail)),
        Just((FaultOp::Create, Fault::Fail)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1u8..5).prop_map(Op::Append),
        4 => Just(Op::Sync),
        2 => fault().prop_map(|(o, f)| Op::FailingSync(o, f)),
        1 => fault().prop_map(|(o, f)| Op::FailingAppend(o, f)),
        1 => Just(Op::Repair),
        1 => fault().prop_map(|(o, f)| Op::FailingRepair(o, f)),
        2 => any::<prop::sample::Index>().prop_map(Op::Checkpoint),
        1 => any::<u64>().prop_map(Op::Crash),
        2 => (prop_oneof![Just(FaultOp::SyncData), Just(FaultOp::SyncDir)], any::<u64>())
            .prop_map(|(o, seed)| Op::CrashMidSync(o, seed)),
        1 => Just(Op::Restart),
    ]
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

struct Model {
    fs: MemFs,
    segment_bytes: u64,
    wal: Option<Wal>,
    /// Every record appended (accepted), in order; cut back to what survives a crash.
    appended: Vec<Vec<Write>>,
    /// How many of them are acknowledged (a sync or repair returned Ok after them).
    acked: usize,
    /// Positions returned by successful syncs, with the records they cover.
    synced: Vec<(Position, usize)>,
    /// Records covered by the checkpoint, and its position.
    ckpt: usize,
    ckpt_pos: Option<Position>,
    next_id: u64,
}

impl Model {
    fn wal(&mut self) -> &mut Wal {
        self.wal
            .as_mut()
            .expect("the model always holds an open log between steps")
    }

    fn acked_now(&mut self, end: Position) -> Result<(), TestCaseError> {
        prop_assert_eq!(end, self.wal().durable_end());
        self.acked = self.appended.len();
        self.synced.push((end, self.acked));
        Ok(())
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Append(_) | Op::FailingAppend(..) => {
                let n = if let Op::Append(n) = op { n } else { 1 };
                let g: Vec<Write> = (0..n)
                    .flat_map(|_| {
                        self.next_id += 1;
                        group(self.next_id)
                    })
                    .collect();
                if let Op::FailingAppend(op, fault) = op {
                    self.fs.fail_next(op, fault);
                }
                let was_failed = self.wal().is_failed();
                let r = self.wal().append(&g);
                self.fs.clear_faults();
                match r {
                    Ok(_) => {
                        if was_failed {
                            // The append repaired the log first: the kept records are
                            // durable now.
                            let end = self.wal().durable_end();
                            self.acked_now(end)?;
                        }
                        self.appended.push(g);
                    }
                    Err(WalError::FailedClosed) if was_failed => {
                        prop_assert!(self.wal().is_failed());
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("append: {e}"))),
                }
            }
            Op::Sync | Op::FailingSync(..) => {
                if let Op::FailingSync(op, fault) = op {
                    self.fs.fail_next(op, fault);
                }
                let r = self.wal().sync();
                self.fs.clear_faults();
                match r {
                    Ok(end) => self.acked_now(end)?,
                    Err(_) => prop_assert!(self.wal().is_failed()),
                }
            }
            Op::Repair | Op::FailingRepair(..) => {
                if let Op::FailingRepair(op, fault) = op {
                    self.fs.fail_next(op, fault);
                }
                let was_failed = self.wal().is_failed();
                let r = self.wal().repair();
                self.fs.clear_faults();
                match r {
                    Ok(end) if was_failed => self.acked_now(end)?,
                    Ok(end) => prop_assert_eq!(end, self.wal().durable_end()),
                    Err(_) => prop_assert!(self.wal().is_failed()),
                }
            }
            Op::Checkpoint(i) => {
                if !self.synced.is_empty() {
                    let (pos, count) = self.synced[i.index(self.synced.len())];
                    self.wal()
                        .checkpointed(pos)
                        .map_err(|e| TestCaseError::fail(format!("checkpointed: {e}")))?;
                    if self.ckpt_pos.is_none_or(|c| pos > c) {
                        self.ckpt = count;
                        self.ckpt_pos = Some(pos);
                    }
                    prop_assert_eq!(self.wal().checkpoint(), self.ckpt_pos);
                    let floor = self.ckpt_pos.map_or(0, |c| c.segment);
                    for name in self.fs.names() {
                        if let Some(seq) = codec::parse_segment_name(&name) {
                            prop_assert!(seq >= floor, "{} left before the checkpoint", name);
                        }
                    }
                }
            }
            Op::CrashMidSync(op, seed) => {
                self.fs.fail_next(op, Fault::Crash);
                if let Ok(end) = self.wal().sync() {
                    // Nothing to write, or the fault was not reached (no new segment).
                    self.acked_now(end)?;
                }
                self.step(Op::Crash(seed))?;
            }
            Op::Crash(seed) => {
                self.wal = None;
                self.fs.crash(|name, len| {
                    let h = mix(
                        seed ^ mix(name.len() as u64 + name.bytes().map(u64::from).sum::<u64>())
                    );
                    match h % 4 {
                        0 => 0,
                        1 => len,
                        _ => (h >> 8) as usize % (len + 1),
                    }
                });
                self.reopen(false)?;
            }
            Op::Restart => {
                // A process restart without a machine crash. (Not while failed closed:
                // a failed fsync's pages may still be in the page cache, and no log can
                // tell them from durable ones after a restart.)
                if !self.wal().is_failed() {
                    self.wal = None;
                    self.reopen(true)?;
                }
            }
        }
        Ok(())
    }

    fn reopen(&mut self, clean: bool) -> Result<(), TestCaseError> {
        let (wal, recs, report) = mem_open(&self.fs, self.segment_bytes)
            .map_err(|e| TestCaseError::fail(format!("open after a crash: {e}")))?;
        let got = writes(&recs);
        let m = self.ckpt + got.len();
        prop_assert!(
            m >= self.acked && m <= self.appended.len(),
            "recovered {} after a checkpoint of {}, {} acked of {} appended",
            got.len(),
            self.ckpt,
            self.acked,
            self.appended.len()
        );
        if clean {
            prop_assert_eq!(m, self.acked);
        }
        prop_assert_eq!(&got[..], &self.appended[self.ckpt..m]);
        prop_assert_eq!(report.checkpoint, self.ckpt_pos);
        prop_assert!(recs.windows(2).all(|w| w[0].end < w[1].end));
        if let (Some(first), Some(c)) = (recs.first(), self.ckpt_pos) {
            prop_assert!(first.end > c);
        }
        if let Some(last) = recs.last() {
            prop_assert_eq!(last.end, wal.durable_end());
        }
        prop_assert!(!wal.is_failed());
        self.appended.truncate(m);
        self.acked = m;
        self.synced.push((wal.durable_end(), m));
        self.wal = Some(wal);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1024,
        rng_seed: RngSeed::Fixed(0x5741_4c31),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn after_any_crash_the_log_holds_a_prefix_with_every_acknowledged_record(
        segment_bytes in 60u64..1500,
        ops in proptest::collection::vec(op(), 1..80),
        final_seed in any::<u64>(),
    ) {
        let fs = MemFs::new();
        let (wal, recs, _) = mem_open(&fs, segment_bytes).unwrap();
        prop_assert!(recs.is_empty());
        let mut model = Model {
            fs,
            segment_bytes,
            wal: Some(wal),
            appended: Vec::new(),
            acked: 0,
            synced: Vec::new(),
            ckpt: 0,
            ckpt_pos: None,
            next_id: 0,
        };
        for op in ops {
            model.step(op)?;
        }
        model.step(Op::Crash(final_seed))?;
    }
}

// ---------------------------------------------------------------------------------
// Replay figure (not a test): cargo test --release wal -- --ignored --nocapture

#[test]
#[ignore = "benchmark: cargo test --release wal -- --ignored --nocapture"]
fn replay_one_million_records_from_real_files() {
    const RECORDS: u64 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _, _) = Wal::open_dir(dir.path(), WalOptions::default()).unwrap();
    let started = std::time::Instant::now();
    for i in 0..RECORDS {
        let (user, channel, message) = (i % 50_000 + 1, i % 2_000 + 1, 10_000_000 + i);
        wal.append(&[
            Write::Message {
                channel,
                message,
                deleted: false,
            },
            Write::Mention {
                user,
                channel,
                message,
            },
            Write::ReadPos {
                user,
                channel,
                epoch: 1,
                pos: message,
                at: 0,
            },
        ])
        .unwrap();
        if i % 1000 == 999 {
            wal.sync().unwrap();
        }
    }
    wal.sync().unwrap();
    let write_time = started.elapsed();
    let bytes = wal.bytes_on_disk();
    drop(wal);

    let started = std::time::Instant::now();
    let (_, recs, report) = Wal::open_dir(dir.path(), WalOptions::default()).unwrap();
    let replay = started.elapsed();
    assert_eq!(recs.len() as u64, RECORDS);
    assert_eq!(report.writes as u64, 3 * RECORDS);
    let secs = replay.as_secs_f64();
    println!(
        "commit log replay: {RECORDS} records ({} writes, {bytes} bytes in {} segments) in {secs:.3} s = {:.0} records/s, {:.0} MB/s; written with 1000 syncs in {:.3} s",
        report.writes,
        dir_segments(dir.path()).len(),
        RECORDS as f64 / secs,
        bytes as f64 / secs / 1e6,
        write_time.as_secs_f64(),
    );
}

#[test]
fn the_log_and_its_file_system_can_move_between_threads() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<Wal>();
    send::<WalError>();
    send_sync::<MemFs>();
    send_sync::<DirFs>();
}
