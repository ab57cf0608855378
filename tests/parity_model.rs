//! IResNet against PyTorch: one block, IR-18 forward + backward (f64 and f32), three SGD / AdamW training
//! steps, and an export loaded by PyTorch with strict=True. Fixtures come from tests/parity/model_ref.py
//! (run by tests/run.sh into $FACETRAIN_FIXTURES); a missing fixture is a failure, never a skip.

use engine::io::safetensors::{self, SafeTensors};
use engine::model::export::{from_pytorch_layout, load_pytorch_tensors, to_pytorch_layout};
use engine::model::iresnet::{block_forward, nchw_to_nhwc, nhwc_to_nchw};
use engine::model::{IResNet, IResNetConfig, ParamKind, ParamStore};
use engine::optim::{AdamW, AdamWConfig, Optimizer, ParamGroups, Sgd, SgdConfig};
use engine::rng::Rng;
use engine::tape::gradcheck::rel_error;
use engine::{ops, DType, Tape, Tensor, Var};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    std::env::var_os("FACETRAIN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

fn fixture(name: &str) -> SafeTensors {
    let p = fixtures().join(name);
    assert!(
        p.exists(),
        "fixture {} is missing: run `/work/venv/bin/python tests/parity/model_ref.py {}` (tests/run.sh does)",
        p.display(),
        fixtures().display()
    );
    safetensors::read(&p).unwrap()
}

fn get<'a>(st: &'a SafeTensors, name: &str) -> &'a Tensor {
    st.get(name).unwrap_or_else(|| panic!("fixture has no tensor '{name}'"))
}

/// The tensors under `prefix`, renamed without it (and optionally cast).
fn section(st: &SafeTensors, prefix: &str, dtype: Option<DType>) -> SafeTensors {
    let mut out = SafeTensors::default();
    for (n, t) in &st.tensors {
        if let Some(rest) = n.strip_prefix(prefix) {
            let t = match dtype {
                Some(d) if t.dtype().is_float() && t.dtype() != DType::I64 => t.to_dtype(d).unwrap(),
                _ => t.clone(),
            };
            out.push(rest, t);
        }
    }
    out
}

/// Biases whose every path ends in a training-mode batch norm (see model_ref.py): gradient exactly zero.
fn structurally_zero_grad(name: &str) -> bool {
    name.ends_with("bn3.bias")
        || name.ends_with("downsample.1.bias")
        || name == "bn2.bias"
        || name == "fc.bias"
}

/// Values that are exactly zero in exact arithmetic after training-mode passes: the running means of batch
/// norms fed by a block output (a sum of zero-mean normalized maps), and the zero-initialized biases whose
/// gradient is structurally zero (they never move).
fn structurally_zero_value(name: &str) -> bool {
    let block_input_mean =
        name.ends_with(".bn1.running_mean") && name.starts_with("layer") && !name.starts_with("layer1.0.");
    block_input_mean || name == "bn2.running_mean" || (structurally_zero_grad(name) && name != "fc.bias")
}

/// Norm-wise relative error at most `tol`; for structural zeros (where the ratio would compare rounding
/// noise) both sides must instead have an RMS below `zero_tol`.
fn assert_close(what: &str, ours: &Tensor, theirs: &Tensor, tol: f64) {
    assert_close_or_zero(what, ours, theirs, tol, false)
}

fn assert_close_or_zero(what: &str, ours: &Tensor, theirs: &Tensor, tol: f64, zero: bool) {
    assert_eq!(ours.dims(), theirs.dims(), "{what}: shape");
    if zero {
        let zero_tol = if ours.dtype() == DType::F32 { 1e-5 } else { 1e-12 };
        for (side, t) in [("ours", ours), ("PyTorch", theirs)] {
            let v = t.to_f64_vec().unwrap();
            let rms = (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
            assert!(
                rms <= zero_tol,
                "{what} ({side}): RMS {rms:e} of a structural zero exceeds {zero_tol:e}"
            );
        }
        return;
    }
    let e = rel_error(&ours.to_f64_vec().unwrap(), &theirs.to_f64_vec().unwrap());
    if std::env::var_os("PARITY_VERBOSE").is_some() {
        eprintln!("{what}: {e:e}");
    }
    assert!(e <= tol, "{what}: relative error {e:e} > {tol:e}");
}

fn kind_of(name: &str) -> ParamKind {
    if name.ends_with("running_mean")
        || name.ends_with("running_var")
        || name.ends_with("num_batches_tracked")
    {
        ParamKind::Buffer
    } else if name == "features.weight" {
        ParamKind::Frozen
    } else {
        ParamKind::Trainable
    }
}

/// sum(y * r): the scalar every fixture differentiates.
fn projected(tape: &mut Tape, y: Var, r: Tensor) -> Var {
    let r = tape.constant(r);
    let p = ops::mul(tape, y, r).unwrap();
    ops::sum_all(tape, p).unwrap()
}

/// Checks every buffer and gradient of `store`/`grads` against `<after_prefix>` and `<grad_prefix>`.
fn compare_model(
    cfg: &IResNetConfig,
    st: &SafeTensors,
    store: &ParamStore,
    grads: &[(String, Tensor)],
    tol: f64,
) {
    let mut checked = 0;
    for e in store.entries() {
        if e.kind == ParamKind::Buffer {
            let theirs = get(st, &format!("after.{}", e.name));
            if e.name.ends_with("num_batches_tracked") {
                assert_eq!(e.value.to_vec::<i64>().unwrap(), theirs.to_vec::<i64>().unwrap(), "{}", e.name);
            } else {
                assert_close_or_zero(&e.name, &e.value, theirs, tol, structurally_zero_value(&e.name));
            }
            checked += 1;
        }
    }
    for (n, g) in grads {
        let ours = to_pytorch_layout(cfg, n, g).unwrap();
        assert_close_or_zero(
            &format!("grad {n}"),
            &ours,
            get(st, &format!("grad.{n}")),
            tol,
            structurally_zero_grad(n),
        );
        checked += 1;
    }
    let expected =
        st.tensors.iter().filter(|(n, _)| n.starts_with("grad.") || n.starts_with("after.")).count();
    assert_eq!(checked, expected, "every gradient and buffer of the fixture must be compared");
}

#[test]
fn iresnet_block_matches_pytorch_f64() {
    let st = fixture("model_block_f64.safetensors");
    let cfg = IResNetConfig::small(); // only fc.weight's conversion depends on it
    for (tag, stride) in [("down", 2), ("plain", 1)] {
        let mut store = ParamStore::new();
        for (n, t) in &section(&st, &format!("{tag}.init."), None).tensors {
            store.insert(format!("blk.{n}"), from_pytorch_layout(&cfg, n, t).unwrap(), kind_of(n)).unwrap();
        }
        let mut tape = Tape::new();
        let x = tape.leaf(nchw_to_nhwc(get(&st, &format!("{tag}.x"))).unwrap());
        let y = block_forward(&mut tape, &mut store, "blk", x, stride, true).unwrap();
        assert_close(
            &format!("{tag} y"),
            &nhwc_to_nchw(tape.value(y)).unwrap(),
            get(&st, &format!("{tag}.y")),
            1e-10,
        );
        let r = nchw_to_nhwc(get(&st, &format!("{tag}.r"))).unwrap();
        let loss = projected(&mut tape, y, r);
        let grads = tape.backward(loss).unwrap();
        let gx = nhwc_to_nchw(grads.get(x).unwrap()).unwrap();
        assert_close(&format!("{tag} grad x"), &gx, get(&st, &format!("{tag}.grad_x")), 1e-10);
        let theirs = section(&st, &format!("{tag}.grad."), None);
        assert_eq!(grads.params().len(), theirs.tensors.len(), "{tag}: number of parameter gradients");
        for (n, g) in grads.params() {
            let short = n.strip_prefix("blk.").unwrap();
            assert_close(
                &format!("{tag} grad {short}"),
                &to_pytorch_layout(&cfg, short, g).unwrap(),
                get(&theirs, short),
                1e-10,
            );
        }
        for (n, t) in &section(&st, &format!("{tag}.after."), None).tensors {
            if kind_of(n) == ParamKind::Buffer {
                assert_close(&format!("{tag} {n}"), store.get(&format!("blk.{n}")).unwrap(), t, 1e-10);
            }
        }
    }
}

fn ir18_matches(file: &str, dtype: DType, tol: f64) {
    let st = fixture(file);
    let init = section(&fixture("model_ir18_f64.safetensors"), "init.", Some(dtype));
    let cfg = IResNetConfig::r18();
    let model = IResNet::new(cfg.clone()).unwrap();
    let mut store = model.init(&mut Rng::new(0), dtype).unwrap();
    load_pytorch_tensors(&cfg, &mut store, &init, file).unwrap();
    let mut tape = Tape::new();
    let x = tape.constant(nchw_to_nhwc(get(&st, "x")).unwrap());
    let emb = model.forward(&mut tape, &mut store, x, true, &mut Rng::new(0)).unwrap();
    assert_close("embedding", tape.value(emb), get(&st, "embedding"), tol);
    let loss = projected(&mut tape, emb, get(&st, "r").clone());
    let grads = tape.backward(loss).unwrap();
    compare_model(&cfg, &st, &store, grads.params(), tol);
}

#[test]
fn ir18_forward_backward_matches_pytorch_f64() {
    ir18_matches("model_ir18_f64.safetensors", DType::F64, 1e-10);
}

#[test]
fn ir18_forward_backward_matches_pytorch_f32() {
    ir18_matches("model_ir18_f32.safetensors", DType::F32, 1e-4);
}

fn small_cfg() -> IResNetConfig {
    IResNetConfig {
        layers: [1, 1, 1, 1],
        widths: [8, 16, 32, 64],
        input_hw: (32, 32),
        embedding_size: 32,
        ..IResNetConfig::small()
    }
}

fn training_steps_match(
    file: &str,
    mut opt: Box<dyn Optimizer>,
    lrs: &[f64],
    state_fields: &[&str],
    skip_zero: bool,
) {
    let st = fixture(file);
    let cfg = small_cfg();
    let model = IResNet::new(cfg.clone()).unwrap();
    let mut store = model.init(&mut Rng::new(0), DType::F64).unwrap();
    load_pytorch_tensors(&cfg, &mut store, &section(&st, "init.", None), file).unwrap();
    for (i, &lr) in lrs.iter().enumerate() {
        let mut tape = Tape::new();
        let x = tape.constant(nchw_to_nhwc(get(&st, &format!("step{i}.x"))).unwrap());
        let emb = model.forward(&mut tape, &mut store, x, true, &mut Rng::new(0)).unwrap();
        let loss = projected(&mut tape, emb, get(&st, &format!("step{i}.r")).clone());
        let grads = tape.backward(loss).unwrap();
        let mut g = grads.params().to_vec();
        g.retain(|(n, _)| !(skip_zero && structurally_zero_grad(n)));
        opt.step(&mut store, &g, lr).unwrap();
    }
    for e in store.entries() {
        let ours = to_pytorch_layout(&cfg, &e.name, &e.value).unwrap();
        let zero = structurally_zero_value(&e.name);
        assert_close_or_zero(
            &format!("after {}", e.name),
            &ours,
            get(&st, &format!("after.{}", e.name)),
            1e-10,
            zero,
        );
    }
    let state = opt.state();
    let mut compared = 0;
    for (n, t) in &state {
        let Some((param, field)) = n.rsplit_once('.') else { panic!("state name {n}") };
        if !state_fields.contains(&field) {
            continue;
        }
        let ours = to_pytorch_layout(&cfg, param, t).unwrap();
        // SGD's buffer of a structurally zero gradient holds only noise (no weight decay in its group).
        let zero = structurally_zero_grad(param) && param != "fc.bias";
        assert_close_or_zero(&format!("optimizer {n}"), &ours, get(&st, &format!("optim.{n}")), 1e-10, zero);
        compared += 1;
    }
    let expected = st.tensors.iter().filter(|(n, _)| n.starts_with("optim.")).count();
    assert_eq!(compared, expected, "every optimizer state tensor of the fixture must be compared");
}

#[test]
fn sgd_training_steps_match_pytorch() {
    let opt = Sgd::new(SgdConfig::default(), ParamGroups::no_decay_on_batchnorm(5e-4));
    training_steps_match(
        "model_optim_sgd.safetensors",
        Box::new(opt),
        &[0.1, 0.05, 0.025],
        &["momentum_buffer"],
        false,
    );
}

#[test]
fn adamw_training_steps_match_pytorch() {
    // The structurally zero biases are left out of the optimizer, as in model_ref.py.
    let opt = AdamW::new(AdamWConfig::default(), ParamGroups::uniform(0.05));
    training_steps_match(
        "model_optim_adamw.safetensors",
        Box::new(opt),
        &[1e-3, 2e-3, 5e-4],
        &["exp_avg", "exp_avg_sq"],
        true,
    );
}

#[test]
fn export_loads_into_pytorch_strictly_with_the_same_embeddings() {
    let python = std::env::var("FACETRAIN_PYTHON").unwrap_or_else(|_| {
        panic!("FACETRAIN_PYTHON is not set: point it at a Python with torch and safetensors (tests/run.sh sets it)")
    });
    let cfg = IResNetConfig { input_hw: (32, 48), ..IResNetConfig::small() };
    let model = IResNet::new(cfg.clone()).unwrap();
    let mut rng = Rng::new(21);
    let mut store = model.init(&mut rng, DType::F32).unwrap();
    let mut x = |n: usize| {
        let v: Vec<f32> = (0..n * 32 * 48 * 3).map(|_| rng.normal() as f32).collect();
        Tensor::from_vec(v, [n, 32, 48, 3]).unwrap()
    };
    // A few training-mode passes so the running statistics are not the defaults.
    for _ in 0..3 {
        let mut t = Tape::no_grad();
        let xv = t.constant(x(4));
        model.forward(&mut t, &mut store, xv, true, &mut Rng::new(0)).unwrap();
    }
    let input = x(3);
    let mut t = Tape::no_grad();
    let xv = t.constant(input.clone());
    let yv = model.forward(&mut t, &mut store, xv, false, &mut Rng::new(0)).unwrap();
    let ours = t.value(yv).clone();

    let dir = std::env::temp_dir().join(format!("export-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mp, ip, op) =
        (dir.join("model.safetensors"), dir.join("input.safetensors"), dir.join("out.safetensors"));
    engine::model::export::export_pytorch(&mp, &cfg, &store).unwrap();
    let mut inp = SafeTensors::default();
    inp.push("x", nhwc_to_nchw(&input).unwrap());
    safetensors::write(&ip, &inp).unwrap();
    let join = |v: &[usize]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/parity/_load_export.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args([&mp, &ip, &op])
        .args([
            join(&cfg.layers),
            join(&cfg.widths),
            "32".into(),
            "48".into(),
            cfg.embedding_size.to_string(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "PyTorch could not load the export:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = safetensors::read(&op).unwrap();
    assert_close("embedding", &ours, get(&theirs, "embedding"), 1e-5);
    std::fs::remove_dir_all(&dir).unwrap();
}
