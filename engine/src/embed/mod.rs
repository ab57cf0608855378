//! Embedding images with a backbone in evaluation mode: tensors of normalized pixels, image files and
//! lists, and pair sets with insightface's flip-summed verification protocol.

mod images;
mod pair_set;

pub use images::{decode_for_model, embed_pixels, load_normalized, read_list};
pub use pair_set::{PairEval, PairEvalResult};

use crate::model::{IResNet, ParamStore};
use crate::rng::Rng;
use crate::tape::Tape;
use crate::tensor::{Device, Tensor};
use crate::Result;

/// Embeddings in evaluation mode for any backbone and parameters (used by `eval` and `embed` too).
/// Images go to the parameters' device; the embeddings come back to the CPU.
pub fn embed_with(model: &IResNet, params: &mut ParamStore, images: &Tensor) -> Result<Tensor> {
    let device = params
        .entries()
        .iter()
        .find(|e| e.value.dtype().is_float())
        .map_or(Device::Cpu, |e| e.value.device());
    let mut tape = Tape::no_grad();
    let x = tape.constant(images.to_device(&device)?);
    // Evaluation draws no random numbers; the generator is only a required argument.
    let mut unused = Rng::new(0);
    let e = model.forward(&mut tape, params, x, false, &mut unused)?;
    tape.value(e).to_device(&Device::Cpu)
}
