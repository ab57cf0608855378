//! The verification protocol against tests/parity/eval_ref.py (insightface's calculate_roc and
//! calculate_val re-derived in numpy): accuracies to 1e-9, chosen thresholds exactly.

use engine::eval::verification::{pair_distances, sum_with_flipped, verify_distances, verify_embeddings};

mod eval_fixture;
use eval_fixture::Case;

fn load_cases() -> Vec<Case> {
    let cases = eval_fixture::load_cases("eval_verification.txt", "eval_ref.py");
    assert!(cases.len() >= 4, "eval_verification.txt: expected 4 cases, found {}", cases.len());
    cases
}

fn close(name: &str, what: &str, got: f64, want: f64, tol: f64) {
    assert!((got - want).abs() <= tol, "case {name}: {what} = {got}, reference {want}");
}

#[test]
fn verification_matches_insightface_reference() {
    for case in load_cases() {
        let name = case.name.as_str();
        let issame: Vec<bool> = case.raw("issame").iter().map(|v| v == "1").collect();
        let want_dist = case.floats("dist");
        let report = if case.fields.contains_key("plain") {
            let dim = case.float("dim") as usize;
            let f32s = |k: &str| case.floats(k).iter().map(|&v| v as f32).collect::<Vec<f32>>();
            let emb = sum_with_flipped(&f32s("plain"), &f32s("flipped")).unwrap();
            let dist = pair_distances(&emb, dim).unwrap();
            for (i, (d, w)) in dist.iter().zip(&want_dist).enumerate() {
                close(name, &format!("distance {i}"), *d, *w, 1e-12);
            }
            verify_embeddings(&emb, dim, &issame).unwrap()
        } else {
            verify_distances(&want_dist, &issame).unwrap()
        };

        let want_acc = case.floats("fold_accuracies");
        assert_eq!(report.fold_accuracies.len(), want_acc.len(), "case {name}: fold count");
        for (f, (a, w)) in report.fold_accuracies.iter().zip(&want_acc).enumerate() {
            close(name, &format!("fold {f} accuracy"), *a, *w, 1e-9);
        }
        assert_eq!(report.fold_thresholds, case.floats("fold_thresholds"), "case {name}: fold thresholds");
        close(name, "accuracy mean", report.accuracy_mean, case.float("accuracy_mean"), 1e-9);
        close(name, "accuracy std", report.accuracy_std, case.float("accuracy_std"), 1e-9);
        assert_eq!(report.best_threshold, case.float("best_threshold"), "case {name}: best threshold");
        close(name, "best accuracy", report.best_accuracy, case.float("best_accuracy"), 1e-9);

        let val = report.val.as_ref().unwrap_or_else(|| panic!("case {name}: no VAL"));
        assert_eq!(val.fold_thresholds, case.floats("val_thresholds"), "case {name}: VAL thresholds");
        close(name, "VAL mean", val.val_mean, case.float("val_mean"), 1e-9);
        close(name, "VAL std", val.val_std, case.float("val_std"), 1e-9);
        close(name, "FAR mean", val.far_mean, case.float("far_mean"), 1e-9);

        close(name, "grid AUC", report.grid_auc, case.float("grid_auc"), 1e-9);
        close(name, "AUC", report.auc, case.float("auc"), 1e-9);
        let want_tar = case.raw("tar_at_far");
        assert_eq!(report.tar_at_far.len(), want_tar.len(), "case {name}: TAR@FAR rows");
        for (t, w) in report.tar_at_far.iter().zip(want_tar) {
            match (t.tar, w.as_str()) {
                (None, "none") => {}
                (Some(got), w) if w != "none" => {
                    close(name, &format!("TAR@{}", t.far), got, w.parse().unwrap(), 1e-12)
                }
                (got, w) => panic!("case {name}: TAR@{} = {got:?}, reference {w}", t.far),
            }
        }
    }
}
