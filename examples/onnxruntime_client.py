"""Classify images with an exported model.onnx on onnxruntime: what a GPU server (Triton, onnxruntime-gpu,
TensorRT) or any ONNX runtime does with it.

The model takes raw pixels (0..255) as float32 in an input named `image` (N, H, W, C) and gives
`probabilities` (N, classes); labels.txt beside it names the classes. Needs numpy, Pillow and onnxruntime
(`pip install onnxruntime pillow`; onnxruntime-gpu for CUDA), not TensorFlow or nin-keras.

    python examples/onnxruntime_client.py export/nin_cifar/model.onnx cat.png dog.jpg --top 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def classify(model_path, images: np.ndarray, *, providers=("CPUExecutionProvider",)) -> np.ndarray:
    """Probabilities (N, classes) for raw-pixel images (N, H, W, C)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model_path), providers=list(providers))
    return session.run(["probabilities"], {"image": np.asarray(images, dtype=np.float32)})[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model.onnx written by nin-keras export --targets onnx")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--labels", help="labels.txt (default: the one beside the model)")
    parser.add_argument("--top", type=int, default=3, help="classes shown per image (default 3)")
    args = parser.parse_args(argv)
    import onnxruntime
    from PIL import Image

    model = Path(args.model)
    if not model.is_file():
        sys.stderr.write(f"onnxruntime_client: error: no model at {model}\n")
        return 2
    _, height, width, channels = onnxruntime.InferenceSession(
        str(model), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    labels_file = Path(args.labels) if args.labels else model.with_name("labels.txt")
    labels = labels_file.read_text(encoding="utf-8").split("\n") if labels_file.is_file() else None
    mode = "L" if channels == 1 else "RGB"
    images = np.stack([np.asarray(Image.open(path).convert(mode).resize((width, height), Image.Resampling.BILINEAR),
                                  dtype=np.float32).reshape(height, width, channels) for path in args.images])
    for path, scores in zip(args.images, classify(model, images)):
        top = np.argsort(scores)[::-1][:args.top]
        print(f"{path}: " + ", ".join(f"{labels[i] if labels else i} {scores[i]:.3f}" for i in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
