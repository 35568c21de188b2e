//! Fashion-MNIST from IDX files: the split shipped in `data/fashion-mnist/` (12,000 train /
//! 3,000 validation / 3,000 test), or the official files in a folder of the user's
//! (`train-*` and `t10k-*`; the last 10% of the training images then validate).

use std::path::{Path, PathBuf};

use perforated::idx;

use super::digits::{Dataset, Split, CLASSES};

/// Pixels of a 28x28 image.
pub const PIXELS: usize = 28 * 28;

/// Images and labels of one split, checked against each other.
fn split(dir: &Path, name: &str) -> Result<Split<PIXELS>, String> {
    let read = |kind: &str| {
        let path = dir.join(format!("{name}-{kind}-ubyte.gz"));
        let path = if path.exists() {
            path
        } else {
            dir.join(format!("{name}-{kind}-ubyte"))
        };
        idx::read(&path).map_err(|e| e.to_string())
    };
    let images = read("images-idx3")?;
    let labels = read("labels-idx1")?;
    if images.dims.len() != 3 || images.item_len() != PIXELS {
        return Err(format!(
            "{name} images are {:?}, expected [n, 28, 28]",
            images.dims
        ));
    }
    if labels.dims != [images.len()] {
        return Err(format!(
            "{name}: {} images but labels {:?}",
            images.len(),
            labels.dims
        ));
    }
    if let Some(bad) = labels.data.iter().find(|l| usize::from(**l) >= CLASSES) {
        return Err(format!("{name} labels: {bad} is not a class 0..9"));
    }
    Ok(Split {
        pixels: images.data.iter().map(|p| f32::from(*p) / 255.0).collect(),
        labels: labels.data.iter().map(|l| usize::from(*l)).collect(),
    })
}

/// The data in `dir` (the shipped split when `None`).
pub fn load(dir: Option<&Path>) -> Result<Dataset<PIXELS>, String> {
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist");
    let dir = dir.unwrap_or(&shipped);
    if dir.join("val-labels-idx1-ubyte.gz").exists() || dir.join("val-labels-idx1-ubyte").exists() {
        return Ok(Dataset {
            train: split(dir, "train")?,
            val: split(dir, "val")?,
            test: split(dir, "test")?,
        });
    }
    // the official layout: train and t10k
    let mut train = split(dir, "train")?;
    let test = split(dir, "t10k")?;
    let keep = train.labels.len() - train.labels.len() / 10;
    let val = Split {
        pixels: train.pixels.split_off(keep * PIXELS),
        labels: train.labels.split_off(keep),
    };
    Ok(Dataset { train, val, test })
}
