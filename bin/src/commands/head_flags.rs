//! The head hyper-parameter flags of spec/heads.md §15, shared by `head` and `train`. Unset flags keep
//! the head's defaults.

use engine::heads::HeadParams;
use engine::Error;

#[derive(clap::Args, Clone, Debug, Default)]
pub struct HeadFlags {
    /// Scale s.
    #[arg(long)]
    pub s: Option<f64>,
    /// Margin m.
    #[arg(long)]
    pub m: Option<f64>,
    /// Combined margin m1 (multiplicative angle).
    #[arg(long)]
    pub m1: Option<f64>,
    /// Combined margin m2 (additive angle).
    #[arg(long)]
    pub m2: Option<f64>,
    /// Combined margin m3 (additive cosine).
    #[arg(long)]
    pub m3: Option<f64>,
    /// MV-Softmax t (mv-am, mv-arc, qcface-mvs).
    #[arg(long)]
    pub t: Option<f64>,
    /// AdaFace/SMAFace norm concentration h.
    #[arg(long)]
    pub h: Option<f64>,
    /// AdaFace/SMAFace EMA weight of the new batch.
    #[arg(long)]
    pub t_alpha: Option<f64>,
    /// MagFace/QCFace lower feature norm l_a.
    #[arg(long)]
    pub l_a: Option<f64>,
    /// MagFace/QCFace upper feature norm u_a.
    #[arg(long)]
    pub u_a: Option<f64>,
    /// MagFace lower margin l_m.
    #[arg(long)]
    pub l_m: Option<f64>,
    /// MagFace upper margin u_m.
    #[arg(long)]
    pub u_m: Option<f64>,
    /// MagFace regularizer weight lambda_g.
    #[arg(long)]
    pub lambda_g: Option<f64>,
    /// SMAFace alpha.
    #[arg(long, allow_hyphen_values = true)]
    pub alpha: Option<f64>,
    /// SMAFace p0.
    #[arg(long)]
    pub p0: Option<f64>,
    /// SMAFace beta variant's beta.
    #[arg(long)]
    pub beta: Option<f64>,
    /// F-Softmax gamma (focal, focal-adaface).
    #[arg(long)]
    pub gamma: Option<f64>,
    /// QCFace k.
    #[arg(long)]
    pub k: Option<f64>,
    /// QCFace b.
    #[arg(long, allow_hyphen_values = true)]
    pub b: Option<f64>,
    /// QCFace lambda.
    #[arg(long)]
    pub lambda: Option<f64>,
    /// `--easy-margin` (on), `--easy-margin false` (off); unset: the head's default.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub easy_margin: Option<bool>,
    /// exact or ste (arcface).
    #[arg(long)]
    pub grad_mode: Option<String>,
    /// base, weak, strong or beta (SMAFace family).
    #[arg(long)]
    pub variant: Option<String>,
    /// planning or warmup (qcface, qcface-cur, qcface-mvs).
    #[arg(long)]
    pub phase: Option<String>,
}

impl HeadFlags {
    pub fn to_params(&self) -> Result<HeadParams, Error> {
        Ok(HeadParams {
            s: self.s,
            m: self.m,
            m1: self.m1,
            m2: self.m2,
            m3: self.m3,
            t: self.t,
            h: self.h,
            t_alpha: self.t_alpha,
            l_a: self.l_a,
            u_a: self.u_a,
            l_m: self.l_m,
            u_m: self.u_m,
            lambda_g: self.lambda_g,
            alpha: self.alpha,
            p0: self.p0,
            beta: self.beta,
            gamma: self.gamma,
            k: self.k,
            b: self.b,
            lambda: self.lambda,
            easy_margin: self.easy_margin,
            grad_mode: self.grad_mode.as_deref().map(str::parse).transpose()?,
            variant: self.variant.as_deref().map(str::parse).transpose()?,
            phase: self.phase.as_deref().map(str::parse).transpose()?,
        })
    }
}
