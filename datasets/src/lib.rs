//! Data: RecordIO, verification sets, augmentation, loader, synthetic demo data.
pub mod synth;
