//! Parity of the core ops with PyTorch: tests/parity/core_ops.py writes inputs, upstream gradients and
//! torch's outputs and gradients; each is compared by norm-wise relative error, at most 1e-10 in f64 and
//! 1e-4 in f32.

use engine::io::safetensors::{self, SafeTensors};
use engine::ops::{self, Conv2dParams};
use engine::tape::gradcheck::rel_error;
use engine::{Tape, Tensor, Var};
use std::path::PathBuf;

fn fixtures_dir() -> PathBuf {
    std::env::var_os("FACETRAIN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

struct Fixture {
    st: SafeTensors,
    path: PathBuf,
    tol: f64,
}

impl Fixture {
    fn load(tag: &str, tol: f64) -> Fixture {
        let path = fixtures_dir().join(format!("core_ops_{tag}.safetensors"));
        assert!(
            path.exists(),
            "missing fixture {}: generate it with `python tests/parity/core_ops.py {}` (tests/run.sh does)",
            path.display(),
            fixtures_dir().display()
        );
        let st = safetensors::read(&path).unwrap_or_else(|e| panic!("{e}"));
        Fixture { st, path, tol }
    }

    fn get(&self, name: &str) -> Tensor {
        self.st.require(name, &self.path).unwrap_or_else(|e| panic!("{e}")).clone()
    }

    fn close(&self, name: &str, ours: &Tensor) {
        let want = self.get(name);
        assert_eq!(ours.dims(), want.dims(), "{name}: shape");
        assert_eq!(ours.dtype(), want.dtype(), "{name}: dtype");
        let e = rel_error(&ours.to_f64_vec().unwrap(), &want.to_f64_vec().unwrap());
        assert!(e <= self.tol, "{name}: relative error {e:e} > {:e} ({})", self.tol, self.path.display());
    }

    /// Leaves for `names` (prefixed by `case.`), the op's output, then backward with the stored dy and
    /// comparison of the output and every input gradient.
    fn check(&self, case: &str, names: &[&str], f: impl Fn(&mut Tape, &[Var]) -> Var) -> Tape {
        let mut tape = Tape::new();
        let vars: Vec<Var> = names.iter().map(|n| tape.leaf(self.get(&format!("{case}.{n}")))).collect();
        let y = f(&mut tape, &vars);
        self.close(&format!("{case}.y"), tape.value(y));
        let grads = tape.backward_with(y, self.get(&format!("{case}.dy"))).unwrap();
        for (n, v) in names.iter().zip(&vars) {
            self.close(&format!("{case}.d{n}"), grads.get(*v).unwrap());
        }
        tape
    }

    fn all(&self) {
        for (case, kernel, stride, padding) in [("conv3x3s1", 3, 1, 1), ("conv3x3s2", 3, 2, 1), ("conv1x1s2", 1, 2, 0)] {
            let p = Conv2dParams { kernel, stride, padding };
            self.check(case, &["x", "w"], |t, v| ops::conv2d(t, v[0], v[1], p).unwrap());
        }
        for case in ["bn2d_train", "bn1d_train", "bn2d_train_noaffine"] {
            let affine = case != "bn2d_train_noaffine";
            let names: &[&str] = if affine { &["x", "gamma", "beta"] } else { &["x"] };
            let stats = std::cell::RefCell::new(None);
            self.check(case, names, |t, v| {
                let (g, b) = if affine { (Some(v[1]), Some(v[2])) } else { (None, None) };
                let (y, s) = ops::batch_norm_train(t, v[0], g, b, 1e-5).unwrap();
                *stats.borrow_mut() = Some(s);
                y
            });
            let mut rm = self.get(&format!("{case}.running_mean_in"));
            let mut rv = self.get(&format!("{case}.running_var_in"));
            ops::update_running_stats(&mut rm, &mut rv, stats.borrow().as_ref().unwrap(), 0.1).unwrap();
            self.close(&format!("{case}.running_mean_out"), &rm);
            self.close(&format!("{case}.running_var_out"), &rv);
        }
        let (rm, rv) = (self.get("bn2d_eval.running_mean"), self.get("bn2d_eval.running_var"));
        self.check("bn2d_eval", &["x", "gamma", "beta"], |t, v| {
            ops::batch_norm_eval(t, v[0], Some(v[1]), Some(v[2]), &rm, &rv, 1e-5).unwrap()
        });
        self.check("prelu", &["x", "alpha"], |t, v| ops::prelu(t, v[0], v[1]).unwrap());
        self.check("linear", &["x", "w", "b"], |t, v| ops::linear(t, v[0], v[1], Some(v[2])).unwrap());
    }
}

#[test]
fn core_ops_match_pytorch_in_f64() {
    Fixture::load("f64", 1e-10).all();
}

#[test]
fn core_ops_match_pytorch_in_f32() {
    Fixture::load("f32", 1e-4).all();
}
