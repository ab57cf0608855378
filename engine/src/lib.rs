//! The engine: tensors on a backend (CPU now, CUDA next), an explicit autograd tape, the ops with their
//! backward passes, IResNet backbones, margin-softmax heads, optimizers, training and evaluation.
//!
//! Memory layout: activations are NHWC and convolution weights OHWI (cuDNN's fastest tensor-core layout),
//! everywhere, so a training step never converts layouts. Export converts to PyTorch's NCHW/OIHW.

pub mod backend;
pub mod dist;
pub mod embed;
pub mod error;
pub mod eval;
pub mod heads;
pub mod io;
pub mod kill_point;
pub mod model;
pub mod ops;
pub mod optim;
pub mod rng;
pub mod tape;
pub mod tensor;
pub mod train;

pub use error::{Error, Result};
pub use tape::{Tape, Var};
pub use tensor::{DType, Device, Shape, Tensor};
