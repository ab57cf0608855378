//! Parameter groups: options chosen per parameter name, like the param_groups of torch.optim (AdaFace
//! puts batch-norm parameters in a group without weight decay).

use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupOptions {
    /// Multiplies the scheduled learning rate.
    pub lr_scale: f64,
    pub weight_decay: f64,
}

type Matcher = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The first rule whose matcher accepts a name decides its options; otherwise the default applies.
#[derive(Clone)]
pub struct ParamGroups {
    default: GroupOptions,
    rules: Vec<(Matcher, GroupOptions)>,
}

impl ParamGroups {
    /// One group for every parameter.
    pub fn uniform(weight_decay: f64) -> Self {
        ParamGroups { default: GroupOptions { lr_scale: 1.0, weight_decay }, rules: Vec::new() }
    }

    /// Adds a rule ahead of the default (rules are tried in the order added).
    pub fn with_rule(
        mut self,
        matcher: impl Fn(&str) -> bool + Send + Sync + 'static,
        opts: GroupOptions,
    ) -> Self {
        self.rules.push((Arc::new(matcher), opts));
        self
    }

    /// Weight decay `wd` everywhere except on batch-norm weights and biases (AdaFace's split).
    pub fn no_decay_on_batchnorm(wd: f64) -> Self {
        ParamGroups::uniform(wd)
            .with_rule(crate::model::is_batchnorm_param, GroupOptions { lr_scale: 1.0, weight_decay: 0.0 })
    }

    pub fn options_for(&self, name: &str) -> GroupOptions {
        self.rules.iter().find(|(m, _)| m(name)).map(|(_, o)| *o).unwrap_or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batchnorm_parameters_get_no_decay() {
        let g = ParamGroups::no_decay_on_batchnorm(5e-4);
        assert_eq!(g.options_for("layer1.0.bn2.weight").weight_decay, 0.0);
        assert_eq!(g.options_for("layer2.0.downsample.1.bias").weight_decay, 0.0);
        assert_eq!(g.options_for("features.bias").weight_decay, 0.0);
        assert_eq!(g.options_for("layer1.0.conv1.weight").weight_decay, 5e-4);
        assert_eq!(g.options_for("layer2.0.downsample.0.weight").weight_decay, 5e-4);
        assert_eq!(g.options_for("prelu.weight").weight_decay, 5e-4);
        assert_eq!(g.options_for("fc.weight").weight_decay, 5e-4);
    }
}
