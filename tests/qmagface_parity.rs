//! The QMagFace weight fit against tests/parity/qmagface_ref.py (QMagFace's `train` re-derived in numpy
//! with scikit-learn's roc_curve emulated): the chosen weight and threshold at every FMR, and the line.

use engine::eval::qmagface::{fit, FitOptions};

mod eval_fixture;

#[test]
fn fit_matches_qmagface_reference() {
    let cases = eval_fixture::load_cases("qmagface_fit.txt", "qmagface_ref.py");
    for case in cases {
        let name = &case.name;
        let issame: Vec<bool> = case.raw("issame").iter().map(|v| v == "1").collect();
        let got = fit(&case.floats("cos"), &case.floats("qmin"), &issame, &FitOptions::default()).unwrap();
        let (fmr, omega) = (case.floats("fmr"), case.floats("omega"));
        let (threshold, fnmr) = (case.floats("threshold"), case.floats("fnmr"));
        assert_eq!(got.points.len(), fmr.len(), "case {name}: number of usable FMRs");
        for (j, p) in got.points.iter().enumerate() {
            assert!(
                (p.fmr - fmr[j]).abs() <= 1e-15 * fmr[j],
                "case {name}: FMR {j}: {} vs {}",
                p.fmr,
                fmr[j]
            );
            assert_eq!(p.omega, omega[j], "case {name}: best weight at FMR {}", fmr[j]);
            assert_eq!(p.threshold, threshold[j], "case {name}: threshold at FMR {}", fmr[j]);
            assert!((p.fnmr - fnmr[j]).abs() < 1e-12, "case {name}: FNMR at FMR {}", fmr[j]);
        }
        let (alpha, beta) = (case.float("alpha"), case.float("beta"));
        assert!(
            (got.weight.alpha - alpha).abs() <= 1e-9 * alpha.abs(),
            "alpha {} vs {alpha}",
            got.weight.alpha
        );
        assert!((got.weight.beta - beta).abs() <= 1e-9 * beta.abs(), "beta {} vs {beta}", got.weight.beta);
    }
}
