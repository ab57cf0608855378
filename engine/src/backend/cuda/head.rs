//! The parameters of margin_head.cu, laid out as its `HeadParams` struct (all fields 4 bytes, so the
//! C and Rust layouts agree without padding), and the codes the kernel switches on.

/// Target logit kinds.
pub const TGT_COMBINED: i32 = 0;
pub const TGT_QAM: i32 = 1;
/// Target flags.
pub const F_FALLBACK: i32 = 1;
pub const F_EASY: i32 = 2;
pub const F_CLIP: i32 = 4;
pub const F_STE: i32 = 8;
/// Non-target kinds.
pub const NT_PLAIN: i32 = 0;
pub const NT_CURRICULAR: i32 = 1;
pub const NT_MV_ADAPTIVE: i32 = 2;
pub const NT_MV_FIXED: i32 = 3;
pub const NT_QAM: i32 = 4;
/// Weight kinds.
pub const W_NONE: i32 = 0;
pub const W_SMA: i32 = 1;
pub const W_HM: i32 = 2;
pub const W_FOCAL: i32 = 3;
/// SMAFace variants (the beta variant is W_SMA with w_beta != 1 and base clamping).
pub const SMA_BASE: i32 = 0;
pub const SMA_WEAK: i32 = 1;
pub const SMA_STRONG: i32 = 2;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadParams {
    pub s: f32,
    pub m1: f32,
    pub m2: f32,
    pub m3: f32,
    pub eps: f32,
    pub t: f32,
    pub inv_batch: f32,
    pub w_alpha: f32,
    pub w_p0: f32,
    pub w_c: f32,
    pub w_beta: f32,
    pub w_gamma: f32,
    pub target_kind: i32,
    pub flags: i32,
    pub nontarget_kind: i32,
    pub weight_kind: i32,
    pub sma_variant: i32,
}

// SAFETY: plain old data with C layout; passed by value as a kernel parameter.
unsafe impl cudarc::driver::DeviceRepr for HeadParams {}

impl HeadParams {
    /// NormFace-like defaults (s*c everywhere, unit weights) for a batch of `batch` rows.
    pub fn plain(s: f32, batch: usize) -> HeadParams {
        HeadParams {
            s,
            m1: 1.0,
            m2: 0.0,
            m3: 0.0,
            eps: 0.0,
            t: 0.0,
            inv_batch: 1.0 / batch.max(1) as f32,
            w_alpha: 0.0,
            w_p0: 0.0,
            w_c: 1.0,
            w_beta: 1.0,
            w_gamma: 0.0,
            target_kind: TGT_COMBINED,
            flags: 0,
            nontarget_kind: NT_PLAIN,
            weight_kind: W_NONE,
            sma_variant: SMA_BASE,
        }
    }

    /// ArcFace (§4) in EXACT mode with the fallback.
    pub fn arcface(s: f32, m: f32, batch: usize) -> HeadParams {
        HeadParams { m2: m, flags: F_FALLBACK, ..HeadParams::plain(s, batch) }
    }

    /// CosFace (§3).
    pub fn cosface(s: f32, m: f32, batch: usize) -> HeadParams {
        HeadParams { m3: m, ..HeadParams::plain(s, batch) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_cuda_struct() {
        // 12 floats then 5 ints, no padding: the order must follow margin_head.cu.
        assert_eq!(std::mem::size_of::<HeadParams>(), 17 * 4);
        let src = kernels::MARGIN_HEAD.source;
        let start = src.find("struct HeadParams {").expect("struct in margin_head.cu");
        let body = &src[start..start + src[start..].find("};").unwrap()];
        let fields: Vec<&str> = body
            .lines()
            .skip(1)
            .flat_map(|l| l.split("//").next().unwrap().split(|c| c == ',' || c == ';'))
            .map(|f| f.trim().trim_start_matches("float ").trim_start_matches("int ").trim())
            .filter(|f| !f.is_empty())
            .collect();
        assert_eq!(
            fields,
            [
                "s", "m1", "m2", "m3", "eps", "t", "inv_batch", "w_alpha", "w_p0", "w_c", "w_beta", "w_gamma",
                "target_kind", "flags", "nontarget_kind", "weight_kind", "sma_variant"
            ]
        );
    }
}
