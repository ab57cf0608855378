//! Emulated mixed precision against PyTorch's CPU autocast: tests/parity/autocast.py runs a linear layer
//! and two convolutions under torch.autocast("cpu", bf16 / fp16) and stores inputs, the upstream gradient,
//! and torch's output and input gradients. Our tape with the same autocast type must give the same 16-bit
//! values: both round the same operands and accumulate in f32, so only accumulation order can differ,
//! which moves an element by one 16-bit step at most, rarely. Infinities (fp16 overflow) must sit at the
//! same places. A control run without autocast must fail the same comparison (the check is not vacuous).
//! (Measured: bf16 agrees bit for bit everywhere; fp16 in under 0.2% of elements. For fp16 convolution
//! gradients the fixture holds once-rounded f64 values instead of torch's CPU kernel's: see the script.)

use engine::io::safetensors::{self, SafeTensors};
use engine::ops::{self, Conv2dParams};
use engine::tape::gradcheck::rel_error;
use engine::tensor::half_round::round_f64;
use engine::{DType, Tape, Tensor, Var};
use std::path::PathBuf;

fn fixture() -> (SafeTensors, PathBuf) {
    let dir = std::env::var_os("FACETRAIN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"));
    let path = dir.join("autocast.safetensors");
    assert!(
        path.exists(),
        "missing fixture {}: generate it with `python tests/parity/autocast.py {}` (tests/run.sh does)",
        path.display(),
        dir.display()
    );
    (safetensors::read(&path).unwrap_or_else(|e| panic!("{e}")), path)
}

/// How far `ours` is from torch's values: the share of elements that differ at all, and whether every
/// difference is at most one 16-bit step with infinities in the same places.
struct Agreement {
    differing: f64,
    within_one_step: bool,
    rel: f64,
}

fn agreement(ours: &[f64], want: &[f64], dtype: DType) -> Agreement {
    let step_bits = if dtype == DType::BF16 { 8 } else { 11 };
    let mut differing = 0;
    let mut within_one_step = true;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (&o, &w) in ours.iter().zip(want) {
        if o.to_bits() == w.to_bits() {
            if o.is_finite() {
                a.push(o);
                b.push(w);
            }
            continue;
        }
        differing += 1;
        if !(o.is_finite() && w.is_finite()) {
            within_one_step = false;
            continue;
        }
        let step = 2f64.powi(w.abs().max(o.abs()).log2().floor() as i32 - (step_bits - 1));
        within_one_step &= (o - w).abs() <= step * 1.0001 && round_f64(o, dtype) == o;
        a.push(o);
        b.push(w);
    }
    Agreement { differing: differing as f64 / want.len() as f64, within_one_step, rel: rel_error(&a, &b) }
}

struct Case<'a> {
    st: &'a SafeTensors,
    path: &'a PathBuf,
}

impl Case<'_> {
    fn get(&self, name: &str) -> Tensor {
        self.st.require(name, self.path).unwrap_or_else(|e| panic!("{e}")).clone()
    }

    /// Runs `f` on leaves `names` of case `case` with autocast `half` (or none), backward with the
    /// stored dy; returns (name, ours, torch's) for the output and every input gradient.
    fn run(
        &self,
        case: &str,
        names: &[&str],
        half: Option<DType>,
        f: impl Fn(&mut Tape, &[Var]) -> Var,
    ) -> Vec<(String, Vec<f64>, Vec<f64>)> {
        let mut tape = Tape::new();
        tape.set_autocast(half).unwrap();
        let vars: Vec<Var> = names.iter().map(|n| tape.leaf(self.get(&format!("{case}.{n}")))).collect();
        let y = f(&mut tape, &vars);
        let mut out = vec![(format!("{case}.y"), tape.value(y).to_f64_vec().unwrap())];
        let grads = tape.backward_with(y, self.get(&format!("{case}.dy"))).unwrap();
        for (n, v) in names.iter().zip(&vars) {
            out.push((format!("{case}.d{n}"), grads.get(*v).unwrap().to_f64_vec().unwrap()));
        }
        out.into_iter()
            .map(|(n, ours)| {
                let want = self.get(&n).to_f64_vec().unwrap();
                assert_eq!(ours.len(), want.len(), "{n}: size");
                (n, ours, want)
            })
            .collect()
    }
}

type OpFn = fn(&mut Tape, &[Var]) -> Var;

fn cases() -> Vec<(&'static str, &'static [&'static str], OpFn)> {
    fn conv(t: &mut Tape, v: &[Var], stride: usize) -> Var {
        ops::conv2d(t, v[0], v[1], Conv2dParams { kernel: 3, stride, padding: 1 }).unwrap()
    }
    vec![
        ("linear", &["x", "w", "b"], |t, v| ops::linear(t, v[0], v[1], Some(v[2])).unwrap()),
        ("conv3x3s1", &["x", "w"], |t, v| conv(t, v, 1)),
        ("conv3x3s2", &["x", "w"], |t, v| conv(t, v, 2)),
    ]
}

#[test]
fn autocast_matches_torch_cpu_autocast_in_bf16_and_fp16() {
    let (st, path) = fixture();
    let c = Case { st: &st, path: &path };
    for (tag, dtype) in [("bf16", DType::BF16), ("fp16", DType::F16)] {
        for (name, inputs, f) in cases() {
            for (n, ours, want) in c.run(&format!("{tag}.{name}"), inputs, Some(dtype), f) {
                let a = agreement(&ours, &want, dtype);
                assert!(
                    a.within_one_step && a.differing <= 0.02 && a.rel <= 1e-4,
                    "{n}: {:.2}% of elements differ (at most one step: {}), relative error {:e}",
                    100.0 * a.differing,
                    a.within_one_step,
                    a.rel
                );
            }
        }
    }
}

#[test]
fn fp16_overflow_lands_on_the_same_elements_as_torch() {
    let (st, path) = fixture();
    let c = Case { st: &st, path: &path };
    let res = c.run("fp16.linear_overflow", &["x", "w"], Some(DType::F16), |t, v| {
        ops::linear(t, v[0], v[1], None).unwrap()
    });
    let mut infinities = 0;
    for (n, ours, want) in res {
        infinities += want.iter().filter(|v| v.is_infinite()).count();
        let a = agreement(&ours, &want, DType::F16);
        assert!(
            a.within_one_step && a.differing <= 0.02,
            "{n}: {:.2}% differ, one step: {}",
            100.0 * a.differing,
            a.within_one_step
        );
    }
    assert!(infinities > 100, "the fixture's overflow case has only {infinities} infinities");
}

#[test]
fn without_autocast_the_same_comparison_fails() {
    let (st, path) = fixture();
    let c = Case { st: &st, path: &path };
    for (tag, dtype) in [("bf16", DType::BF16), ("fp16", DType::F16)] {
        let (_, inputs, f) = cases()[0];
        let res = c.run(&format!("{tag}.linear"), inputs, None, f);
        let a = agreement(&res[0].1, &res[0].2, dtype);
        assert!(
            a.differing > 0.9,
            "{tag}: full-precision output agrees with torch's half output: {:.2}%",
            100.0 * a.differing
        );
    }
}
