//! The Fashion-MNIST split shipped in `data/fashion-mnist/` reads back as documented in its
//! SOURCE.md: 12,000 / 3,000 / 3,000 28x28 images, 1,200 / 300 / 300 a class.

use perforated::idx;

fn read(name: &str) -> idx::Idx {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/fashion-mnist")
        .join(name);
    idx::read(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_shipped_split_is_stratified_and_complete() {
    for (split, per_class) in [("train", 1200), ("val", 300), ("test", 300)] {
        let images = read(&format!("{split}-images-idx3-ubyte.gz"));
        let labels = read(&format!("{split}-labels-idx1-ubyte.gz"));
        assert_eq!(images.dims, [10 * per_class, 28, 28], "{split}");
        assert_eq!(labels.dims, [10 * per_class], "{split}");
        let mut counts = [0usize; 10];
        for l in &labels.data {
            counts[usize::from(*l)] += 1;
        }
        assert_eq!(counts, [per_class; 10], "{split}: images per class");
        // real images: mostly dark background, some bright pixels, not constant
        let bright = images.data.iter().filter(|p| **p > 200).count();
        assert!(
            bright > images.data.len() / 100,
            "{split}: {bright} bright pixels"
        );
    }
}
