//! Contiguous k-fold splits, sized as scikit-learn's `KFold(n_splits=k, shuffle=False)` sizes them: the
//! first `n % k` folds hold one item more than the rest. insightface's 10-fold protocol depends on this
//! exact split, so accuracies only match when the folds do.

use crate::{Error, Result};
use std::ops::Range;

/// The test range of each fold; the training set of fold `f` is everything outside `folds[f]`.
pub fn kfold_ranges(n: usize, k: usize) -> Result<Vec<Range<usize>>> {
    if k < 2 {
        return Err(Error::Invalid(format!("k-fold needs at least 2 folds, got {k}")));
    }
    if n < k {
        return Err(Error::Invalid(format!("{k}-fold split needs at least {k} pairs, got {n}")));
    }
    let (base, extra) = (n / k, n % k);
    let mut start = 0;
    Ok((0..k)
        .map(|f| {
            let len = base + usize::from(f < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect())
}

/// Fold index of every item, for one pass over a sorted order.
pub fn fold_of_each(n: usize, folds: &[Range<usize>]) -> Vec<usize> {
    let mut out = vec![0; n];
    for (f, r) in folds.iter().enumerate() {
        out[r.clone()].iter_mut().for_each(|x| *x = f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_sklearn_kfold() {
        // sklearn: KFold(10).split(range(1003)) gives four folds of 101, then six of 100.
        let f = kfold_ranges(1003, 10).unwrap();
        let lens: Vec<usize> = f.iter().map(|r| r.len()).collect();
        assert_eq!(lens, vec![101, 101, 101, 100, 100, 100, 100, 100, 100, 100]);
        assert_eq!(f[0].start, 0);
        assert_eq!(f[9].end, 1003);
        for w in f.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        let even = kfold_ranges(6000, 10).unwrap();
        assert!(even.iter().all(|r| r.len() == 600));
    }

    #[test]
    fn too_few_items_is_an_error() {
        assert!(kfold_ranges(9, 10).is_err());
        assert!(kfold_ranges(10, 1).is_err());
    }

    #[test]
    fn fold_of_each_marks_ranges() {
        let f = kfold_ranges(5, 2).unwrap();
        assert_eq!(fold_of_each(5, &f), vec![0, 0, 0, 1, 1]);
    }
}
