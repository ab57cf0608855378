//! Per-channel reductions over the rows of a `[rows, C]` view, parallel and deterministic: rows are cut
//! into fixed blocks, each block sums into its own f64 accumulators, and the partials are added in block
//! order. The blocking depends only on the row count.

use rayon::prelude::*;

/// Rows per partial sum.
const ROWS_PER_BLOCK: usize = 256;

/// Sums `f(row_range, acc)` over fixed row blocks; `acc` has `width` f64 slots, zeroed per block.
pub fn reduce_rows<F>(rows: usize, width: usize, f: F) -> Vec<f64>
where
    F: Fn(std::ops::Range<usize>, &mut [f64]) + Sync,
{
    let blocks = rows.div_ceil(ROWS_PER_BLOCK);
    let partials: Vec<Vec<f64>> = (0..blocks)
        .into_par_iter()
        .map(|b| {
            let mut acc = vec![0.0; width];
            f(b * ROWS_PER_BLOCK..((b + 1) * ROWS_PER_BLOCK).min(rows), &mut acc);
            acc
        })
        .collect();
    let mut total = vec![0.0; width];
    for p in partials {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total
}

/// Row count of `len` elements laid out as rows of `c`.
pub fn rows_of(len: usize, c: usize) -> usize {
    len.checked_div(c).unwrap_or(0)
}

/// Elements per parallel task in elementwise loops over rows (a multiple of nothing in particular: any
/// fixed size gives the same result, since each element is computed alone).
pub const ELEMS_PER_TASK: usize = 1 << 14;

/// Rows per task for row-wise maps over rows of `c` elements.
pub fn rows_per_task(c: usize) -> usize {
    (ELEMS_PER_TASK / c.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_row_once() {
        let rows = 1000;
        let s = reduce_rows(rows, 2, |r, acc| {
            for i in r {
                acc[0] += i as f64;
                acc[1] += 1.0;
            }
        });
        assert_eq!(s, vec![(rows * (rows - 1) / 2) as f64, rows as f64]);
    }
}
