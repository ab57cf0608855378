//! Data: RecordIO, verification sets, augmentation, loader, synthetic demo data.
