//! Byte formats of the commit log: segment names and headers, record framing, the
//! payload encoding of [`Write`]s, and the checkpoint file. See the module docs of
//! [`crate::wal`] for the layout.
//!
//! Checksums are CRC-32C (Castagnoli) from the `crc32c` crate: it uses the SSE 4.2
//! `crc32` instruction (or the ARMv8 CRC extension) when the CPU has it and a table
//! fallback otherwise, so replay is bound by decoding, not by checksumming; it is small,
//! has no run-time dependencies and is widely used. (`crc32fast` computes the IEEE
//! polynomial, not CRC-32C; `crc-fast` is a much larger crate for many polynomials.)
//!
//! Varints are hand-written LEB128 (a dozen lines): decoding must be strict — at most
//! ten bytes, no overflow of u64, no over-long encodings — and work on a byte slice with
//! an explicit position, which the general-purpose crates (`leb128` works on
//! `io::Read`; `integer-encoding` accepts over-long forms) do not give directly.

use std::fmt;

use super::{Position, Write};
use crate::domain::{ChannelMeta, Level, Settings};

/// File name prefix and suffix of a segment: `wal-<20-digit seq>.log`.
const SEGMENT_PREFIX: &str = "wal-";
const SEGMENT_SUFFIX: &str = ".log";

/// The checkpoint file, and the temporary file it is written through.
pub(crate) const CHECKPOINT_FILE: &str = "checkpoint";
pub(crate) const CHECKPOINT_TMP: &str = "checkpoint.tmp";

/// First eight bytes of every segment.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"RSWAL001";
/// Length of the segment header; the first record starts here.
pub(crate) const HEADER_LEN: usize = 40;
/// `[u32 LE payload length][u32 LE CRC-32C of the payload]`.
pub(crate) const RECORD_HEADER_LEN: usize = 8;
/// Largest payload accepted, on write and on read: a length above it is damage, and
/// is rejected before anything is allocated for it.
pub const MAX_RECORD_PAYLOAD: usize = 64 << 20;

const CHECKPOINT_MAGIC: &[u8; 8] = b"RSWALCP1";
pub(crate) const CHECKPOINT_LEN: usize = 28;

/// Header flag: the `prev_*` fields are set.
const FLAG_HAS_PREV: u8 = 1;

/// Payload tags, one per [`Write`] variant (`Message` has two: the `deleted` flag is in
/// the tag; `ReadPos` two: an ack's stamp follows only [`TAG_ACK`]). Zero is never a
/// tag. Tags are never reused or renumbered: a log written by an older build replays.
const TAG_READ_POS: u8 = 1;
const TAG_MENTION: u8 = 2;
const TAG_MESSAGE: u8 = 3;
const TAG_MESSAGE_DELETED: u8 = 4;
const TAG_LEAVE: u8 = 5;
const TAG_DELETE_CHANNEL: u8 = 6;
/// A read position that an ack wrote: [`TAG_READ_POS`]'s fields, then its `at`.
const TAG_ACK: u8 = 7;
/// Notification settings: user, channel, muted_until, muted_at, level code, level_at.
const TAG_SETTINGS: u8 = 8;
/// Channel metadata: channel, parent, group, at.
const TAG_CHANNEL_META: u8 = 9;
/// Delete a user: user.
const TAG_DELETE_USER: u8 = 10;

pub(crate) fn crc(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// `wal-00000000000000000042.log`.
pub(crate) fn segment_name(seq: u64) -> String {
    format!("{SEGMENT_PREFIX}{seq:020}{SEGMENT_SUFFIX}")
}

/// The sequence number of a segment file name, or `None` for any other name.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// "Segment `seq` holds valid records only up to byte `valid_upto`": written into the
/// header of the segment that follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PrevSegment {
    pub seq: u64,
    pub valid_upto: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub seq: u64,
    pub prev: Option<PrevSegment>,
}

impl SegmentHeader {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(SEGMENT_MAGIC);
        out.extend_from_slice(&self.seq.to_le_bytes());
        let (flags, prev_seq, valid_upto) = match self.prev {
            Some(p) => (FLAG_HAS_PREV, p.seq, p.valid_upto),
            None => (0, 0, 0),
        };
        out.extend_from_slice(&prev_seq.to_le_bytes());
        out.extend_from_slice(&valid_upto.to_le_bytes());
        out.extend_from_slice(&[flags, 0, 0, 0]);
        let sum = crc(&out[start..]);
        out.extend_from_slice(&sum.to_le_bytes());
        debug_assert_eq!(out.len() - start, HEADER_LEN);
    }

    /// Parses the header at the start of `data`, the file of segment `seq`.
    pub(crate) fn parse(data: &[u8], seq: u64) -> Result<SegmentHeader, String> {
        let Some(h) = data.get(..HEADER_LEN) else {
            return Err(format!(
                "segment header incomplete ({} of {HEADER_LEN} bytes)",
                data.len()
            ));
        };
        if &h[..8] != SEGMENT_MAGIC {
            return Err("bad segment magic".to_owned());
        }
        if crc(&h[..36]) != u32_at(h, 36) {
            return Err("segment header checksum mismatch".to_owned());
        }
        let file_seq = u64_at(h, 8);
        if file_seq != seq {
            return Err(format!(
                "header names segment {file_seq}, the file name {seq}"
            ));
        }
        let flags = h[32];
        if flags & !FLAG_HAS_PREV != 0 || h[33..36] != [0, 0, 0] {
            return Err(format!("unknown segment header flags {flags:#x}"));
        }
        let prev = if flags & FLAG_HAS_PREV != 0 {
            let p = PrevSegment {
                seq: u64_at(h, 16),
                valid_upto: u64_at(h, 24),
            };
            if p.seq >= seq || p.valid_upto < HEADER_LEN as u64 {
                return Err(format!(
                    "header names an impossible predecessor (segment {}, {} bytes)",
                    p.seq, p.valid_upto
                ));
            }
            Some(p)
        } else {
            None
        };
        Ok(SegmentHeader { seq, prev })
    }
}

/// The payload could not be encoded: it is larger than [`MAX_RECORD_PAYLOAD`].
#[derive(Debug)]
pub(crate) struct TooLarge(pub usize);

/// Appends one framed record holding `writes` to `out`; returns its length.
pub(crate) fn encode_record(out: &mut Vec<u8>, writes: &[Write]) -> Result<usize, TooLarge> {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER_LEN]);
    encode_payload(out, writes);
    let payload_len = out.len() - start - RECORD_HEADER_LEN;
    let Ok(len32) = u32::try_from(payload_len) else {
        out.truncate(start);
        return Err(TooLarge(payload_len));
    };
    if payload_len > MAX_RECORD_PAYLOAD {
        out.truncate(start);
        return Err(TooLarge(payload_len));
    }
    let sum = crc(&out[start + RECORD_HEADER_LEN..]);
    out[start..start + 4].copy_from_slice(&len32.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&sum.to_le_bytes());
    Ok(out.len() - start)
}

/// The frame of the record at `off` in `data`: the payload's range and the offset after
/// the record. `data` ends where the readable region ends (end of file, or the valid
/// limit of the segment). Checks the length and the checksum, not the payload encoding.
pub(crate) fn frame_at(data: &[u8], off: usize) -> Result<(usize, usize), String> {
    let rest = data.len().saturating_sub(off);
    if rest < RECORD_HEADER_LEN {
        return Err(format!("incomplete record header ({rest} bytes left)"));
    }
    let len = u32_at(data, off) as usize;
    let sum = u32_at(data, off + 4);
    if len == 0 {
        return Err("zero-length record".to_owned());
    }
    if len > MAX_RECORD_PAYLOAD {
        return Err(format!(
            "record length {len} exceeds the {MAX_RECORD_PAYLOAD}-byte cap"
        ));
    }
    if len > rest - RECORD_HEADER_LEN {
        return Err(format!(
            "record of {len} bytes runs past the end ({} bytes left)",
            rest - RECORD_HEADER_LEN
        ));
    }
    let payload = off + RECORD_HEADER_LEN;
    let end = payload + len;
    if crc(&data[payload..end]) != sum {
        return Err("record checksum mismatch".to_owned());
    }
    Ok((payload, end))
}

/// Whether a record with a plausible length and a matching checksum starts anywhere in
/// `data` at or after `from`: what tells damage followed by good records (corruption)
/// from a torn tail. Returns the offset of the first one.
///
/// Cost: a candidate costs a checksum over its claimed length only when that length
/// fits; in practice few offsets qualify. `budget` bytes of checksumming bound the
/// worst case (adversarial content): past it the answer is "yes, at `from`", which
/// turns a would-be truncation into a refusal to start — the safe side.
pub(crate) fn find_valid_record(data: &[u8], from: usize, mut budget: usize) -> Option<usize> {
    let last_start = data.len().checked_sub(RECORD_HEADER_LEN + 1)?;
    for q in from..=last_start {
        let len = u32_at(data, q) as usize;
        if len == 0 || len > MAX_RECORD_PAYLOAD || len > data.len() - q - RECORD_HEADER_LEN {
            continue;
        }
        if budget < len {
            return Some(from);
        }
        budget -= len;
        let payload = q + RECORD_HEADER_LEN;
        if crc(&data[payload..payload + len]) == u32_at(data, q + 4) {
            return Some(q);
        }
    }
    None
}

/// Why a payload that passed its checksum does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    Truncated,
    VarintOverflow,
    VarintOverlong,
    BadTag(u8),
    BadLevel(u64),
    CountTooLarge(u64),
    TrailingBytes(usize),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("payload ends inside a write"),
            DecodeError::VarintOverflow => f.write_str("varint overflows u64"),
            DecodeError::VarintOverlong => f.write_str("over-long varint"),
            DecodeError::BadTag(t) => write!(f, "unknown write tag {t}"),
            DecodeError::BadLevel(l) => write!(f, "unknown notification level {l}"),
            DecodeError::CountTooLarge(n) => write!(f, "write count {n} cannot fit the payload"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} bytes after the last write"),
        }
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.data.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return Err(DecodeError::VarintOverflow);
            }
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if b == 0 && shift > 0 {
                    return Err(DecodeError::VarintOverlong);
                }
                return Ok(value);
            }
            shift += 7;
        }
    }

    fn level(&mut self) -> Result<Level, DecodeError> {
        let code = self.varint()?;
        u8::try_from(code)
            .ok()
            .and_then(Level::from_code)
            .ok_or(DecodeError::BadLevel(code))
    }

    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
}

/// Payload: `varint count`, then per write a tag byte and its fields as varints.
pub(crate) fn encode_payload(out: &mut Vec<u8>, writes: &[Write]) {
    put_varint(out, writes.len() as u64);
    for w in writes {
        match *w {
            Write::ReadPos {
                user,
                channel,
                epoch,
                pos,
                at,
            } => {
                out.push(if at == 0 { TAG_READ_POS } else { TAG_ACK });
                for v in [user, channel, epoch, pos] {
                    put_varint(out, v);
                }
                if at != 0 {
                    put_varint(out, at);
                }
            }
            Write::Mention {
                user,
                channel,
                message,
            } => {
                out.push(TAG_MENTION);
                for v in [user, channel, message] {
                    put_varint(out, v);
                }
            }
            Write::Message {
                channel,
                message,
                deleted,
            } => {
                out.push(if deleted {
                    TAG_MESSAGE_DELETED
                } else {
                    TAG_MESSAGE
                });
                put_varint(out, channel);
                put_varint(out, message);
            }
            Write::Leave { user, channel } => {
                out.push(TAG_LEAVE);
                put_varint(out, user);
                put_varint(out, channel);
            }
            Write::DeleteChannel { channel } => {
                out.push(TAG_DELETE_CHANNEL);
                put_varint(out, channel);
            }
            Write::Settings {
                user,
                channel,
                settings,
            } => {
                out.push(TAG_SETTINGS);
                for v in [
                    user,
                    channel,
                    settings.muted_until,
                    settings.muted_at,
                    u64::from(settings.level.code()),
                    settings.level_at,
                ] {
                    put_varint(out, v);
                }
            }
            Write::ChannelMeta { channel, meta } => {
                out.push(TAG_CHANNEL_META);
                for v in [channel, meta.parent, meta.group, meta.at] {
                    put_varint(out, v);
                }
            }
            Write::DeleteUser { user } => {
                out.push(TAG_DELETE_USER);
                put_varint(out, user);
            }
        }
    }
}

pub(crate) fn decode_payload(data: &[u8]) -> Result<Vec<Write>, DecodeError> {
    let mut r = Reader { data, pos: 0 };
    let count = r.varint()?;
    // Every write takes at least two bytes (a tag and one varint): a count beyond that
    // is damage, refused before allocating for it.
    if count > (r.remaining() / 2) as u64 {
        return Err(DecodeError::CountTooLarge(count));
    }
    let mut writes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let w = match r.byte()? {
            tag @ (TAG_READ_POS | TAG_ACK) => Write::ReadPos {
                user: r.varint()?,
                channel: r.varint()?,
                epoch: r.varint()?,
                pos: r.varint()?,
                at: if tag == TAG_ACK { r.varint()? } else { 0 },
            },
            TAG_MENTION => Write::Mention {
                user: r.varint()?,
                channel: r.varint()?,
                message: r.varint()?,
            },
            tag @ (TAG_MESSAGE | TAG_MESSAGE_DELETED) => Write::Message {
                channel: r.varint()?,
                message: r.varint()?,
                deleted: tag == TAG_MESSAGE_DELETED,
            },
            TAG_LEAVE => Write::Leave {
                user: r.varint()?,
                channel: r.varint()?,
            },
            TAG_DELETE_CHANNEL => Write::DeleteChannel {
                channel: r.varint()?,
            },
            TAG_SETTINGS => Write::Settings {
                user: r.varint()?,
                channel: r.varint()?,
                settings: Settings {
                    muted_until: r.varint()?,
                    muted_at: r.varint()?,
                    level: r.level()?,
                    level_at: r.varint()?,
                },
            },
            TAG_CHANNEL_META => Write::ChannelMeta {
                channel: r.varint()?,
                meta: ChannelMeta {
                    parent: r.varint()?,
                    group: r.varint()?,
                    at: r.varint()?,
                },
            },
            TAG_DELETE_USER => Write::DeleteUser { user: r.varint()? },
            tag => return Err(DecodeError::BadTag(tag)),
        };
        writes.push(w);
    }
    if r.remaining() != 0 {
        return Err(DecodeError::TrailingBytes(r.remaining()));
    }
    Ok(writes)
}

/// Checkpoint file: magic, segment, offset, CRC-32C of the 24 bytes before it.
pub(crate) fn encode_checkpoint(p: Position) -> [u8; CHECKPOINT_LEN] {
    let mut out = [0u8; CHECKPOINT_LEN];
    out[..8].copy_from_slice(CHECKPOINT_MAGIC);
    out[8..16].copy_from_slice(&p.segment.to_le_bytes());
    out[16..24].copy_from_slice(&p.offset.to_le_bytes());
    let sum = crc(&out[..24]);
    out[24..].copy_from_slice(&sum.to_le_bytes());
    out
}

pub(crate) fn parse_checkpoint(data: &[u8]) -> Result<Position, String> {
    if data.len() != CHECKPOINT_LEN {
        return Err(format!(
            "checkpoint is {} bytes, expected {CHECKPOINT_LEN}",
            data.len()
        ));
    }
    if &data[..8] != CHECKPOINT_MAGIC {
        return Err("bad checkpoint magic".to_owned());
    }
    if crc(&data[..24]) != u32_at(data, 24) {
        return Err("checkpoint checksum mismatch".to_owned());
    }
    Ok(Position {
        segment: u64_at(data, 8),
        offset: u64_at(data, 16),
    })
}

fn u32_at(data: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&data[off..off + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(data: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&data[off..off + 8]);
    u64::from_le_bytes(b)
}
