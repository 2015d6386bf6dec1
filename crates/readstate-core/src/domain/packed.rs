//! Byte-level helpers of the compact encodings of users' read states
//! ([`super::UserStates`]) and channels' windows ([`super::ChannelWindow`]): fixed-width
//! little-endian fields and LEB128 varints.

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

/// Bytes of `v` as a LEB128 varint (7 bits a byte).
pub(super) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends `v` as a LEB128 varint.
pub(super) fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        // Truncation intended: the low 7 bits, with the continuation bit.
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads the varint at `*at` and moves past it. The buffer is one this module wrote.
pub(super) fn read_varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = bytes[*at];
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return v;
        }
        shift += 7;
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
