//! Writes a `.bin` verification set as a protocol-4 pickle of (list of bytes, list of bools), which
//! insightface's `verification.py` loads with `pickle.load(f, encoding='bytes')`.

use super::PairSet;
use crate::error::{DataError, Result};
use std::path::Path;

pub fn write_bin(path: &Path, set: &PairSet) -> Result<()> {
    if set.images.len() != 2 * set.same.len() || set.same.is_empty() {
        return Err(DataError::Invalid {
            what: format!("{}: {} images for {} pairs", path.display(), set.images.len(), set.same.len()),
        });
    }
    let tmp = crate::recordio::temp_name(path);
    std::fs::write(&tmp, encode(set)).map_err(|e| DataError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| DataError::io(path, e))
}

pub(crate) fn encode(set: &PairSet) -> Vec<u8> {
    let total: usize = set.images.iter().map(|b| b.len() + 9).sum();
    let mut out = Vec::with_capacity(total + set.same.len() + 32);
    out.extend_from_slice(&[0x80, 4]); // PROTO 4; FRAME is optional and omitted
    out.extend_from_slice(b"]("); // EMPTY_LIST, MARK
    for img in &set.images {
        if img.len() < 256 {
            out.push(b'C'); // SHORT_BINBYTES
            out.push(img.len() as u8);
        } else if img.len() <= u32::MAX as usize {
            out.push(b'B'); // BINBYTES
            out.extend_from_slice(&(img.len() as u32).to_le_bytes());
        } else {
            out.push(0x8e); // BINBYTES8
            out.extend_from_slice(&(img.len() as u64).to_le_bytes());
        }
        out.extend_from_slice(img);
    }
    out.extend_from_slice(b"e]("); // APPENDS, EMPTY_LIST, MARK
    out.extend(set.same.iter().map(|&s| if s { 0x88 } else { 0x89 }));
    out.extend_from_slice(&[b'e', 0x86, b'.']); // APPENDS, TUPLE2, STOP
    out
}

#[cfg(test)]
mod tests {
    use super::super::pickle_read::parse_bin;
    use super::*;
    use crate::testutil::TempDir;

    fn set() -> PairSet {
        PairSet {
            images: vec![b"a".to_vec(), vec![7; 300], vec![], b"\x80\x04.".to_vec()],
            same: vec![true, false],
        }
    }

    #[test]
    fn round_trip() {
        let dir = TempDir::new("bin-rt");
        let p = dir.path().join("x.bin");
        write_bin(&p, &set()).unwrap();
        assert_eq!(super::super::read_bin(&p).unwrap(), set());
    }

    #[test]
    fn python2_protocol2_with_memo_and_binstring() {
        // pickle.dumps(([b'ab', b'ab'], [True]), 2) as Python 2 writes it: str as SHORT_BINSTRING, memo puts.
        let mut p =
            vec![0x80, 2, b']', b'q', 0, b'(', b'U', 2, b'a', b'b', b'q', 1, b'h', 1, b'e', b']', b'q', 2];
        p.extend_from_slice(&[0x88, b'a', 0x86, b'q', 3, b'.']);
        let s = parse_bin(&p, Path::new("p2.bin")).unwrap();
        assert_eq!(s.images, vec![b"ab".to_vec(), b"ab".to_vec()]);
        assert_eq!(s.same, vec![true]);
    }

    #[test]
    fn refuses_everything_else_with_offsets() {
        let path = Path::new("bad.bin");
        let msg = |b: &[u8]| parse_bin(b, path).unwrap_err().to_string();
        assert!(msg(&[0x80, 1]).contains("protocol 1"));
        let mut wrong_op = encode(&set());
        wrong_op[2] = b'}'; // EMPTY_DICT
        let m = msg(&wrong_op);
        assert!(m.contains("bad.bin: pickle byte 2") && m.contains("0x7d"), "{m}");
        let full = encode(&set());
        for cut in [0, 1, 5, full.len() - 1] {
            assert!(msg(&full[..cut]).contains("bad.bin"), "cut {cut}");
        }
        // Three images for two pairs.
        let odd = PairSet { images: vec![vec![1]; 3], same: vec![true, false] };
        assert!(msg(&encode(&odd)).contains("3 images for 2 pairs"));
        // issame as ints other than 0/1, and a non-tuple top object.
        assert!(msg(&[0x80, 4, b']', b'.']).contains("not a tuple"));
        let mut bad_flag =
            vec![0x80, 4, b']', b'(', b'C', 1, b'x', b'C', 1, b'y', b'e', b']', b'K', 7, b'a', 0x86, b'.'];
        assert!(msg(&bad_flag).contains("issame_list[0] is an int"));
        bad_flag[13] = 1;
        assert_eq!(parse_bin(&bad_flag, path).unwrap().same, vec![true]);
        // A global that is not numpy's array constructor.
        let evil = b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.";
        assert!(msg(evil).contains("not a tuple"));
        assert!(matches!(
            parse_bin(&encode(&PairSet { images: vec![], same: vec![] }), path),
            Err(DataError::Empty { .. })
        ));
    }
}

#[cfg(test)]
mod mutation_tests {
    use super::super::pickle_read::parse_bin;
    use super::*;

    #[test]
    fn mutated_pickles_give_errors_not_panics() {
        // In-tree stand-in for the cargo-fuzz target: flips, cuts and random bytes in a valid pickle.
        let valid = encode(&PairSet {
            images: vec![vec![1; 3], vec![2; 300], vec![3], vec![4; 20]],
            same: vec![true, false],
        });
        let mut rng = crate::rng::Rng::new(5);
        let mut ok = 0;
        for _ in 0..5000 {
            let mut b = valid.clone();
            for _ in 0..1 + rng.below(3) {
                let p = rng.below(b.len() as u64) as usize;
                match rng.below(3) {
                    0 => b[p] ^= 1 << rng.below(8),
                    1 => b[p] = rng.next_u64() as u8,
                    _ => b.truncate(p.max(1)),
                }
            }
            ok += parse_bin(&b, Path::new("m.bin")).is_ok() as u32;
        }
        assert!(ok < 5000, "some mutations must be refused");
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        // ([[[[...]]]], []) nested 100,000 deep.
        let mut b = vec![0x80, 4];
        b.extend(std::iter::repeat_n(b']', 100_000));
        b.extend(std::iter::repeat_n(b'a', 99_999));
        b.extend_from_slice(&[b']', 0x86, b'.']);
        let e = parse_bin(&b, Path::new("deep.bin")).unwrap_err().to_string();
        assert!(e.contains("nested more than 32 deep"), "{e}");
    }
}
