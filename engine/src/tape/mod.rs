//! The explicit autograd tape. Every op run through `crate::ops` appends one node: its output value, the
//! vars it read, and a closure that maps the output's gradient to its inputs' gradients (capturing exactly
//! what the backward needs, as cheap shared tensors). `backward` walks the nodes in reverse, accumulating.
//!
//! In no-grad mode (evaluation) the closure is dropped at once, so nothing is kept for a backward pass.
//!
//! A tape may carry a half-precision type (`set_autocast`): the ops that run GEMMs (convolution, linear,
//! matmul, the head's classifier) then round their operands, outputs and gradients to it, which is how
//! the CPU emulates mixed-precision training (see `train::precision`).

pub mod gradcheck;

use crate::backend::BinaryOp;
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};
use std::any::Any;
use std::sync::Arc;

/// A value recorded on a tape (an index into it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Var(usize);

impl Var {
    pub fn index(self) -> usize {
        self.0
    }
}

/// Maps the gradient of a node's output to one gradient per input (`None`: no gradient flows there).
pub type BackwardFn = Box<dyn Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// As `BackwardFn`, also given the gradient already accumulated for the node's first input by its later
/// consumers (a residual connection's shortcut), which the returned first gradient must include: the op
/// adds it in the kernel that writes its own, instead of a separate add.
pub type AccumulatingBackwardFn =
    Box<dyn Fn(&Tensor, Option<Tensor>) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// As `BackwardFn`, for an op that computed its inputs' gradients in its forward for an output gradient
/// of one: given `None` when its output is the loss that `Tape::backward` seeds with one (its gradients
/// are then returned as they are, no pass to scale them by one), else the output's gradient.
pub type UnitSeedBackwardFn = Box<dyn Fn(Option<&Tensor>) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

enum Backward {
    Plain(BackwardFn),
    Accumulating(AccumulatingBackwardFn),
    UnitSeed(UnitSeedBackwardFn),
}

struct Node {
    value: Tensor,
    inputs: Vec<Var>,
    backward: Option<Backward>,
    requires_grad: bool,
    /// Set for leaves that hold a named parameter.
    param: Option<String>,
    /// The tape's autocast type when the node was recorded: its value, and the gradients accumulated for
    /// it, are held in that 16-bit type.
    autocast: Option<DType>,
}

pub struct Tape {
    nodes: Vec<Node>,
    grad_enabled: bool,
    autocast: Option<DType>,
    /// 16-bit GEMM operands of parameter leaves made ahead of the forward (the optimizer's copies).
    half_operands: Vec<(Var, DType, Tensor)>,
    /// The parameters forwards read as 16-bit GEMM operands, in that type.
    half_reads: Vec<(String, DType)>,
    /// What ops leave on a value for the ops that read it next (`set_note`).
    notes: Vec<(Var, Note)>,
}

/// Data an op attaches to its output for a later op (a batch norm's record of itself, for the batch
/// norm that reads its output: `ops::batch_norm`).
pub type Note = Arc<dyn Any + Send + Sync>;

impl Default for Tape {
    fn default() -> Self {
        Tape::new()
    }
}

impl Tape {
    /// A tape that records backward closures (training).
    pub fn new() -> Tape {
        Tape {
            nodes: Vec::new(),
            grad_enabled: true,
            autocast: None,
            half_operands: Vec::new(),
            half_reads: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A tape that keeps only values (evaluation): no backward is possible.
    pub fn no_grad() -> Tape {
        Tape {
            nodes: Vec::new(),
            grad_enabled: false,
            autocast: None,
            half_operands: Vec::new(),
            half_reads: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn grad_enabled(&self) -> bool {
        self.grad_enabled
    }

    /// The 16-bit type GEMM-running ops round to (f16 or bf16); `None`: full precision.
    pub fn set_autocast(&mut self, dtype: Option<DType>) -> Result<()> {
        if let Some(d) = dtype {
            if !matches!(d, DType::F16 | DType::BF16) {
                return Err(Error::DType(format!("autocast to {d}: expected f16 or bf16")));
            }
        }
        self.autocast = dtype;
        Ok(())
    }

    pub fn autocast(&self) -> Option<DType> {
        self.autocast
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn push_leaf(&mut self, value: Tensor, requires_grad: bool, param: Option<String>) -> Var {
        self.nodes.push(Node {
            value,
            inputs: Vec::new(),
            backward: None,
            requires_grad,
            param,
            autocast: None,
        });
        Var(self.nodes.len() - 1)
    }

    /// An input that receives no gradient (data, labels).
    pub fn constant(&mut self, t: Tensor) -> Var {
        self.push_leaf(t, false, None)
    }

    /// An input that receives a gradient (used by gradient checks).
    pub fn leaf(&mut self, t: Tensor) -> Var {
        let rg = self.grad_enabled;
        self.push_leaf(t, rg, None)
    }

    /// A named parameter; its gradient is reported by `Gradients::params`.
    pub fn param(&mut self, name: &str, t: Tensor, trainable: bool) -> Var {
        let rg = self.grad_enabled && trainable;
        self.push_leaf(t, rg, Some(name.to_string()))
    }

    pub fn value(&self, v: Var) -> &Tensor {
        &self.nodes[v.0].value
    }

    /// Gives the leaf `v` its value as a `dtype` GEMM operand, made ahead (`Backend::half_operand`'s
    /// result, which `half_operand` then returns instead of converting again).
    pub fn set_half_operand(&mut self, v: Var, dtype: DType, t: Tensor) -> Result<()> {
        let node = &self.nodes[v.0];
        if node.backward.is_some() || !node.inputs.is_empty() || t.dims() != node.value.dims() {
            return Err(Error::Invalid(format!(
                "a 16-bit operand {} for node {} ({}): only a leaf of the same shape takes one",
                t.shape(),
                v.0,
                node.value.shape()
            )));
        }
        self.half_operands.push((v, dtype, t));
        Ok(())
    }

    /// `v`'s value as a GEMM reads it in `dtype`: the operand made ahead if there is one, else converted
    /// now (`Backend::half_operand`), noting a parameter's name for `half_reads`.
    pub fn half_operand(&mut self, v: Var, dtype: DType) -> Result<Tensor> {
        if let Some((_, _, t)) = self.half_operands.iter().find(|(w, d, _)| *w == v && *d == dtype) {
            return Ok(t.clone());
        }
        let node = &self.nodes[v.0];
        let t = node.value.backend().half_operand(&node.value, dtype)?;
        if let Some(name) = &node.param {
            self.half_reads.push((name.clone(), dtype));
        }
        Ok(t)
    }

    /// The parameters this tape converted to 16-bit GEMM operands, and to which type.
    pub fn half_reads(&self) -> impl Iterator<Item = (&str, DType)> {
        self.half_reads.iter().map(|(n, d)| (n.as_str(), *d))
    }

    /// Leaves `note` on `v` for the ops that read it later.
    pub fn set_note(&mut self, v: Var, note: Note) {
        self.notes.push((v, note));
    }

    /// The note of type `T` left on `v`, if any.
    pub fn note<T: Any + Send + Sync>(&self, v: Var) -> Option<Arc<T>> {
        self.notes.iter().rev().find(|(w, _)| *w == v).and_then(|(_, n)| n.clone().downcast::<T>().ok())
    }

    /// Whether no node recorded after `v` takes it as an input yet: an op recorded now is then `v`'s
    /// first reader, and so, in the backward, the last to add to `v`'s gradient (its gradient is then
    /// complete as that op's backward returns it).
    pub fn unread(&self, v: Var) -> bool {
        self.nodes[v.0 + 1..].iter().all(|n| !n.inputs.contains(&v))
    }

    /// Whether `v` is a named parameter's leaf.
    pub fn is_param(&self, v: Var) -> bool {
        self.nodes[v.0].param.is_some()
    }

    /// The 16-bit type `v`'s value is held in (the tape's autocast type when its op ran); `None` for
    /// leaves (weights, data) and values made outside autocast.
    pub fn storage_type(&self, v: Var) -> Option<DType> {
        self.nodes[v.0].autocast
    }

    pub fn requires_grad(&self, v: Var) -> bool {
        self.nodes[v.0].requires_grad
    }

    /// Records an op's output. `backward` is kept only when grad is enabled and an input needs a gradient.
    pub fn push(&mut self, value: Tensor, inputs: &[Var], backward: BackwardFn) -> Var {
        self.push_node(value, inputs, Backward::Plain(backward))
    }

    /// As `push`, for an op whose backward adds the gradient accumulated for its first input
    /// (`AccumulatingBackwardFn`).
    pub fn push_accumulating(
        &mut self,
        value: Tensor,
        inputs: &[Var],
        backward: AccumulatingBackwardFn,
    ) -> Var {
        self.push_node(value, inputs, Backward::Accumulating(backward))
    }

    /// As `push`, for an op whose gradients are ready for a unit output gradient (`UnitSeedBackwardFn`).
    pub fn push_unit_seeded(&mut self, value: Tensor, inputs: &[Var], backward: UnitSeedBackwardFn) -> Var {
        self.push_node(value, inputs, Backward::UnitSeed(backward))
    }

    fn push_node(&mut self, value: Tensor, inputs: &[Var], backward: Backward) -> Var {
        let requires_grad = self.grad_enabled && inputs.iter().any(|&i| self.nodes[i.0].requires_grad);
        let backward = requires_grad.then_some(backward);
        let inputs = if requires_grad { inputs.to_vec() } else { Vec::new() };
        let autocast = self.autocast;
        self.nodes.push(Node { value, inputs, backward, requires_grad, param: None, autocast });
        Var(self.nodes.len() - 1)
    }

    /// Backward from a scalar output (seed 1).
    pub fn backward(&self, loss: Var) -> Result<Gradients> {
        let v = self.value(loss);
        if v.numel() != 1 {
            return Err(Error::Shape(format!("backward needs a scalar loss, got shape {}", v.shape())));
        }
        if self.grad_enabled && matches!(self.nodes[loss.0].backward, Some(Backward::UnitSeed(_))) {
            return self.walk(loss, None, None);
        }
        let seed = Tensor::full(v.shape().clone(), 1.0, v.dtype(), &v.device())?;
        self.backward_with(loss, seed)
    }

    /// `backward` (`scale`: `None`) or `backward_with` a seed of `scale`, handing each parameter's
    /// gradient (with its name) to `on_param` the moment it is final (every later node has been walked) and keeping
    /// what it returns: a data-parallel step starts averaging the last layers' gradients while the
    /// backward pass is still in the first ones.
    pub fn backward_streaming(
        &self,
        loss: Var,
        scale: Option<f64>,
        on_param: &mut OnParam<'_>,
    ) -> Result<Gradients> {
        let v = self.value(loss);
        if v.numel() != 1 {
            return Err(Error::Shape(format!("backward needs a scalar loss, got shape {}", v.shape())));
        }
        if !self.grad_enabled {
            return Err(Error::Invalid("backward on a no-grad tape".into()));
        }
        let seed = match scale {
            None if matches!(self.nodes[loss.0].backward, Some(Backward::UnitSeed(_))) => None,
            s => Some(Tensor::full(v.shape().clone(), s.unwrap_or(1.0), v.dtype(), &v.device())?),
        };
        self.walk(loss, seed, Some(on_param))
    }

    /// Backward from `out` with an explicit output gradient of the same shape.
    pub fn backward_with(&self, out: Var, grad: Tensor) -> Result<Gradients> {
        if !self.grad_enabled {
            return Err(Error::Invalid("backward on a no-grad tape".into()));
        }
        if grad.dims() != self.value(out).dims() {
            return Err(Error::Shape(format!(
                "output gradient {} does not match output {}",
                grad.shape(),
                self.value(out).shape()
            )));
        }
        self.walk(out, Some(grad), None)
    }

    /// The reverse walk from `out`, its gradient `seed`; `None`: a unit seed its node's
    /// `UnitSeedBackwardFn` needs not see.
    fn walk(
        &self,
        out: Var,
        seed: Option<Tensor>,
        mut on_param: Option<&mut OnParam<'_>>,
    ) -> Result<Gradients> {
        let unit_root = seed.is_none();
        let mut grads: Vec<Option<Tensor>> = vec![None; out.0 + 1];
        grads[out.0] = seed;
        let mut leaves = Vec::new();
        for i in (0..=out.0).rev() {
            let g = match grads[i].take() {
                Some(g) => Some(g),
                None if unit_root && i == out.0 => None,
                None => continue,
            };
            let node = &self.nodes[i];
            let Some(bw) = &node.backward else {
                if let (Some(g), true) = (g, node.requires_grad) {
                    // Every consumer of a leaf comes later on the tape: its gradient is final here.
                    let g = match (&mut on_param, &node.param) {
                        (Some(f), Some(name)) => f(name, g)?,
                        _ => g,
                    };
                    leaves.push((Var(i), g));
                }
                continue;
            };
            let input_grads = match (bw, &g) {
                (Backward::UnitSeed(f), g) => f(g.as_ref())?,
                (Backward::Plain(f), Some(g)) => f(g)?,
                (Backward::Accumulating(f), Some(g)) => {
                    let acc = node.inputs.first().and_then(|&x| grads[x.0].take());
                    f(g, acc)?
                }
                (_, None) => {
                    return Err(Error::Invalid(format!("node {i}: no output gradient to propagate")))
                }
            };
            if input_grads.len() != node.inputs.len() {
                return Err(Error::Invalid(format!(
                    "node {i}: backward returned {} gradients for {} inputs",
                    input_grads.len(),
                    node.inputs.len()
                )));
            }
            for (&inp, ig) in node.inputs.iter().zip(input_grads) {
                let Some(ig) = ig else { continue };
                if !self.nodes[inp.0].requires_grad {
                    continue;
                }
                if ig.dims() != self.nodes[inp.0].value.dims() {
                    return Err(Error::Shape(format!(
                        "node {i}: gradient {} for input {} of shape {}",
                        ig.shape(),
                        inp.0,
                        self.nodes[inp.0].value.shape()
                    )));
                }
                grads[inp.0] = Some(match grads[inp.0].take() {
                    None => ig,
                    Some(acc) => match self.nodes[inp.0].autocast {
                        Some(half) => {
                            let sum = acc.backend().binary(BinaryOp::Add, &acc, &ig)?;
                            sum.backend().store_half(sum.clone(), half)?
                        }
                        // A full-precision value (a weight, whose GEMM gradients may come in 16 bits)
                        // accumulates in f32.
                        None => {
                            let be = acc.backend();
                            be.binary(BinaryOp::Add, &be.widen(&acc)?, &be.widen(&ig)?)?
                        }
                    },
                });
            }
        }
        leaves.reverse();
        let params = leaves
            .iter()
            .filter_map(|(v, g)| self.nodes[v.0].param.clone().map(|n| (n, g.clone())))
            .collect();
        Ok(Gradients { leaves, params })
    }
}

/// What `Tape::backward_streaming` hands each parameter's final gradient to (with its name); what it
/// returns is kept as the gradient.
pub type OnParam<'a> = dyn FnMut(&str, Tensor) -> Result<Tensor> + 'a;

/// Gradients of the leaves that require one, in tape order.
pub struct Gradients {
    leaves: Vec<(Var, Tensor)>,
    params: Vec<(String, Tensor)>,
}

impl Gradients {
    /// Gradient of a leaf; `None` when no gradient reached it.
    pub fn get(&self, v: Var) -> Option<&Tensor> {
        self.leaves.iter().find(|(x, _)| *x == v).map(|(_, g)| g)
    }

    /// Gradients of named parameters, in the order they were put on the tape.
    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    pub fn param(&self, name: &str) -> Option<&Tensor> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, g)| g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A node whose gradient for its one input is `k` times the output's, ready for a unit seed: it
    /// records what its backward was given.
    fn unit_seeded(tape: &mut Tape, x: Var, k: f32, seen: &Arc<Mutex<Vec<Option<f32>>>>) -> Var {
        let v = tape.value(x).clone();
        let out = Tensor::scalar(k * v.to_vec::<f32>().unwrap().iter().sum::<f32>());
        let ready = Tensor::full(v.shape().clone(), k as f64, DType::F32, &v.device()).unwrap();
        let seen = seen.clone();
        tape.push_unit_seeded(
            out,
            &[x],
            Box::new(move |g: Option<&Tensor>| {
                let gv = g.map(|g| g.to_vec::<f32>().unwrap()[0]);
                seen.lock().unwrap().push(gv);
                Ok(vec![Some(match g {
                    None => ready.clone(),
                    Some(g) => g.backend().scale_by_scalar(&ready, g)?,
                })])
            }),
        )
    }

    #[test]
    fn a_unit_seeded_loss_is_not_scaled_by_one_and_any_other_gradient_is_applied() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut tape = Tape::new();
        let x = tape.leaf(Tensor::from_vec(vec![1f32, 2.0, 3.0], [3]).unwrap());
        let loss = unit_seeded(&mut tape, x, 2.0, &seen);
        let g = tape.backward(loss).unwrap();
        assert_eq!(g.get(x).unwrap().to_vec::<f32>().unwrap(), vec![2.0; 3]);
        let g = tape.backward_with(loss, Tensor::scalar(3f32)).unwrap();
        assert_eq!(g.get(x).unwrap().to_vec::<f32>().unwrap(), vec![6.0; 3]);
        // Below the root it sees the gradient that reached it.
        let scaled = tape.push(
            Tensor::scalar(0f32),
            &[loss],
            Box::new(|g: &Tensor| Ok(vec![Some(g.backend().affine(g, 5.0, 0.0)?)])),
        );
        let g = tape.backward(scaled).unwrap();
        assert_eq!(g.get(x).unwrap().to_vec::<f32>().unwrap(), vec![10.0; 3]);
        assert_eq!(*seen.lock().unwrap(), vec![None, Some(3.0), Some(5.0)]);
    }

    #[test]
    fn streaming_hands_each_parameter_its_final_gradient_last_layer_first() {
        use crate::ops::{add, mul, sum_all};
        // loss = sum(a * b + a * c), with a used twice (its gradient accumulates from two consumers)
        // and c a plain leaf (no parameter: not handed over).
        let mut tape = Tape::new();
        let a = tape.param("a", Tensor::from_vec(vec![1f32, 2.0, 3.0], [3]).unwrap(), true);
        let b = tape.param("b", Tensor::from_vec(vec![4f32, 5.0, 6.0], [3]).unwrap(), true);
        let c = tape.leaf(Tensor::from_vec(vec![-1f32, 0.5, 2.0], [3]).unwrap());
        let ab = mul(&mut tape, a, b).unwrap();
        let ac = mul(&mut tape, a, c).unwrap();
        let s = add(&mut tape, ab, ac).unwrap();
        let loss = sum_all(&mut tape, s).unwrap();
        let plain = tape.backward_with(loss, Tensor::scalar(2f32)).unwrap();
        let mut handed = Vec::new();
        let mut hook = |name: &str, g: Tensor| -> Result<Tensor> {
            handed.push((name.to_string(), g.to_vec::<f32>()?));
            // What the hook returns is what the gradients hold.
            g.backend().affine(&g, 10.0, 0.0)
        };
        let streamed = tape.backward_streaming(loss, Some(2.0), &mut hook).unwrap();
        // b (put on the tape last) first, 2a; then a once, with both consumers' terms: 2(b + c).
        assert_eq!(handed, vec![("b".into(), vec![2.0, 4.0, 6.0]), ("a".into(), vec![6.0, 11.0, 16.0])]);
        for name in ["a", "b"] {
            let p = plain.param(name).unwrap().to_vec::<f32>().unwrap();
            let q = streamed.param(name).unwrap().to_vec::<f32>().unwrap();
            assert_eq!(q, p.iter().map(|v| v * 10.0).collect::<Vec<_>>(), "{name}");
        }
        assert_eq!(
            streamed.get(c).unwrap().to_vec::<f32>().unwrap(),
            plain.get(c).unwrap().to_vec::<f32>().unwrap()
        );
    }
}
