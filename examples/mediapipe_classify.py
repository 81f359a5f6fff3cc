"""Classify images with MediaPipe Tasks' ImageClassifier: the route Android, iOS and web apps take.

MediaPipe reads the metadata nin-keras packs into every .tflite (input normalization, class names), so the
exported file is used as it is. It takes 3- or 4-channel images with float32 or uint8 input: use
model_float32 / model_float16 / model_dynamic.tflite (float input) or model_edgetpu_ready.tflite (uint8 input)
of an RGB model. Grayscale models and model_int8.tflite (int8 input) are for LiteRT directly
(examples/litert_inference.py).

MediaPipe cannot share a Python environment with TensorFlow + tfmot (it needs a newer absl-py), so run this
from its own venv:

    python -m venv .venv-mediapipe && .venv-mediapipe/bin/pip install mediapipe
    .venv-mediapipe/bin/python examples/mediapipe_classify.py export/nin_cifar/model_float16.tflite cat.png

Prints one line per image: the top classes with their scores. `--npy images.npy --json out.json` classifies
an array of raw pixels (N, H, W, 3) instead and writes the results as JSON (the test suite uses it).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def classify(model_path, images, *, top: int = 3) -> list[list[dict]]:
    """Top classes of each image (uint8 array H x W x 3), as MediaPipe reports them."""
    import mediapipe as mp
    from mediapipe.tasks import python as tasks
    from mediapipe.tasks.python import vision

    options = vision.ImageClassifierOptions(base_options=tasks.BaseOptions(model_asset_path=str(model_path)),
                                            max_results=top)
    results = []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for image in images:
            pixels = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
            found = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels))
            results.append([{"index": c.index, "score": float(c.score), "name": c.category_name}
                            for c in found.classifications[0].categories])
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a .tflite with metadata, written by nin-keras export")
    parser.add_argument("images", nargs="*", help="image files (PNG, JPEG)")
    parser.add_argument("--npy", help="raw pixels (N, H, W, 3) to classify instead of image files")
    parser.add_argument("--json", help="write the results here as JSON")
    parser.add_argument("--top", type=int, default=3, help="classes shown per image (default 3)")
    args = parser.parse_args(argv)
    if args.npy:
        images, names = np.load(args.npy), None
    elif args.images:
        from PIL import Image

        images = [np.asarray(Image.open(path).convert("RGB")) for path in args.images]
        names = args.images
    else:
        parser.error("give image files or --npy")
    try:
        results = classify(args.model, images, top=args.top)
    except (RuntimeError, ValueError) as error:  # MediaPipe's refusals: wrong input type, missing metadata
        sys.stderr.write(f"mediapipe_classify: error: {' '.join(str(error).split())}\n")
        return 2
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle)
    for i, found in enumerate(results):
        label = names[i] if names else f"image {i}"
        print(f"{label}: " + ", ".join(f"{c['name'] or c['index']} {c['score']:.3f}" for c in found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
