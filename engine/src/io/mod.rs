//! Files the engine reads and writes.

pub mod atomic;
pub mod onnx;
pub mod safetensors;
pub mod torch;
