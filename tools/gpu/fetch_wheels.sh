#!/usr/bin/env bash
# Fills .whl/ (git-ignored, at the repository root) with what tools/gpu/benchmark.sh installs on a GPU machine
# that has Python, PyTorch, JAX, numpy, h5py, rich, absl-py and ml-dtypes but no Keras and no package index:
# Keras and the packages it needs that such a machine lacks, as wheels for CPython 3.12 on x86-64 Linux
# (PYTHON_VERSION=3.11 fetches wheels for a local test instead). Also copies the four Fashion-MNIST IDX files
# into .whl/fashion-mnist/ from FASHION_MNIST_DIR, /usr/share/datasets/fashion-mnist or
# ~/.keras/datasets/fashion-mnist, if one holds them; nothing is downloaded for the data.
#
#   tools/gpu/fetch_wheels.sh            # then carry .whl/ with the working tree (it must stay under 64 MiB)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="${WHEEL_DIR:-$ROOT/.whl}"
PIP="${PIP:-python3 -m pip}"
PYTHON_VERSION="${PYTHON_VERSION:-3.12}"
# Pinned to the versions the test suite runs with. packaging and typing-extensions: keras' and optree's own needs.
PACKAGES=(keras==3.15.1 optree==0.20.0 namex==0.1.0 packaging==26.4 typing_extensions==4.16.0)

mkdir -p "$DEST"
# Pure-Python wheels (py3-none-any) match any platform, so the platform flags only pick optree's binary wheel.
$PIP download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" "${PACKAGES[@]}"

FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
for source in "${FASHION_MNIST_DIR:-}" /usr/share/datasets/fashion-mnist "$HOME/.keras/datasets/fashion-mnist"; do
    if [ -n "$source" ] && [ -f "$source/${FILES[0]}" ]; then
        mkdir -p "$DEST/fashion-mnist"
        for name in "${FILES[@]}"; do cp "$source/$name" "$DEST/fashion-mnist/"; done
        echo "Fashion-MNIST copied from $source"
        break
    fi
done
[ -d "$DEST/fashion-mnist" ] || echo "no Fashion-MNIST IDX files found: the time-to-accuracy run will be skipped"

size=$(du -sm "$DEST" | cut -f1)
echo "$DEST: $(ls "$DEST"/*.whl | wc -l) wheels, ${size} MiB in all"
if [ "$size" -ge 64 ]; then
    echo "error: $DEST is over the 64 MiB a run may carry" >&2
    exit 1
fi
