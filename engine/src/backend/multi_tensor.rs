//! How a multi-tensor launch (kernels/cuda/optim.cu, amp.cu) covers its tensors: tables of at most
//! `max` entries, each entry `ceil(n / MT_CHUNK)` blocks of one launch, in order. The CUDA backend
//! launches by this plan and the meta backend records by it, so both count the same launches.

use std::ops::Range;

/// Elements per block (`MT_CHUNK` in kernels/cuda/common.cuh).
pub const MT_CHUNK: usize = 4096;
/// Entries per table of the optimizer kernels (`OPT_MAX` in optim.cu; the table fits the 4 KB of
/// kernel arguments every CUDA version takes).
pub const OPT_MAX: usize = 32;
/// Entries per table of the check kernels (`CHECK_MAX` in amp.cu).
pub const CHECK_MAX: usize = 128;
/// Blocks per launch at most (a table's block numbers are 32-bit ints).
const MAX_BLOCKS: usize = 1 << 30;

/// One launch: the tensors `range` of the list, the first block of each (relative to the launch) and,
/// last, the launch's block count.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub range: Range<usize>,
    pub first_block: Vec<i32>,
}

impl Launch {
    pub fn blocks(&self) -> usize {
        *self.first_block.last().unwrap_or(&0) as usize
    }
}

/// The launches over tensors of `sizes` elements, at most `max` per table. Launches without a block (only
/// empty tensors) are left out.
pub fn plan(sizes: &[usize], max: usize) -> Vec<Launch> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < sizes.len() {
        let mut first = vec![0i32];
        let mut blocks = 0usize;
        let mut end = start;
        while end < sizes.len() && end - start < max {
            let b = sizes[end].div_ceil(MT_CHUNK);
            if end > start && blocks + b > MAX_BLOCKS {
                break;
            }
            blocks += b;
            first.push(blocks as i32);
            end += 1;
        }
        if blocks > 0 {
            out.push(Launch { range: start..end, first_block: first });
        }
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_hold_at_most_max_entries_and_cover_every_element() {
        let sizes = [1, MT_CHUNK, MT_CHUNK + 1, 0, 5 * MT_CHUNK, 7];
        let p = plan(&sizes, 4);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0], Launch { range: 0..4, first_block: vec![0, 1, 2, 4, 4] });
        assert_eq!(p[1], Launch { range: 4..6, first_block: vec![0, 5, 6] });
        assert_eq!(p[0].blocks() + p[1].blocks(), 10);
        assert!(plan(&[0, 0], 4).is_empty());
        assert!(plan(&[], 4).is_empty());
    }
}
