"""Run any exported .tflite on images from disk with LiteRT (ai_edge_litert): what a device-side script does.

Works for every file `nin_keras.export` writes: model_float32/float16/dynamic.tflite (float32 input, dynamic
batch), model_int8.tflite (int8 input and output) and model_edgetpu_ready.tflite (uint8, static batch 1).
Every model takes raw pixels (0..255): no mean/std to remember. For integer models the pixels are quantized
with the input tensor's own (scale, zero_point) and the scores dequantized with the output's.

This script needs only numpy, Pillow and ai-edge-litert (`pip install ai-edge-litert pillow`), not TensorFlow or
nin-keras, so it can be copied to a Raspberry Pi or a Coral board as is.

    python examples/litert_inference.py export/nin_digits/model_int8.tflite digit.png other.jpg \
        --labels export/nin_digits/labels.txt --top 3 --threads 2

Prints one line per image: the top classes with their probabilities.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def load_image(path, height: int, width: int, channels: int) -> np.ndarray:
    """An image file as raw pixels (height, width, channels), float32 0..255, converted and resized."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.float32).reshape(height, width, channels)


class LiteRTClassifier:
    """A .tflite image classifier: raw pixels in, float32 probabilities out, whatever the I/O types."""

    def __init__(self, model_path, *, num_threads: int = 2):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        # shape_signature holds -1 for a dynamic batch; a static batch-1 model (Edge TPU) says 1.
        self.static_batch = int(self.input["shape_signature"][0]) == 1
        _, self.height, self.width, self.channels = (int(v) for v in self.input["shape"])

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (n, classes) for raw-pixel images (n, height, width, channels)."""
        images = np.asarray(images, dtype=np.float32)
        if self.static_batch:
            return np.concatenate([self._run(image[None]) for image in images])
        self.interpreter.resize_tensor_input(self.input["index"], list(images.shape))
        self.interpreter.allocate_tensors()
        return self._run(images)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        scale, zero_point = self.input["quantization"]
        if np.issubdtype(dtype, np.integer) and scale:
            info = np.iinfo(dtype)
            batch = np.clip(np.round(batch / scale + zero_point), info.min, info.max)
        self.interpreter.set_tensor(self.input["index"], batch.astype(dtype))
        self.interpreter.invoke()
        scores = self.interpreter.get_tensor(self.output["index"]).astype(np.float32)
        out_scale, out_zero_point = self.output["quantization"]
        if np.issubdtype(self.output["dtype"], np.integer) and out_scale:
            scores = (scores - out_zero_point) * out_scale
        return scores


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="an exported .tflite file")
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--labels", help="labels.txt (one class name a line; default: labels.txt beside the model)")
    parser.add_argument("--top", type=int, default=3, help="classes to print per image (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for LiteRT (default 2)")
    args = parser.parse_args(argv)

    model_path = Path(args.model)
    if not model_path.is_file():
        parser.error(f"model file not found: {model_path}")
    classifier = LiteRTClassifier(model_path, num_threads=args.threads)
    labels_path = Path(args.labels) if args.labels else model_path.parent / "labels.txt"
    labels = labels_path.read_text(encoding="utf-8").split("\n") if labels_path.is_file() else None

    images = np.stack([load_image(p, classifier.height, classifier.width, classifier.channels) for p in args.images])
    probabilities = classifier.predict(images)
    io = f"{classifier.input['dtype'].__name__} in, {classifier.output['dtype'].__name__} out"
    print(f"{model_path.name} ({io}{', static batch 1' if classifier.static_batch else ''})")
    for path, probs in zip(args.images, probabilities):
        order = np.argsort(probs)[::-1][: args.top]
        names = [labels[i] if labels and i < len(labels) else str(i) for i in order]
        print(f"{path}: " + ", ".join(f"{name} {probs[i]:.3f}" for name, i in zip(names, order)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
