//! The image-record header MXNet's `recordio.pack` writes: `IfQQ` (flag, label, id, id2), 24 bytes,
//! then `flag` extra f32 labels when flag > 0, then the encoded image.

/// Size of the fixed part of the header.
pub const IR_SIZE: usize = 24;

#[derive(Debug, Clone, PartialEq)]
pub struct ImageHeader {
    /// 0 for a single label; otherwise the number of f32 labels after the header.
    pub flag: u32,
    /// The label when `flag == 0` (MXNet stores 0 here otherwise).
    pub label: f32,
    pub id: u64,
    pub id2: u64,
    /// The `flag` extra labels (empty when flag == 0).
    pub labels: Vec<f32>,
}

impl ImageHeader {
    pub fn single(label: f32, id: u64) -> ImageHeader {
        ImageHeader { flag: 0, label, id, id2: 0, labels: Vec::new() }
    }

    /// A multi-label header; MXNet sets `flag` to the label count and `label` to 0.
    pub fn multi(labels: Vec<f32>, id: u64) -> ImageHeader {
        ImageHeader { flag: labels.len() as u32, label: 0.0, id, id2: 0, labels }
    }

    /// The class label as insightface reads it: `label`, or the first of the extra labels.
    pub fn class_label(&self) -> f32 {
        if self.flag > 0 {
            self.labels[0]
        } else {
            self.label
        }
    }

    /// Splits a record payload into header and the rest (the encoded image).
    pub fn parse(payload: &[u8]) -> Result<(ImageHeader, &[u8]), String> {
        if payload.len() < IR_SIZE {
            return Err(format!("{} bytes, too short for the {IR_SIZE}-byte image header", payload.len()));
        }
        let u32_at = |o: usize| u32::from_le_bytes(payload[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(payload[o..o + 8].try_into().unwrap());
        let flag = u32_at(0);
        let label = f32::from_bits(u32_at(4));
        let id = u64_at(8);
        let id2 = u64_at(16);
        let extra = flag as usize * 4;
        if payload.len() - IR_SIZE < extra {
            return Err(format!(
                "header flag {flag} announces {flag} labels ({extra} bytes) but only {} bytes follow",
                payload.len() - IR_SIZE
            ));
        }
        let labels = payload[IR_SIZE..IR_SIZE + extra]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Ok((ImageHeader { flag, label, id, id2, labels }, &payload[IR_SIZE + extra..]))
    }

    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.labels.len() as u32).to_le_bytes());
        let label = if self.labels.is_empty() { self.label } else { 0.0 };
        out.extend_from_slice(&label.to_le_bytes());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.id2.to_le_bytes());
        for l in &self.labels {
            out.extend_from_slice(&l.to_le_bytes());
        }
    }
}

/// Header plus encoded image, as `mx.recordio.pack(header, s)` builds it (`flag` follows the labels).
pub fn pack_record(header: &ImageHeader, image: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(IR_SIZE + header.labels.len() * 4 + image.len());
    header.write_to(&mut out);
    out.extend_from_slice(image);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_label_round_trip() {
        let h = ImageHeader { flag: 0, label: 7.0, id: 3, id2: 9, labels: vec![] };
        let rec = pack_record(&h, b"jpeg");
        assert_eq!(rec.len(), 28);
        let (back, rest) = ImageHeader::parse(&rec).unwrap();
        assert_eq!(back, h);
        assert_eq!(rest, b"jpeg");
        assert_eq!(back.class_label(), 7.0);
    }

    #[test]
    fn multi_label_uses_first_extra_label() {
        let h = ImageHeader::multi(vec![5.0, 0.25, 1.5], 1);
        let rec = pack_record(&h, b"x");
        let (back, rest) = ImageHeader::parse(&rec).unwrap();
        assert_eq!(back.flag, 3);
        assert_eq!(back.label, 0.0);
        assert_eq!(back.labels, vec![5.0, 0.25, 1.5]);
        assert_eq!(back.class_label(), 5.0);
        assert_eq!(rest, b"x");
    }

    #[test]
    fn short_payloads_are_refused() {
        assert!(ImageHeader::parse(&[0u8; 10]).unwrap_err().contains("too short"));
        let mut rec = pack_record(&ImageHeader::single(1.0, 0), b"");
        rec[0] = 4; // four labels announced, none present
        assert!(ImageHeader::parse(&rec).unwrap_err().contains("announces 4 labels"));
    }
}
