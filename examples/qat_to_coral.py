"""From a Keras NIN to a Coral Edge TPU: train (or load) -> QAT -> Edge-TPU-ready int8 model -> check -> compile.

    # train a small NIN on the bundled digits set, fine-tune it with QAT, export, check:
    python examples/qat_to_coral.py --out export/coral_digits
    # or start from your own trained model and dataset:
    python examples/qat_to_coral.py --model runs/cifar/model.keras --dataset cifar10 --qat-epochs 2

What it writes into --out: model.keras, model_int8.tflite (int8 I/O, dynamic batch, for CPUs),
model_edgetpu_ready.tflite (uint8 I/O, static batch 1: what the Edge TPU compiler wants), labels.txt,
edgetpu_check.json, report.json/report.md (accuracy of each artifact against the float model).

Why QAT: tfmot's quantization-aware training (run on a tf_keras twin of the Keras 3 model, weights copied, BN
folded) lets the weights adapt to 8-bit arithmetic, so the int8 model keeps the float model's accuracy more
closely than post-training quantization (`--qat-epochs 0` gives PTQ, for comparison).

Then, on an x86-64 Debian/Ubuntu machine (the compiler exists only there, from Coral's apt repository):

    curl https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add -
    echo "deb https://packages.cloud.google.com/apt coral-edgetpu-stable main" | \
        sudo tee /etc/apt/sources.list.d/coral-edgetpu.list
    sudo apt-get update && sudo apt-get install edgetpu-compiler
    edgetpu_compiler -s -o export/coral_digits export/coral_digits/model_edgetpu_ready.tflite
    # -> model_edgetpu_ready_edgetpu.tflite and a log; "Operations successfully mapped to Edge TPU" should list
    #    every op (nin_keras.export runs the compiler itself when it is on PATH and keeps the log)

And on the device (Coral USB Accelerator / Dev Board, with the Edge TPU runtime libedgetpu and pycoral):

    from PIL import Image
    from pycoral.adapters import classify, common
    from pycoral.utils.edgetpu import make_interpreter

    interpreter = make_interpreter("model_edgetpu_ready_edgetpu.tflite")
    interpreter.allocate_tensors()
    width, height = common.input_size(interpreter)
    image = Image.open("digit.png").convert("L").resize((width, height))   # "RGB" for 3-channel models
    common.set_input(interpreter, image)          # raw 0..255 pixels: uint8 input, no scaling needed
    interpreter.invoke()
    for c in classify.get_classes(interpreter, top_k=3):
        print(c.id, c.score)                      # scores dequantized by pycoral

(Without a Coral device, `examples/litert_inference.py` runs model_edgetpu_ready.tflite on the CPU.)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a trained .keras model (default: train a new one on --dataset)")
    parser.add_argument("--dataset", default="digits",
                        help="dataset for training, QAT, calibration and evaluation (default: digits, offline)")
    parser.add_argument("--data-dir", help="read the dataset's files from here (no network)")
    parser.add_argument("--variant", default="mnist", help="NIN variant when training (default: mnist)")
    parser.add_argument("--width", type=float, default=0.5, help="width multiplier when training (default 0.5)")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs when training (default 20)")
    parser.add_argument("--qat-epochs", type=int, default=2, help="QAT epochs; 0 = post-training quantization")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="export/coral", help="export folder (default: export/coral)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny synthetic run (8x8x1 random images, 1 epoch) to check the script works")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import nin_keras
    from nin_keras.exporting import format_findings
    from nin_keras.training import RECIPES

    out = Path(args.out)
    if args.smoke:
        data = nin_keras.load_dataset("synthetic", input_shape=(8, 8, 1), num_classes=4, size=64, batch_size=16)
        args.width, args.epochs, args.qat_epochs = 0.125, 1, 1
    else:
        data = nin_keras.load_dataset(args.dataset, data_dir=args.data_dir, batch_size=args.batch_size)

    # 1. A trained float model: loaded, or trained here.
    if args.model:
        model = nin_keras.load_model(args.model)
    else:
        model = nin_keras.build_nin(data.num_classes, variant=args.variant, input_shape=tuple(data.input_shape),
                                    width_multiplier=args.width, name=f"nin_{args.dataset}")
        adam = dataclasses.replace(RECIPES["adam"], learning_rate=3e-3)
        result = nin_keras.train(model, data, epochs=args.epochs, recipe=adam,
                                 out_dir=out.parent / f"{out.name}_training", overwrite=True)
        model = nin_keras.load_model(Path(result.run_dir) / "model.keras")

    # 2-3. QAT (or PTQ), then the integer targets, each evaluated against the float model.
    exported = nin_keras.export(model, out, targets=["keras", "tflite_int8", "edgetpu"], data=data,
                                qat_epochs=args.qat_epochs)

    # 4. The static Edge TPU check (op list and versions, 8-bit tensors, static shapes), read from the file.
    findings = nin_keras.check_edgetpu(out / "model_edgetpu_ready.tflite")
    print("\n".join(format_findings(findings)))
    for row in exported["report"] or []:
        print(f"{row['artifact']:<28} accuracy {row['accuracy']:.4f}  agreement with float "
              f"{row['agreement'] if row['agreement'] is None else format(row['agreement'], '.4f')}")
    print(f"\nNext: edgetpu_compiler -s -o {out} {out / 'model_edgetpu_ready.tflite'}  "
          "(see this file's docstring for installing it and running the result with pycoral)")
    return 0 if findings["compatible"] else 1


if __name__ == "__main__":
    sys.exit(main())
