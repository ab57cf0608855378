//! Hyper-parameters as named on the command line (spec §15). Unset values take each head's default; a
//! value a head does not use is an error, so a typo'd flag never silently does nothing.

use crate::{Error, Result};
use std::cell::RefCell;

/// Gradient of an angular target margin: the formula's own (EXACT) or straight-through (arcface_torch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GradMode {
    Exact,
    Ste,
}

/// SMAFace-family weight variants (spec §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Base,
    Weak,
    Strong,
    Beta,
}

/// QCFace training phase (spec §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Warmup,
    Planning,
}

impl std::str::FromStr for GradMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "exact" => Ok(GradMode::Exact),
            "ste" => Ok(GradMode::Ste),
            _ => Err(Error::Invalid(format!("grad-mode '{s}': expected exact or ste"))),
        }
    }
}

impl std::str::FromStr for Variant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "base" => Ok(Variant::Base),
            "weak" => Ok(Variant::Weak),
            "strong" => Ok(Variant::Strong),
            "beta" => Ok(Variant::Beta),
            _ => Err(Error::Invalid(format!("variant '{s}': expected base, weak, strong or beta"))),
        }
    }
}

impl std::str::FromStr for Phase {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "warmup" => Ok(Phase::Warmup),
            "planning" => Ok(Phase::Planning),
            _ => Err(Error::Invalid(format!("phase '{s}': expected warmup or planning"))),
        }
    }
}

/// Every hyper-parameter flag; `None` means the head's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeadParams {
    pub s: Option<f64>,
    pub m: Option<f64>,
    pub m1: Option<f64>,
    pub m2: Option<f64>,
    pub m3: Option<f64>,
    pub t: Option<f64>,
    pub h: Option<f64>,
    pub t_alpha: Option<f64>,
    pub l_a: Option<f64>,
    pub u_a: Option<f64>,
    pub l_m: Option<f64>,
    pub u_m: Option<f64>,
    pub lambda_g: Option<f64>,
    pub alpha: Option<f64>,
    pub p0: Option<f64>,
    pub beta: Option<f64>,
    pub gamma: Option<f64>,
    pub k: Option<f64>,
    pub b: Option<f64>,
    pub lambda: Option<f64>,
    pub easy_margin: Option<bool>,
    pub grad_mode: Option<GradMode>,
    pub variant: Option<Variant>,
    pub phase: Option<Phase>,
}

impl HeadParams {
    fn number(&self, name: &str) -> Option<f64> {
        match name {
            "s" => self.s,
            "m" => self.m,
            "m1" => self.m1,
            "m2" => self.m2,
            "m3" => self.m3,
            "t" => self.t,
            "h" => self.h,
            "t-alpha" => self.t_alpha,
            "l-a" => self.l_a,
            "u-a" => self.u_a,
            "l-m" => self.l_m,
            "u-m" => self.u_m,
            "lambda-g" => self.lambda_g,
            "alpha" => self.alpha,
            "p0" => self.p0,
            "beta" => self.beta,
            "gamma" => self.gamma,
            "k" => self.k,
            "b" => self.b,
            "lambda" => self.lambda,
            _ => None,
        }
    }

    /// Whether the flag `name` (without "--") has a value.
    fn is_set(&self, name: &str) -> bool {
        match name {
            "easy-margin" => self.easy_margin.is_some(),
            "grad-mode" => self.grad_mode.is_some(),
            "variant" => self.variant.is_some(),
            "phase" => self.phase.is_some(),
            _ => self.number(name).is_some(),
        }
    }

    /// Sets each (flag, value) of `args` that has no value yet: a preset's values under the user's flags.
    pub fn fill_unset(&mut self, args: &[(&str, &str)]) -> Result<()> {
        for &(flag, value) in args {
            if !self.is_set(flag) {
                self.set(flag, value)?;
            }
        }
        Ok(())
    }

    /// Sets one value by its flag name (without "--") from text, as fixtures and configs carry them.
    pub fn set(&mut self, flag: &str, value: &str) -> Result<()> {
        let num = || -> Result<f64> {
            value.parse::<f64>().map_err(|_| Error::Invalid(format!("--{flag}: '{value}' is not a number")))
        };
        match flag {
            "s" => self.s = Some(num()?),
            "m" => self.m = Some(num()?),
            "m1" => self.m1 = Some(num()?),
            "m2" => self.m2 = Some(num()?),
            "m3" => self.m3 = Some(num()?),
            "t" => self.t = Some(num()?),
            "h" => self.h = Some(num()?),
            "t-alpha" => self.t_alpha = Some(num()?),
            "l-a" => self.l_a = Some(num()?),
            "u-a" => self.u_a = Some(num()?),
            "l-m" => self.l_m = Some(num()?),
            "u-m" => self.u_m = Some(num()?),
            "lambda-g" => self.lambda_g = Some(num()?),
            "alpha" => self.alpha = Some(num()?),
            "p0" => self.p0 = Some(num()?),
            "beta" => self.beta = Some(num()?),
            "gamma" => self.gamma = Some(num()?),
            "k" => self.k = Some(num()?),
            "b" => self.b = Some(num()?),
            "lambda" => self.lambda = Some(num()?),
            "easy-margin" => {
                self.easy_margin = Some(match value {
                    "true" | "on" | "1" => true,
                    "false" | "off" | "0" => false,
                    _ => {
                        return Err(Error::Invalid(format!("--easy-margin: '{value}' is not true or false")))
                    }
                })
            }
            "grad-mode" => self.grad_mode = Some(value.parse()?),
            "variant" => self.variant = Some(value.parse()?),
            "phase" => self.phase = Some(value.parse()?),
            _ => return Err(Error::Invalid(format!("unknown head hyper-parameter --{flag}"))),
        }
        Ok(())
    }

    /// Names (as flags, without "--") of the values that are set.
    fn set_names(&self) -> Vec<&'static str> {
        const NUMBERS: [&str; 20] = [
            "s", "m", "m1", "m2", "m3", "t", "h", "t-alpha", "l-a", "u-a", "l-m", "u-m", "lambda-g", "alpha",
            "p0", "beta", "gamma", "k", "b", "lambda",
        ];
        let mut v: Vec<&'static str> = NUMBERS.into_iter().filter(|n| self.number(n).is_some()).collect();
        if self.easy_margin.is_some() {
            v.push("easy-margin");
        }
        if self.grad_mode.is_some() {
            v.push("grad-mode");
        }
        if self.variant.is_some() {
            v.push("variant");
        }
        if self.phase.is_some() {
            v.push("phase");
        }
        v
    }

    /// A reader that records which values a head used.
    pub(crate) fn reader<'a>(&'a self, head: &'static str) -> Reader<'a> {
        Reader { p: self, head, used: RefCell::new(Vec::new()) }
    }
}

pub(crate) struct Reader<'a> {
    p: &'a HeadParams,
    head: &'static str,
    used: RefCell<Vec<&'static str>>,
}

impl Reader<'_> {
    /// A finite number, or `default`.
    pub fn num(&self, name: &'static str, default: f64) -> Result<f64> {
        self.used.borrow_mut().push(name);
        let v = self.p.number(name).unwrap_or(default);
        if !v.is_finite() {
            return Err(Error::Invalid(format!("{}: --{name} must be finite, got {v}", self.head)));
        }
        Ok(v)
    }

    /// A number that must satisfy `ok`, described by `what` in the error.
    pub fn num_where(
        &self,
        name: &'static str,
        default: f64,
        ok: impl Fn(f64) -> bool,
        what: &str,
    ) -> Result<f64> {
        let v = self.num(name, default)?;
        if !ok(v) {
            return Err(Error::Invalid(format!("{}: --{name} {v} is invalid: {what}", self.head)));
        }
        Ok(v)
    }

    pub fn positive(&self, name: &'static str, default: f64) -> Result<f64> {
        self.num_where(name, default, |v| v > 0.0, "it must be > 0")
    }

    pub fn non_negative(&self, name: &'static str, default: f64) -> Result<f64> {
        self.num_where(name, default, |v| v >= 0.0, "it must be >= 0")
    }

    pub fn easy_margin(&self, default: bool) -> bool {
        self.used.borrow_mut().push("easy-margin");
        self.p.easy_margin.unwrap_or(default)
    }

    pub fn grad_mode(&self) -> GradMode {
        self.used.borrow_mut().push("grad-mode");
        self.p.grad_mode.unwrap_or(GradMode::Exact)
    }

    pub fn variant(&self) -> Variant {
        self.used.borrow_mut().push("variant");
        self.p.variant.unwrap_or(Variant::Base)
    }

    pub fn phase(&self) -> Phase {
        self.used.borrow_mut().push("phase");
        self.p.phase.unwrap_or(Phase::Planning)
    }

    /// Errors if a value was set that the head never read.
    pub fn finish(self) -> Result<()> {
        let used = self.used.borrow();
        let unused: Vec<String> =
            self.p.set_names().into_iter().filter(|n| !used.contains(n)).map(|n| format!("--{n}")).collect();
        if unused.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "{}: {} not a hyper-parameter of this head (it uses: {})",
                self.head,
                unused.join(", ") + if unused.len() == 1 { " is" } else { " are" },
                used.iter().map(|n| format!("--{n}")).collect::<Vec<_>>().join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_values_fill_only_unset_flags() {
        let mut p = HeadParams { m: Some(0.3), ..HeadParams::default() };
        p.fill_unset(&[("s", "64"), ("m", "0.5"), ("l-a", "10")]).unwrap();
        assert_eq!((p.s, p.m, p.l_a), (Some(64.0), Some(0.3), Some(10.0)));
        assert!(p.fill_unset(&[("zz", "1")]).is_err());
        assert!(p.clone().fill_unset(&[("k", "x")]).is_err());
    }

    #[test]
    fn unused_and_invalid_values_are_errors() {
        let p = HeadParams { m1: Some(2.0), ..Default::default() };
        let r = p.reader("cosface");
        assert_eq!(r.num("s", 64.0).unwrap(), 64.0);
        let e = r.finish().unwrap_err().to_string();
        assert!(e.contains("--m1") && e.contains("cosface") && e.contains("--s"), "{e}");
        let p = HeadParams { s: Some(-1.0), ..Default::default() };
        assert!(p.reader("softmax").positive("s", 64.0).unwrap_err().to_string().contains("--s -1"));
        assert!("bogus".parse::<Variant>().is_err());
    }
}
