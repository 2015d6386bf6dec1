//! Byte-level helpers of the compact encodings of users' read states
//! ([`super::UserStates`]) and channels' windows ([`super::ChannelWindow`]): fixed-width
//! little-endian fields.

/// Bytes needed to hold `v` (0 for 0).
pub(super) fn width_of(v: u64) -> usize {
    (64 - v.leading_zeros() as usize).div_ceil(8)
}

/// A little-endian unsigned integer of `bytes.len()` (at most 8) bytes. One arm per
/// width, so that each is a few fixed-size loads rather than a call to `memcpy`.
#[inline]
pub(super) fn read_le(bytes: &[u8]) -> u64 {
    let word = |b: [u8; 8]| u64::from_le_bytes(b);
    match *bytes {
        [a] => u64::from(a),
        [a, b] => u64::from(u16::from_le_bytes([a, b])),
        [a, b, c] => u64::from(u32::from_le_bytes([a, b, c, 0])),
        [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
        [a, b, c, d, e] => word([a, b, c, d, e, 0, 0, 0]),
        [a, b, c, d, e, f] => word([a, b, c, d, e, f, 0, 0]),
        [a, b, c, d, e, f, g] => word([a, b, c, d, e, f, g, 0]),
        [a, b, c, d, e, f, g, h] => word([a, b, c, d, e, f, g, h]),
        // Empty (a zero-width field), or longer than any field this module writes.
        _ => 0,
    }
}

/// The `width`-byte (1..=8) little-endian field at `data[at..]`: one 8-byte load
/// and a shift where `data` holds 8 bytes from `at`, [`read_le`] of the field
/// otherwise (the last few bytes of a short buffer).
#[inline]
pub(super) fn read_le_at(data: &[u8], at: usize, width: usize) -> u64 {
    debug_assert!((1..=8).contains(&width), "a field of 1 to 8 bytes");
    match data.get(at..at + 8) {
        Some(word) => {
            let word: [u8; 8] = word.try_into().expect("a range of 8 is 8 bytes");
            u64::from_le_bytes(word) & (u64::MAX >> (64 - 8 * width))
        }
        None => read_le(&data[at..at + width]),
    }
}

/// Writes the low `out.len()` (at most 8) bytes of `v`, little-endian; one arm per
/// width, as [`read_le`].
#[inline]
pub(super) fn write_le(out: &mut [u8], v: u64) {
    let bytes = v.to_le_bytes();
    match out.len() {
        1 => out.copy_from_slice(&bytes[..1]),
        2 => out.copy_from_slice(&bytes[..2]),
        3 => out.copy_from_slice(&bytes[..3]),
        4 => out.copy_from_slice(&bytes[..4]),
        5 => out.copy_from_slice(&bytes[..5]),
        6 => out.copy_from_slice(&bytes[..6]),
        7 => out.copy_from_slice(&bytes[..7]),
        8 => out.copy_from_slice(&bytes),
        // A zero-width field holds nothing.
        _ => {}
    }
}

/// Appends the low `width` (at most 8) bytes of `v`, little-endian.
#[inline]
pub(super) fn push_le(out: &mut Vec<u8>, v: u64, width: usize) {
    let end = out.len() + width;
    out.resize(end, 0);
    write_le(&mut out[end - width..], v);
}

/// How many of `len` records (the first at `start`, `stride` bytes apart, ascending
/// by the `width`-byte field they start with) have a field of at most `key`: a binary
/// search. One loop per width, so that reading a field is a fixed-size load rather
/// than a dispatch on its width at every probe. The dispatch itself is always inlined
/// into its caller (a lookup is on the path of every ack).
#[inline(always)]
pub(super) fn count_at_most(
    data: &[u8],
    start: usize,
    stride: usize,
    width: usize,
    len: usize,
    key: u64,
) -> usize {
    match width {
        1 => count_at_most_w::<1>(data, start, stride, len, key),
        2 => count_at_most_w::<2>(data, start, stride, len, key),
        3 => count_at_most_w::<3>(data, start, stride, len, key),
        4 => count_at_most_w::<4>(data, start, stride, len, key),
        5 => count_at_most_w::<5>(data, start, stride, len, key),
        6 => count_at_most_w::<6>(data, start, stride, len, key),
        7 => count_at_most_w::<7>(data, start, stride, len, key),
        _ => count_at_most_w::<8>(data, start, stride, len, key),
    }
}

/// Up to this many records, [`count_at_most`] scans rather than halves.
const LINEAR_SEARCH_MAX: usize = 16;

fn count_at_most_w<const W: usize>(
    data: &[u8],
    start: usize,
    stride: usize,
    len: usize,
    key: u64,
) -> usize {
    // The W-byte field a record starts with.
    let load = |record: &[u8]| {
        let mut word = [0u8; 8];
        word[..W].copy_from_slice(&record[..W]);
        u64::from_le_bytes(word)
    };
    let field = |i: usize| load(&data[start + i * stride..]);
    if len <= LINEAR_SEARCH_MAX {
        // Few records: a scan that stops at the first field above the key costs
        // fewer instructions than the halvings (no index arithmetic per probe).
        let end = start + len * stride;
        return data[start..end]
            .chunks_exact(stride)
            .take_while(|record| load(record) <= key)
            .count();
    }
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if field(mid) <= key {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_reads_the_same_near_the_end_of_a_buffer_as_inside_it() {
        let data: Vec<u8> = (1..=24u8).map(|b| b.wrapping_mul(37)).collect();
        for width in 1..=8usize {
            for at in 0..=data.len() - width {
                assert_eq!(
                    read_le_at(&data, at, width),
                    read_le(&data[at..at + width]),
                    "width {width} at {at}"
                );
            }
        }
    }

    #[test]
    fn the_search_counts_the_fields_at_most_the_key_at_every_width() {
        for width in 1..=8usize {
            // Records of the field then one padding byte, fields 0, 2, 4, ...
            let stride = width + 1;
            let mut data = vec![0xee; 3];
            for v in 0..20u64 {
                push_le(&mut data, v * 2, width);
                data.push(0xff);
            }
            // Short runs are scanned, long ones halved: both, at every length.
            for len in 0..=20usize {
                for key in 0..45u64 {
                    let expected = (0..len as u64).filter(|v| v * 2 <= key).count();
                    assert_eq!(
                        count_at_most(&data, 3, stride, width, len, key),
                        expected,
                        "width {width}, {len} records, key {key}"
                    );
                }
            }
            assert_eq!(count_at_most(&data, 3, stride, width, 0, 7), 0);
        }
    }
}
