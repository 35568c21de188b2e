//! The update rule: Adam or SGD with dfdx's configurations, its checks, and its plain-data
//! form for checkpoints.

use dfdx::optim::{AdamConfig, Momentum, SgdConfig, WeightDecay};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The update rule.
#[derive(Debug, Clone, Copy)]
pub enum Rule {
    /// Adam, with dfdx's configuration.
    Adam(AdamConfig),
    /// SGD (momentum, weight decay), with dfdx's configuration.
    Sgd(SgdConfig),
}

impl Rule {
    /// Checks every hyper-parameter: a finite rate >= 0, Adam's decays in [0, 1) and a
    /// positive epsilon, finite momentum and weight decay >= 0.
    ///
    /// # Errors
    /// [`Error::Config`] naming the value.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: f64| {
            Err(Error::Config(format!(
                "the optimizer's {what} is {v}; it must be finite and in range"
            )))
        };
        let decay = |w: &Option<WeightDecay>| match w {
            Some(WeightDecay::L2(v) | WeightDecay::Decoupled(v))
                if !(v.is_finite() && *v >= 0.0) =>
            {
                bad("weight decay (>= 0)", *v)
            }
            _ => Ok(()),
        };
        match self {
            Rule::Adam(c) => {
                check_lr(c.lr)?;
                for b in c.betas {
                    if !(0.0..1.0).contains(&b) {
                        return bad("Adam beta (in [0, 1))", b);
                    }
                }
                if !(c.eps.is_finite() && c.eps > 0.0) {
                    return bad("Adam epsilon (> 0)", c.eps);
                }
                decay(&c.weight_decay)
            }
            Rule::Sgd(c) => {
                check_lr(c.lr)?;
                match c.momentum {
                    Some(Momentum::Classic(m) | Momentum::Nesterov(m))
                        if !(m.is_finite() && m >= 0.0) =>
                    {
                        return bad("momentum (>= 0)", m);
                    }
                    _ => {}
                }
                decay(&c.weight_decay)
            }
        }
    }
}

/// A learning rate must be a finite number >= 0 (a negative one would climb the loss).
pub(super) fn check_lr(lr: f64) -> Result<()> {
    if lr.is_finite() && lr >= 0.0 {
        return Ok(());
    }
    Err(Error::Config(format!(
        "the learning rate is {lr}; it must be finite and >= 0 (a negative rate ascends the \
         loss)"
    )))
}

/// [`Rule`] as plain data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RuleConfig {
    /// Adam.
    Adam {
        /// Learning rate.
        lr: f64,
        /// Moment decays.
        betas: [f64; 2],
        /// Denominator epsilon.
        eps: f64,
        /// `("l2" | "decoupled", amount)`.
        weight_decay: Option<(String, f64)>,
    },
    /// SGD.
    Sgd {
        /// Learning rate.
        lr: f64,
        /// `("classic" | "nesterov", amount)`.
        momentum: Option<(String, f64)>,
        /// `("l2" | "decoupled", amount)`.
        weight_decay: Option<(String, f64)>,
    },
}

fn decay_to_data(w: Option<WeightDecay>) -> Option<(String, f64)> {
    w.map(|w| match w {
        WeightDecay::L2(v) => ("l2".to_string(), v),
        WeightDecay::Decoupled(v) => ("decoupled".to_string(), v),
    })
}

fn decay_from_data(w: Option<(String, f64)>) -> Option<WeightDecay> {
    w.map(|(kind, v)| match kind.as_str() {
        "decoupled" => WeightDecay::Decoupled(v),
        _ => WeightDecay::L2(v),
    })
}

impl From<&Rule> for RuleConfig {
    fn from(rule: &Rule) -> Self {
        match rule {
            Rule::Adam(c) => RuleConfig::Adam {
                lr: c.lr,
                betas: c.betas,
                eps: c.eps,
                weight_decay: decay_to_data(c.weight_decay),
            },
            Rule::Sgd(c) => RuleConfig::Sgd {
                lr: c.lr,
                momentum: c.momentum.map(|m| match m {
                    Momentum::Classic(v) => ("classic".to_string(), v),
                    Momentum::Nesterov(v) => ("nesterov".to_string(), v),
                }),
                weight_decay: decay_to_data(c.weight_decay),
            },
        }
    }
}

impl From<RuleConfig> for Rule {
    fn from(rule: RuleConfig) -> Self {
        match rule {
            RuleConfig::Adam {
                lr,
                betas,
                eps,
                weight_decay,
            } => Rule::Adam(AdamConfig {
                lr,
                betas,
                eps,
                weight_decay: decay_from_data(weight_decay),
            }),
            RuleConfig::Sgd {
                lr,
                momentum,
                weight_decay,
            } => Rule::Sgd(SgdConfig {
                lr,
                momentum: momentum.map(|(kind, v)| match kind.as_str() {
                    "nesterov" => Momentum::Nesterov(v),
                    _ => Momentum::Classic(v),
                }),
                weight_decay: decay_from_data(weight_decay),
            }),
        }
    }
}
