//! insightface face sets: `train.rec` + `train.idx` + `property`, with record 0 giving identity ranges.

mod pack;
mod property;
mod reader;
mod writer;

pub use pack::{pack_aligned_list, pack_folder, pack_list, PackOptions, PackReport};
pub use property::Property;
pub use reader::{FaceSet, Layout, Sample};
pub use writer::{write_face_set, FaceSetSummary, FaceSetWriter};

#[cfg(test)]
mod tests;
