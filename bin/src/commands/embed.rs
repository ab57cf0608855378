//! `engine-train embed`: embeddings and their norms for a RecordIO set or an image list, as safetensors
//! (`embeddings` [N, D] f32, `norms` [N] f32, `labels` [N] i64; `degradation` [N] f32 when every record
//! of a face set carries a second header label, as the demo set's degradation level).

use super::CmdResult;
use crate::aligned::{check_aligned_input, embed_items, Item};
use crate::backbone_io::ModelSource;
use datasets::faceset::FaceSet;
use datasets::image::align::ARCFACE_112;
use datasets::image_list::read_image_list;
use datasets::loader::extend_normalized;
use engine::embed::{decode_for_model, embed_pixels};
use engine::eval::quality::row_norms;
use engine::io::safetensors::{self, SafeTensors};
use engine::Tensor;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelSource,
    #[command(flatten)]
    device: crate::device_choice::DeviceFlag,
    /// A RecordIO face set (folder or .rec), or a text list of `image-path [label] [x1 y1 ... x5 y5]`
    /// lines (with the five landmarks, the image is first aligned to 112x112 as insightface's norm_crop).
    #[arg(long)]
    data: PathBuf,
    /// Output safetensors file.
    #[arg(long)]
    output: PathBuf,
}

pub fn run(a: Args) -> CmdResult {
    let (model, params) = a.model.load()?;
    let mut params = params.to_device(&a.device.choose("embedding")?)?;
    let hw = model.config.input_hw;
    let mut px = Vec::new();
    let mut labels = Vec::new();
    let mut degradation = Vec::new();
    let face_set = a.data.is_dir() || a.data.extension().is_some_and(|e| e == "rec");
    if face_set {
        let set = FaceSet::open(&a.data)?;
        for i in 0..set.len() {
            let s = set.sample(i)?;
            let img = decode_for_model(&s.image, hw, &format!("{}: record {i}", a.data.display()))?;
            extend_normalized(&mut px, &img.data, hw.1 * 3, false);
            labels.push(s.label as i64);
            degradation.extend(s.header.labels.get(1).copied());
        }
    }
    let (emb, dim) = if !face_set {
        // An image list; lines with landmarks are aligned to 112x112 first (crate::aligned).
        let list = read_image_list(&a.data)?;
        let items: Vec<Item> = list
            .iter()
            .map(|e| Item {
                path: e.path.clone(),
                origin: format!("{}:{}", a.data.display(), e.line),
                landmarks: e.landmarks.clone(),
            })
            .collect();
        if list.iter().any(|e| e.landmarks.is_some()) {
            check_aligned_input(&model)?;
        }
        labels = list.iter().map(|e| e.label as i64).collect();
        embed_items(&model, &mut params, &items, &ARCFACE_112, false, "embed")?
    } else {
        embed_pixels(&model, &mut params, &px)?
    };
    let n = labels.len();
    let norms: Vec<f32> = row_norms(&emb, dim)?.into_iter().map(|v| v as f32).collect();
    let mut st = SafeTensors::default();
    st.push("embeddings", Tensor::from_vec(emb, [n, dim])?);
    st.push("norms", Tensor::from_vec(norms, [n])?);
    st.push("labels", Tensor::from_vec(labels, [n])?);
    if face_set && degradation.len() == n {
        st.push("degradation", Tensor::from_vec(degradation, [n])?);
    }
    safetensors::write(&a.output, &st)?;
    eprintln!("wrote {n} embeddings of size {dim} to {}", a.output.display());
    Ok(())
}
