"""A REST client for a NIN served by TF Serving (see serve_with_tf_serving.md): images from disk -> classes.

    python examples/client.py digit.png other.jpg --url http://localhost:8501 --model-name nin \
        --labels export/nin_digits/labels.txt

It asks the server for the model's signature (GET /v1/models/NAME/metadata) to learn the input name and
image size (or take --input-shape H,W,C), reads and resizes the images to raw pixels (0..255, float32: the
export's `serving_default` takes raw pixels, the scaling is inside the model), and POSTs them to
/v1/models/NAME:predict as {"signature_name": "serving_default", "instances": [...]}. The answer holds, per
image, `probabilities` and `class_id` (the export's two outputs).

Only the standard library, numpy and Pillow: no TensorFlow, no nin-keras.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

SIGNATURE = "serving_default"


def _request(url: str, payload=None, *, timeout: float):
    data = None if payload is None else json.dumps(payload).encode("utf-8")
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace")
        raise SystemExit(f"client.py: {url} answered HTTP {error.code}: {detail}") from None
    except urllib.error.URLError as error:
        raise SystemExit(f"client.py: cannot reach {url}: {error.reason} (is TF Serving running?)") from None


def signature_input(base: str, model_name: str, *, timeout: float):
    """(input name, (height, width, channels)) from TF Serving's model metadata."""
    metadata = _request(f"{base}/v1/models/{model_name}/metadata", timeout=timeout)
    signature = metadata["metadata"]["signature_def"]["signature_def"][SIGNATURE]
    (name, spec), = signature["inputs"].items()
    dims = [int(d["size"]) for d in spec["tensor_shape"]["dim"]]
    return name, tuple(dims[1:])


def load_image(path, height: int, width: int, channels: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.float32).reshape(height, width, channels)


def predict(base: str, model_name: str, input_name: str, images: np.ndarray, *, timeout: float) -> list[dict]:
    """POSTs `images` (raw pixels) to :predict; returns one {"probabilities": [...], "class_id": n} per image."""
    instances = [{input_name: image.tolist()} for image in images]
    answer = _request(f"{base}/v1/models/{model_name}:predict",
                      {"signature_name": SIGNATURE, "instances": instances}, timeout=timeout)
    predictions = answer["predictions"]
    results = []
    for prediction in predictions:
        if not isinstance(prediction, dict):  # a signature with one output answers plain rows
            prediction = {"probabilities": prediction}
        probabilities = np.asarray(prediction["probabilities"], dtype=np.float32)
        class_id = int(np.asarray(prediction.get("class_id", probabilities.argmax())).reshape(-1)[0])
        results.append({"probabilities": probabilities, "class_id": class_id})
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--url", default="http://localhost:8501", help="TF Serving's REST address")
    parser.add_argument("--model-name", default="nin", help="the MODEL_NAME the server was started with")
    parser.add_argument("--input-shape", help="H,W,C of the model input (default: asked from the server)")
    parser.add_argument("--input-name", default="image", help="input key, with --input-shape (default: image)")
    parser.add_argument("--labels", help="labels.txt from the export (one class name a line)")
    parser.add_argument("--top", type=int, default=3, help="classes to print per image (default 3)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    args = parser.parse_args(argv)

    base = args.url.rstrip("/")
    if args.input_shape:
        input_name, shape = args.input_name, tuple(int(v) for v in args.input_shape.split(","))
    else:
        input_name, shape = signature_input(base, args.model_name, timeout=args.timeout)
    images = np.stack([load_image(path, *shape) for path in args.images])
    labels = Path(args.labels).read_text(encoding="utf-8").split("\n") if args.labels else None

    for path, result in zip(args.images, predict(base, args.model_name, input_name, images, timeout=args.timeout)):
        probabilities = result["probabilities"]
        order = np.argsort(probabilities)[::-1][: args.top]
        name = lambda i: labels[i] if labels and i < len(labels) else str(i)  # noqa: E731
        ranked = ", ".join(f"{name(i)} {probabilities[i]:.3f}" for i in order)
        print(f"{path}: class {name(result['class_id'])} ({ranked})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
