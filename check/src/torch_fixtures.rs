//! PyTorch's fixtures replayed on any device: the core ops of tests/parity/core_ops.py (convolution, batch
//! norm, PReLU, linear: output and every input gradient; SGD and AdamW: three steps) and the heads of tests/parity/heads_ref.py (loss,
//! both gradients and the running state over five steps, through `heads::loss` as training runs them).
//!
//! The CPU test suite runs these against fixtures PyTorch wrote on the CPU; the opt-in GPU tests and
//! `engine-train check --torch-fixtures DIR` run them on a CUDA device, the latter against fixtures
//! that the same scripts wrote with `--device cuda`, i.e. each op against torch on the GPU.

use crate::compare::{compare, Compared};
use engine::heads::{self, HeadParams};
use engine::io::safetensors::{self, SafeTensors};
use engine::model::{ParamKind, ParamStore};
use engine::ops::{self, Conv2dParams};
use engine::tape::{Tape, Var};
use engine::{Device, Error, Result, Tensor};
use std::path::Path;

/// Every comparison here is against PyTorch.
const TORCH: &str = "PyTorch fixture";

struct CoreOps<'a> {
    st: SafeTensors,
    path: &'a Path,
    dev: &'a Device,
    tol: f64,
    out: Vec<Compared>,
}

impl CoreOps<'_> {
    fn get(&self, name: &str) -> Result<Tensor> {
        self.st.require(name, self.path).cloned()
    }

    fn close(&mut self, name: &str, ours: &Tensor) -> Result<()> {
        let c = compare(format!("torch {name}"), ours, &self.get(name)?, self.tol)?;
        self.out.push(c.against(TORCH));
        Ok(())
    }

    /// Leaves for `names` (prefixed by `case.`) on the device, the op, backward with the stored dy, and
    /// comparison of the output and every input gradient.
    fn check(
        &mut self,
        case: &str,
        names: &[&str],
        f: impl Fn(&mut Tape, &[Var]) -> Result<Var>,
    ) -> Result<()> {
        let mut tape = Tape::new();
        let mut vars = Vec::new();
        for n in names {
            vars.push(tape.leaf(self.get(&format!("{case}.{n}"))?.to_device(self.dev)?));
        }
        let y = f(&mut tape, &vars)?;
        let value = tape.value(y).clone();
        self.close(&format!("{case}.y"), &value)?;
        let grads = tape.backward_with(y, self.get(&format!("{case}.dy"))?.to_device(self.dev)?)?;
        for (n, v) in names.iter().zip(&vars) {
            let g =
                grads.get(*v).ok_or_else(|| Error::Invalid(format!("{case}: no gradient for {n}")))?.clone();
            self.close(&format!("{case}.d{n}"), &g)?;
        }
        Ok(())
    }
}

/// Every case of a core_ops_{f32,f64}.safetensors fixture on `dev`, each output and gradient against
/// torch's at `tol`.
pub fn core_ops(dev: &Device, path: &Path, tol: f64) -> Result<Vec<Compared>> {
    let st = safetensors::read(path)?;
    let mut c = CoreOps { st, path, dev, tol, out: Vec::new() };
    for (case, kernel, stride, padding) in
        [("conv3x3s1", 3, 1, 1), ("conv3x3s2", 3, 2, 1), ("conv1x1s2", 1, 2, 0)]
    {
        let p = Conv2dParams { kernel, stride, padding };
        c.check(case, &["x", "w"], |t, v| ops::conv2d(t, v[0], v[1], p))?;
    }
    for case in ["bn2d_train", "bn1d_train", "bn2d_train_noaffine"] {
        let affine = case != "bn2d_train_noaffine";
        let names: &[&str] = if affine { &["x", "gamma", "beta"] } else { &["x"] };
        let stats = std::cell::RefCell::new(None);
        c.check(case, names, |t, v| {
            let (g, b) = if affine { (Some(v[1]), Some(v[2])) } else { (None, None) };
            let (y, s) = ops::batch_norm_train(t, v[0], g, b, 1e-5)?;
            *stats.borrow_mut() = Some(s);
            Ok(y)
        })?;
        let mut rm = c.get(&format!("{case}.running_mean_in"))?.to_device(dev)?;
        let mut rv = c.get(&format!("{case}.running_var_in"))?.to_device(dev)?;
        let s = stats
            .borrow_mut()
            .take()
            .ok_or_else(|| Error::Invalid(format!("{case}: no batch statistics")))?;
        ops::update_running_stats(&mut rm, &mut rv, &s, 0.1)?;
        c.close(&format!("{case}.running_mean_out"), &rm)?;
        c.close(&format!("{case}.running_var_out"), &rv)?;
    }
    let rm = c.get("bn2d_eval.running_mean")?.to_device(dev)?;
    let rv = c.get("bn2d_eval.running_var")?.to_device(dev)?;
    c.check("bn2d_eval", &["x", "gamma", "beta"], |t, v| {
        ops::batch_norm_eval(t, v[0], Some(v[1]), Some(v[2]), &rm, &rv, 1e-5)
    })?;
    c.check("prelu", &["x", "alpha"], |t, v| ops::prelu(t, v[0], v[1]))?;
    c.check("linear", &["x", "w", "b"], |t, v| ops::linear(t, v[0], v[1], Some(v[2])))?;
    optimizer_steps(&mut c)?;
    Ok(c.out)
}

/// Three steps of the engine's SGD (momentum 0.9, weight decay 5e-4) and AdamW (weight decay 0.05) on
/// the fixture's parameter with its gradients and learning rates, against torch.optim's.
fn optimizer_steps(c: &mut CoreOps) -> Result<()> {
    for (kind, make) in crate::device_parity::checked_optimizers() {
        let mut store = ParamStore::new();
        store.insert("w", c.get(&format!("{kind}.p0"))?.to_device(c.dev)?, ParamKind::Trainable)?;
        let mut opt = make();
        for k in 0..3 {
            let g = c.get(&format!("{kind}.g{k}"))?.to_device(c.dev)?;
            let lr = c.get(&format!("{kind}.lr{k}"))?.scalar_value()?;
            opt.step(&mut store, &[("w".to_string(), g)], lr)?;
        }
        let p = store.get("w")?.clone();
        c.close(&format!("{kind}.p"), &p)?;
        for (name, t) in opt.state() {
            if let Some(field) = name.strip_prefix("w.").filter(|f| *f != "step") {
                c.close(&format!("{kind}.{field}"), &t)?;
            }
        }
    }
    Ok(())
}

/// The fixtures listed in `dir/heads_manifest.txt` whose dtype is `dtype` ("f32" or "f64"), each run on
/// `dev` for its steps (the batch reused, the state moving) through `heads::loss`: loss, dL/dx, dL/dW and
/// every state variable against torch at 1e-4 (f32) or 1e-5 (f64). Also returns the heads covered.
pub fn heads(dev: &Device, dir: &Path, dtype: &str) -> Result<(Vec<Compared>, Vec<String>)> {
    let manifest = dir.join("heads_manifest.txt");
    let list =
        std::fs::read_to_string(&manifest).map_err(|e| Error::Io(format!("{}: {e}", manifest.display())))?;
    let tol = if dtype == "f64" { 1e-5 } else { 1e-4 };
    let mut out = Vec::new();
    let mut covered = Vec::new();
    for file in list.lines().filter(|l| !l.is_empty()) {
        let path = dir.join(file);
        let st = safetensors::read(&path)?;
        let meta = |k: &str| {
            st.metadata
                .get(k)
                .cloned()
                .ok_or_else(|| Error::Invalid(format!("{}: no metadata '{k}'", path.display())))
        };
        if meta("dtype")? != dtype {
            continue;
        }
        let name = meta("head")?;
        let steps: usize =
            meta("steps")?.parse().map_err(|_| Error::Invalid(format!("{}: bad 'steps'", path.display())))?;
        let mut params = HeadParams::default();
        for (k, v) in &st.metadata {
            if let Some(flag) = k.strip_prefix("param.") {
                params.set(flag, v)?;
            }
        }
        let mut head = heads::from_name(&name, &params)?;
        head.set_training(true);
        let x = st.require("embeddings", &path)?.to_device(dev)?;
        let w = st.require("weight", &path)?.to_device(dev)?;
        let labels = st.require("labels", &path)?.to_vec::<i64>()?;
        let tag = file.trim_end_matches(".safetensors");
        for k in 0..steps {
            let mut tape = Tape::new();
            let (vx, vw) = (tape.leaf(x.clone()), tape.leaf(w.clone()));
            let l = heads::loss(&mut tape, vx, vw, &labels, head.as_mut())?;
            let g = tape.backward(l)?;
            let missing = || Error::Invalid(format!("{tag}: no gradient"));
            let want = |n: &str| st.require(&format!("{n}.{k}"), &path).cloned();
            let loss = tape.value(l).to_dtype(engine::DType::F64)?;
            let want_loss = want("loss")?.to_dtype(engine::DType::F64)?;
            out.push(compare(format!("{tag} loss.{k}"), &loss, &want_loss, tol)?.against(TORCH));
            let gx = g.get(vx).ok_or_else(missing)?;
            out.push(
                compare(format!("{tag} grad_embeddings.{k}"), gx, &want("grad_embeddings")?, tol)?
                    .against(TORCH),
            );
            let gw = g.get(vw).ok_or_else(missing)?;
            out.push(
                compare(format!("{tag} grad_weight.{k}"), gw, &want("grad_weight")?, tol)?.against(TORCH),
            );
            let state = head.state();
            for (sn, t) in &st.tensors {
                let Some(var) = sn.strip_prefix("state.").and_then(|r| r.strip_suffix(&format!(".{k}")))
                else {
                    continue;
                };
                let ours =
                    state.get(var).ok_or_else(|| Error::Invalid(format!("{name}: no state '{var}'")))?;
                out.push(
                    compare(format!("{tag} state.{var}.{k}"), &Tensor::scalar(ours), t, tol)?.against(TORCH),
                );
            }
        }
        if !covered.contains(&name) {
            covered.push(name);
        }
    }
    Ok((out, covered))
}
