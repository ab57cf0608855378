//! The container's framing: magic word, length word with continuation flag, padding.

/// Every record part starts with this word (little-endian on disk: `0a 23 d7 ce`).
pub const MAGIC: u32 = 0xced7_230a;
/// The length occupies the low 29 bits of the length word; the top 3 bits are the continuation flag.
pub const LENGTH_BITS: u32 = 29;
pub const MAX_LENGTH: u32 = (1 << LENGTH_BITS) - 1;

/// Continuation flags.
pub const WHOLE: u32 = 0;
pub const FIRST: u32 = 1;
pub const MIDDLE: u32 = 2;
pub const LAST: u32 = 3;

pub fn pad4(n: u64) -> u64 {
    (n + 3) & !3
}

pub fn encode_lrecord(cflag: u32, length: u32) -> u32 {
    (cflag << LENGTH_BITS) | length
}

pub fn decode_lrecord(lrec: u32) -> (u32, u32) {
    (lrec >> LENGTH_BITS, lrec & MAX_LENGTH)
}

/// One on-disk part of a record: its continuation flag and the payload bytes it carries.
#[derive(Debug, PartialEq, Eq)]
pub struct Part<'a> {
    pub cflag: u32,
    pub bytes: &'a [u8],
}

/// Splits a payload the way dmlc-core's writer does: at every 4-byte-aligned occurrence of the magic,
/// the magic itself is dropped (the reader re-inserts it between parts).
pub fn split_payload(payload: &[u8]) -> Vec<Part<'_>> {
    let magic = MAGIC.to_le_bytes();
    let mut parts = Vec::new();
    let mut start = 0usize;
    let aligned_end = payload.len() & !3;
    let mut i = 0usize;
    while i < aligned_end {
        if payload[i..i + 4] == magic {
            let cflag = if start == 0 && parts.is_empty() { FIRST } else { MIDDLE };
            parts.push(Part { cflag, bytes: &payload[start..i] });
            start = i + 4;
        }
        i += 4;
    }
    let cflag = if parts.is_empty() { WHOLE } else { LAST };
    parts.push(Part { cflag, bytes: &payload[start..] });
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_unaligned_magic_and_splits_aligned() {
        let m = MAGIC.to_le_bytes();
        // Magic at offset 1 (unaligned): no split.
        let mut p = vec![9u8];
        p.extend_from_slice(&m);
        assert_eq!(split_payload(&p).len(), 1);
        // Magic at offsets 4 and 8: first, middle (empty), last.
        let mut q = vec![1u8, 2, 3, 4];
        q.extend_from_slice(&m);
        q.extend_from_slice(&m);
        q.extend_from_slice(&[7, 7]);
        let parts = split_payload(&q);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], Part { cflag: FIRST, bytes: &[1, 2, 3, 4] });
        assert_eq!(parts[1], Part { cflag: MIDDLE, bytes: &[] });
        assert_eq!(parts[2], Part { cflag: LAST, bytes: &[7, 7] });
    }

    #[test]
    fn magic_at_start_gives_an_empty_first_part() {
        let mut p = MAGIC.to_le_bytes().to_vec();
        p.push(5);
        let parts = split_payload(&p);
        assert_eq!(parts, vec![Part { cflag: FIRST, bytes: &[] }, Part { cflag: LAST, bytes: &[5] }]);
    }

    #[test]
    fn lrecord_round_trip() {
        let l = encode_lrecord(LAST, 12345);
        assert_eq!(decode_lrecord(l), (LAST, 12345));
        assert_eq!(pad4(5), 8);
        assert_eq!(pad4(8), 8);
    }
}
