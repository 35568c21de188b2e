//! `ReduceLROnPlateau` for either direction of optimisation.

use serde::{Deserialize, Serialize};

/// `ReduceLROnPlateau`'s settings; the tracker runs it in neuron phases only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlateauLr {
    /// Multiplier applied on a plateau. Default 0.5.
    pub factor: f64,
    /// Epochs without improvement before a decay. Default 5.
    pub patience: usize,
    /// Relative improvement that counts, as in `PyTorch`'s `threshold` (mode `rel`). Default 1e-4.
    pub threshold: f64,
    /// Epochs to wait after a decay. Default 0.
    pub cooldown: usize,
    /// The rate never goes below this. Default 1e-6.
    pub min_lr: f64,
}

impl Default for PlateauLr {
    fn default() -> Self {
        Self {
            factor: 0.5,
            patience: 5,
            threshold: 1e-4,
            cooldown: 0,
            min_lr: 1e-6,
        }
    }
}

/// The scheduler's state: the current rate and what it has seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlateauState {
    /// Current learning rate.
    pub lr: f64,
    /// Best score seen since the last reset.
    pub best: Option<f64>,
    /// Epochs since it improved.
    pub bad_epochs: usize,
    /// Epochs of cooldown left.
    pub cooldown_left: usize,
    /// Decays applied since the last reset.
    pub decays: u32,
}

impl PlateauState {
    /// A fresh scheduler at `lr`.
    pub fn new(lr: f64) -> Self {
        Self {
            lr,
            best: None,
            bad_epochs: 0,
            cooldown_left: 0,
            decays: 0,
        }
    }

    /// Whether `score` improves on `best` by the relative threshold, in the right direction.
    fn improves(config: &PlateauLr, maximize: bool, score: f64, best: f64) -> bool {
        let margin = config.threshold * best.abs();
        if maximize {
            score > best + margin
        } else {
            score < best - margin
        }
    }

    /// Feeds one epoch's score; returns true when the rate was decayed.
    pub fn step(&mut self, config: &PlateauLr, maximize: bool, score: f64) -> bool {
        match self.best {
            Some(best) if !Self::improves(config, maximize, score, best) => self.bad_epochs += 1,
            _ => {
                self.best = Some(score);
                self.bad_epochs = 0;
            }
        }
        if self.cooldown_left > 0 {
            self.cooldown_left -= 1;
            self.bad_epochs = 0;
        }
        if self.bad_epochs > config.patience {
            let next = (self.lr * config.factor).max(config.min_lr);
            let decayed = next < self.lr;
            self.lr = next;
            self.decays += u32::from(decayed);
            self.cooldown_left = config.cooldown;
            self.bad_epochs = 0;
            decayed
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(maximize: bool, scores: &[f64]) -> Vec<f64> {
        let config = PlateauLr {
            patience: 1,
            ..Default::default()
        };
        let mut s = PlateauState::new(1.0);
        scores
            .iter()
            .map(|v| {
                s.step(&config, maximize, *v);
                s.lr
            })
            .collect()
    }

    #[test]
    fn decays_after_patience_in_both_directions() {
        // like PyTorch: a decay after more than `patience` bad epochs
        assert_eq!(
            run(true, &[0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7]),
            [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
        );
        assert_eq!(
            run(false, &[0.5, 0.4, 0.4, 0.4, 0.3, 0.3, 0.3]),
            [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
        );
        // a "better" score in the wrong direction is a bad epoch
        assert_eq!(run(false, &[0.5, 0.6, 0.7]), [1.0, 1.0, 0.5]);
    }

    #[test]
    fn never_below_min_lr() {
        let config = PlateauLr {
            patience: 0,
            min_lr: 0.3,
            ..Default::default()
        };
        let mut s = PlateauState::new(1.0);
        for _ in 0..10 {
            s.step(&config, true, 0.0);
        }
        assert_eq!(s.lr, 0.3);
        assert_eq!(s.decays, 2);
    }
}
