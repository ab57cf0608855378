//! The meaningful range of every numeric training flag, checked before anything is built, so that a
//! nonsense value is one sentence naming the flag instead of a panic, a silent no-op or a run that
//! trains on garbage. The head's own hyper-parameters are checked by the head (`heads::params`).
//!
//! Ranges where the sources give none are our choices: the learning rate, epochs and the gradient clip
//! must be > 0, weight decay >= 0, momentum in [0, 1) (1 and above make SGD's velocity grow without
//! bound), warm-ups shorter than the run, counts at least 1 (the batch at least 2: batch norm), and a
//! time limit that a `Duration` holds.

use crate::train::recipe::RecipeFlags;
use crate::{Error, Result};
use std::time::Duration;

/// Epochs beyond this are a typo (a million epochs of even one step is weeks of work).
const MAX_EPOCHS: f64 = 1e6;

fn bad(flag: &str, v: impl std::fmt::Display, want: &str) -> Error {
    Error::Invalid(format!("--{flag} {v}: {want}"))
}

/// A number as a user would write it back: 1e300, not three hundred digits.
pub fn show(v: f64) -> String {
    if v.is_finite() && v != 0.0 && !(1e-4..1e6).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// `v` finite and accepted by `ok`, else an error naming `--flag` and describing the range `want`.
fn check(flag: &str, v: Option<f64>, ok: impl Fn(f64) -> bool, want: &str) -> Result<()> {
    match v {
        Some(v) if !v.is_finite() || !ok(v) => Err(bad(flag, show(v), want)),
        _ => Ok(()),
    }
}

/// Every numeric recipe flag against its range (the head's hyper-parameters excepted).
pub fn check_recipe_flags(f: &RecipeFlags) -> Result<()> {
    if let Some(b @ (0 | 1)) = f.batch_size {
        // Batch norm after the embedding needs two values per channel (torch refuses one too).
        return Err(bad("batch-size", b, "must be at least 2 (batch norm needs two images)"));
    }
    check("epochs", f.epochs, |v| v > 0.0 && v <= MAX_EPOCHS, "must be > 0 (and at most 1e6)")?;
    check("lr", f.lr, |v| v > 0.0, "the learning rate must be > 0")?;
    check("momentum", f.momentum, |v| (0.0..1.0).contains(&v), "must lie in [0, 1)")?;
    check("weight-decay", f.weight_decay, |v| v >= 0.0, "must be >= 0")?;
    check("grad-clip", f.grad_clip, |v| v > 0.0, "the largest gradient norm must be > 0")?;
    check("lr-warmup-epochs", f.lr_warmup_epochs, |v| v >= 0.0, "must be >= 0")?;
    check("warmup-epochs", f.warmup_epochs, |v| v >= 0.0, "must be >= 0")?;
    if let (Some(w), Some(e)) = (f.lr_warmup_epochs, f.epochs) {
        if w >= e {
            let want = format!("the warm-up must be shorter than --epochs {}", show(e));
            return Err(bad("lr-warmup-epochs", show(w), &want));
        }
    }
    if let Some(m) = &f.milestones {
        if let Some(v) = m.iter().find(|v| !v.is_finite() || **v <= 0.0) {
            return Err(bad("milestones", show(*v), "every milestone must be a number of epochs > 0"));
        }
        if m.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad("milestones", format!("{m:?}"), "milestones must increase"));
        }
    }
    if f.eval_every == Some(0) {
        return Err(bad("eval-every", 0, "must be at least 1 step"));
    }
    if let Some(d @ (0 | 1)) = f.embedding_size {
        return Err(bad("embedding-size", d, "must be at least 2 (a direction needs two coordinates)"));
    }
    Ok(())
}

/// `--checkpoint-every`: at least one step.
pub fn check_checkpoint_every(n: u64) -> Result<()> {
    if n == 0 {
        return Err(bad("checkpoint-every", 0, "must be at least 1 step"));
    }
    Ok(())
}

/// `--time-limit` in minutes as a duration: finite, > 0 and within what a `Duration` holds.
pub fn time_limit(minutes: Option<f64>) -> Result<Option<Duration>> {
    let Some(m) = minutes else { return Ok(None) };
    let want = "the time limit must be a number of minutes > 0";
    if !m.is_finite() || m <= 0.0 {
        return Err(bad("time-limit", show(m), want));
    }
    Duration::try_from_secs_f64(m * 60.0).map(Some).map_err(|_| bad("time-limit", show(m), "too large"))
}

/// `--collective-timeout` in seconds: finite, at least 1 s (rank 0's evaluations must fit in it).
pub fn collective_timeout(seconds: f64) -> Result<Duration> {
    if !seconds.is_finite() || seconds < 1.0 {
        return Err(bad("collective-timeout", show(seconds), "must be a number of seconds >= 1"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| bad("collective-timeout", show(seconds), "too large"))
}

/// `--bucket-mb` in bytes: finite, 0 (no buckets) to 4096 MiB.
pub fn bucket_bytes(mib: f64) -> Result<usize> {
    if !mib.is_finite() || !(0.0..=4096.0).contains(&mib) {
        return Err(bad("bucket-mb", show(mib), "must be a number of MiB from 0 to 4096"));
    }
    Ok((mib * (1u64 << 20) as f64) as usize)
}

/// `--gpus`: at least one.
pub fn check_gpus(n: Option<usize>) -> Result<()> {
    if n == Some(0) {
        return Err(bad("gpus", 0, "must be at least 1"));
    }
    Ok(())
}

/// `--threads`: at least one.
pub fn check_threads(n: Option<usize>) -> Result<()> {
    if n == Some(0) {
        return Err(bad("threads", 0, "must be at least 1"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(f: RecipeFlags) -> String {
        check_recipe_flags(&f).unwrap_err().to_string()
    }

    #[test]
    fn each_out_of_range_flag_is_named() {
        let d = RecipeFlags::default;
        let cases = [
            (RecipeFlags { lr: Some(-1.0), ..d() }, "--lr -1"),
            (RecipeFlags { lr: Some(0.0), ..d() }, "--lr 0"),
            (RecipeFlags { lr: Some(f64::NAN), ..d() }, "--lr NaN"),
            (RecipeFlags { lr: Some(f64::INFINITY), ..d() }, "--lr inf"),
            (RecipeFlags { weight_decay: Some(-1.0), ..d() }, "--weight-decay -1"),
            (RecipeFlags { grad_clip: Some(-1.0), ..d() }, "--grad-clip -1"),
            (RecipeFlags { grad_clip: Some(0.0), ..d() }, "--grad-clip 0"),
            (RecipeFlags { momentum: Some(5.0), ..d() }, "--momentum 5"),
            (RecipeFlags { momentum: Some(1.0), ..d() }, "--momentum 1"),
            (RecipeFlags { momentum: Some(-0.1), ..d() }, "--momentum -0.1"),
            (RecipeFlags { lr_warmup_epochs: Some(-1.0), ..d() }, "--lr-warmup-epochs -1"),
            (
                RecipeFlags { lr_warmup_epochs: Some(3.0), epochs: Some(3.0), ..d() },
                "shorter than --epochs 3",
            ),
            (RecipeFlags { warmup_epochs: Some(-2.0), ..d() }, "--warmup-epochs -2"),
            (RecipeFlags { epochs: Some(0.0), ..d() }, "--epochs 0"),
            (RecipeFlags { epochs: Some(-3.0), ..d() }, "--epochs -3"),
            (RecipeFlags { epochs: Some(1e300), ..d() }, "--epochs 1e300"),
            (RecipeFlags { batch_size: Some(0), ..d() }, "--batch-size 0"),
            (RecipeFlags { batch_size: Some(1), ..d() }, "--batch-size 1"),
            (RecipeFlags { eval_every: Some(0), ..d() }, "--eval-every 0"),
            (RecipeFlags { milestones: Some(vec![2.0, 1.0]), ..d() }, "must increase"),
            (RecipeFlags { milestones: Some(vec![f64::NAN]), ..d() }, "--milestones NaN"),
        ];
        for (f, want) in cases {
            let e = err(f);
            assert!(e.contains(want), "{e} (expected {want})");
        }
        let ok = RecipeFlags {
            lr: Some(0.1),
            momentum: Some(0.0),
            weight_decay: Some(0.0),
            lr_warmup_epochs: Some(0.0),
            epochs: Some(0.5),
            milestones: Some(vec![0.1, 0.2]),
            ..d()
        };
        check_recipe_flags(&ok).unwrap();
    }

    #[test]
    fn counts_and_the_time_limit_are_checked_without_panicking() {
        assert!(check_checkpoint_every(0).unwrap_err().to_string().contains("--checkpoint-every 0"));
        check_checkpoint_every(1).unwrap();
        assert!(check_threads(Some(0)).unwrap_err().to_string().contains("--threads 0"));
        for m in [-1.0, 0.0, f64::NAN, f64::INFINITY, 1e300] {
            let e = time_limit(Some(m)).unwrap_err().to_string();
            assert!(e.contains("--time-limit"), "{e}");
        }
        assert_eq!(time_limit(Some(0.5)).unwrap(), Some(Duration::from_secs(30)));
        assert_eq!(time_limit(None).unwrap(), None);
        for m in [-0.5, f64::NAN, f64::INFINITY, 5000.0] {
            let e = bucket_bytes(m).unwrap_err().to_string();
            assert!(e.contains("--bucket-mb"), "{e}");
        }
        assert_eq!(bucket_bytes(25.0).unwrap(), 25 << 20);
        assert_eq!(bucket_bytes(0.0).unwrap(), 0);
    }
}
