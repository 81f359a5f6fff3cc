"""A float16 .tflite for Android's LiteRT GPU delegate, with the converter's GPU-compatibility analysis.

    python examples/android_gpu_fp16.py --model runs/demo/train/model.keras --dataset digits --out export/android
    python examples/android_gpu_fp16.py --smoke --out /tmp/android     # tiny untrained model, to check the script

Writes model_float16.tflite (weights in float16, float32 input of raw pixels 0..255 and float32 output;
dynamic batch), gpu_compatibility.txt (TFLite's analysis: which ops the GPU delegate runs), labels.txt and,
with --dataset, report.md/report.json (the float16 model's accuracy and agreement with the Keras model, checked
on the CPU here).

Why float16: the GPU delegate computes in float16 anyway (unless told to keep float32 precision), so float16
weights halve the file and the upload to the GPU at no extra accuracy cost. NIN is a good fit: it is only
CONV_2D, MAX_POOL_2D / AVERAGE_POOL_2D, MEAN (global average pooling) and SOFTMAX, all GPU-delegate ops (the
float16 weights are expanded by DEQUANTIZE ops, which the delegate folds away at load time). Full-int8 models
are for CPUs (XNNPACK), Edge TPUs and NPUs, not the GPU delegate.

On Android (LiteRT, formerly TensorFlow Lite; Kotlin; dependencies
`com.google.ai.edge.litert:litert:<version>` and `com.google.ai.edge.litert:litert-gpu:<version>`, or the
Google Play services variant `play-services-tflite-gpu`):

    val model = FileUtil.loadMappedFile(context, "model_float16.tflite")
    val options = Interpreter.Options()
    val compatibility = CompatibilityList()
    if (compatibility.isDelegateSupportedOnThisDevice) {
        options.addDelegate(GpuDelegate(compatibility.bestOptionsForThisDevice))  // float16 math on the GPU
    } else {
        options.setNumThreads(4)                                                   // CPU fallback (XNNPACK)
    }
    val interpreter = Interpreter(model, options)
    // Input: [1, H, W, C] float32 raw pixels 0..255 (no normalisation: it is inside the model).
    val input = ByteBuffer.allocateDirect(4 * H * W * C).order(ByteOrder.nativeOrder())
    for (pixel in pixels) input.putFloat(pixel.toFloat())   // grayscale value, or R, G, B for 3 channels
    val output = Array(1) { FloatArray(numClasses) }
    interpreter.run(input, output)                          // output[0] = class probabilities (softmax)

Notes:
- Resize the input once (`interpreter.resizeInput(0, intArrayOf(1, H, W, C))`) before adding images of a
  fixed batch: the exported batch dimension is dynamic, and GPU delegates prefer static shapes.
- `GpuDelegateFactory.Options().setPrecisionLossAllowed(false)` keeps float32 math on the GPU if float16 ever
  costs accuracy (it does not for this NIN; check with report.md, which compares against the Keras model).
- MediaPipe's ImageClassifier wants uint8 input or NormalizationOptions metadata; for it, use
  model_edgetpu_ready.tflite / model_int8.tflite or add metadata (see the project's README).
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a trained .keras model")
    parser.add_argument("--dataset", help="evaluate the float16 model on this dataset (e.g. digits)")
    parser.add_argument("--data-dir", help="read the dataset's files from here (no network)")
    parser.add_argument("--out", default="export/android", help="export folder (default: export/android)")
    parser.add_argument("--smoke", action="store_true", help="tiny untrained 8x8x1 model, digits-shaped")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import nin_keras

    if args.smoke:
        model = nin_keras.build_nin(10, variant="mnist", input_shape=(8, 8, 1), width_multiplier=0.125,
                                    name="nin_smoke")
    elif args.model:
        model = nin_keras.load_model(args.model)
    else:
        raise SystemExit("android_gpu_fp16.py: pass --model MODEL.keras (or --smoke)")
    data = None
    if args.dataset:
        data = nin_keras.load_dataset(args.dataset, data_dir=args.data_dir)

    out = Path(args.out)
    exported = nin_keras.export(model, out, targets=["keras", "tflite_float16"], data=data)
    entry = exported["manifest"]["targets"]["tflite_float16"] if "targets" in exported["manifest"] else None
    path = out / "model_float16.tflite"
    print(f"{path}: {path.stat().st_size / 1024:.0f} KiB "
          f"(model.keras {(out / 'model.keras').stat().st_size / 1024:.0f} KiB)")
    compatibility = (entry or {}).get("gpu_compatibility") or {}
    if compatibility:
        print(f"GPU delegate: {compatibility.get('summary')}")
        for warning in compatibility.get("warnings") or []:
            print(f"  warning: {warning}")
    analysis = out / "gpu_compatibility.txt"
    if analysis.is_file():
        ops = collections.Counter(re.findall(r"Op#\d+ ([A-Z_0-9]+)\(", analysis.read_text(encoding="utf-8")))
        print(f"ops ({analysis.name} has the full analysis): "
              + ", ".join(f"{name} x{count}" for name, count in ops.items()))
    for row in exported["report"] or []:
        if row["target"] == "tflite_float16":
            print(f"float16 accuracy {row['accuracy']:.4f}, agreement with Keras {row['agreement']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
