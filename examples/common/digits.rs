//! The examples' datasets as rows of pixels in [0, 1] and labels 0..9, split three ways: the
//! digits shipped in `data/digits.csv` (UCI optical digits, 8x8, fixed split), and the shape
//! every dataset has (`Dataset<P>`, `P` pixels an image).

use std::path::PathBuf;

use perforated::prelude::*;
use rand::seq::SliceRandom;

/// Pixels per image.
pub const PIXELS: usize = 64;
/// Classes.
pub const CLASSES: usize = 10;

/// One split: images as rows of `P` values in [0, 1], labels 0..9.
#[derive(Debug, Clone, Default)]
pub struct Split<const P: usize = PIXELS> {
    pub pixels: Vec<f32>,
    pub labels: Vec<usize>,
}

/// A fixed train / validation / test split of images of `P` pixels.
#[derive(Debug, Clone)]
pub struct Dataset<const P: usize = PIXELS> {
    pub train: Split<P>,
    pub val: Split<P>,
    pub test: Split<P>,
}

/// The digits: 8x8 images.
pub type Digits = Dataset<PIXELS>;

impl Digits {
    /// Reads `data/digits.csv` from the repository.
    pub fn load() -> Result<Self, String> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/digits.csv");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut digits = Digits {
            train: Split::default(),
            val: Split::default(),
            test: Split::default(),
        };
        for (n, line) in text.lines().enumerate().skip(1) {
            let bad = |what: &str| format!("{}:{}: {what}", path.display(), n + 1);
            let mut fields = line.split(',');
            let split = match fields.next() {
                Some("train") => &mut digits.train,
                Some("val") => &mut digits.val,
                Some("test") => &mut digits.test,
                other => return Err(bad(&format!("unknown split {other:?}"))),
            };
            let label: usize = fields
                .next()
                .and_then(|l| l.parse().ok())
                .filter(|l| *l < CLASSES)
                .ok_or_else(|| bad("bad label"))?;
            let before = split.pixels.len();
            for f in fields {
                split
                    .pixels
                    .push(f.parse().map_err(|_| bad("bad pixel value"))?);
            }
            if split.pixels.len() - before != PIXELS {
                return Err(bad("expected 64 pixels"));
            }
            split.labels.push(label);
        }
        Ok(digits)
    }
}

impl<const P: usize> Split<P> {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Row indices in batches of `size`, shuffled by `rng`.
    pub fn batches(&self, size: usize, rng: &mut impl rand::Rng) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(rng);
        order.chunks(size).map(<[usize]>::to_vec).collect()
    }

    /// The rows `rows` as `(images, one-hot labels)`.
    #[allow(clippy::type_complexity)]
    pub fn tensors<E: perforated::Float, D: Device<E>>(
        &self,
        dev: &D,
        rows: &[usize],
    ) -> (
        Tensor<(usize, Const<P>), E, D>,
        Tensor<(usize, Const<CLASSES>), E, D>,
    ) {
        let mut x = Vec::with_capacity(rows.len() * P);
        let mut y = vec![E::of_f64(0.0); rows.len() * CLASSES];
        for (i, &r) in rows.iter().enumerate() {
            x.extend(
                self.pixels[r * P..(r + 1) * P]
                    .iter()
                    .map(|p| E::of_f64(f64::from(*p))),
            );
            y[i * CLASSES + self.labels[r]] = E::of_f64(1.0);
        }
        (
            dev.tensor_from_vec(x, (rows.len(), Const)),
            dev.tensor_from_vec(y, (rows.len(), Const)),
        )
    }

    /// Every row, in order.
    #[allow(clippy::type_complexity)]
    pub fn all<E: perforated::Float, D: Device<E>>(
        &self,
        dev: &D,
    ) -> (
        Tensor<(usize, Const<P>), E, D>,
        Tensor<(usize, Const<CLASSES>), E, D>,
    ) {
        self.tensors(dev, &(0..self.len()).collect::<Vec<_>>())
    }

    /// Fraction of rows whose largest logit is the label.
    pub fn accuracy<E: perforated::Float, D: Device<E>>(
        &self,
        logits: &Tensor<(usize, Const<CLASSES>), E, D>,
    ) -> f64 {
        let v = logits.as_vec();
        let correct = self
            .labels
            .iter()
            .enumerate()
            .filter(|(i, label)| {
                let row = &v[i * CLASSES..(i + 1) * CLASSES];
                let best = (0..CLASSES)
                    .max_by(|a, b| {
                        row[*a]
                            .partial_cmp(&row[*b])
                            .unwrap_or(std::cmp::Ordering::Equal)
                    })
                    .unwrap_or(0);
                best == **label
            })
            .count();
        correct as f64 / self.len().max(1) as f64
    }
}
