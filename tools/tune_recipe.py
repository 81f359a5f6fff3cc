#!/usr/bin/env python
"""Recipe search on validation accuracy: `nin_keras.train` with the default recipe and a few overrides.

Every configuration trains on the training split minus a seeded validation hold-out and is judged on that
hold-out only: the tool never evaluates the test split, so no choice it informs can be tuned on test data.

    .venv/bin/python tools/tune_recipe.py --variant cifar --pad-to 32 --train-images 18048 --epochs 2 \\
        --try defaults --try learning_rate=0.001 --try learning_rate=0.006 --try dropout=0.5 \\
        --out docs/benchmarks/recipe_tuning_cifar.md
    .venv/bin/python tools/tune_recipe.py ... --seeds 0,1 --resume   # a second seed of each, keeping the first
    .venv/bin/python tools/tune_recipe.py ... --resume   # keep the configurations already in the JSON

`--try` takes `defaults` or comma-separated `key=value` overrides of the default recipe (learning_rate, used as
given at any batch size, weight_decay, label_smoothing) or of `nin_keras.train` (warmup_epochs, dropout).
`--pad-to 32` zero-pads smaller images to 32x32, the size the cifar variant was designed for, so its pooling
sees the geometry it has on CIFAR.
`--train-images N` draws N training images per epoch (whole batches) from the training split, a shorter
budget than a full epoch where one configuration would otherwise take hours on a CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from _bench import ROOT, add_report_arguments, header_lines, log, run

# After _bench, which puts the checkout on sys.path:
from nin_keras.choices import VARIANT_NAMES
from nin_keras._atomic import write_json
from nin_keras.cli.options import positive_int, seed_value

TOOL = "tools/tune_recipe.py"
OVERRIDES = {"learning_rate": float, "weight_decay": float, "label_smoothing": float, "warmup_epochs": float,
             "dropout": float}
RECIPE_FIELDS = ("learning_rate", "weight_decay", "label_smoothing")  # the rest are train()'s own keywords


def parse_try(text: str) -> dict:
    """`defaults` -> {}; `learning_rate=0.001,dropout=0.5` -> {"learning_rate": 0.001, "dropout": 0.5}."""
    if text.strip() == "defaults":
        return {}
    overrides = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in OVERRIDES or not value:
            raise argparse.ArgumentTypeError(f"--try {text!r}: give 'defaults' or key=value pairs with keys "
                                             f"{', '.join(OVERRIDES)}")
        overrides[key] = OVERRIDES[key](value)
    return overrides


def _seeds(text: str) -> list[int]:
    return [seed_value(seed) for seed in text.split(",")]


def config_name(overrides: dict) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in overrides.items()) or "defaults"


def padded(data, side: int):
    """`data` with every split's images zero-padded (centred) to side x side."""
    import tensorflow as tf  # lazy: the tool's --help and --render need no TensorFlow

    height, width, channels = data.input_shape
    if height > side or width > side:
        raise SystemExit(f"--pad-to {side} is smaller than the images ({height}x{width}).")

    def pad(split):
        if split is None:
            return None
        return split.map(lambda x, y: (tf.image.resize_with_crop_or_pad(x, side, side), y))

    return dataclasses.replace(data, train=pad(data.train), validation=pad(data.validation), test=pad(data.test),
                               input_shape=(side, side, channels))


def train_one(args, overrides: dict, seed: int, work_dir: Path) -> dict:
    """One configuration and seed: a fresh model trained with `nin_keras.train`; validation accuracy per epoch.

    The seed sets the initial weights; the data (hold-out, order of the training images) is seed 0's for
    every run, so that seeds measure how much the result owes to the initialisation alone.
    """
    import keras  # lazy: as above

    import nin_keras
    from nin_keras.training.recipes import DEFAULT_RECIPE, override

    keras.backend.clear_session()
    # The pipeline's shuffling takes TensorFlow's global seed as well as its own: set it to 0 before loading,
    # or every run after the first would inherit the previous run's seed and see another order. Loaded anew
    # for every run, as a reused pipeline would go on from its shuffling state.
    keras.utils.set_random_seed(0)
    data = nin_keras.load_dataset(args.dataset, data_dir=args.data_dir, seed=0)
    if args.pad_to:
        data = padded(data, args.pad_to)
    if args.train_images:
        data = data.take(train=args.train_images)
    keras.utils.set_random_seed(seed)  # the initial weights
    model = nin_keras.build_nin(data.num_classes, variant=args.variant, input_shape=tuple(data.input_shape))
    recipe = override(DEFAULT_RECIPE, **{k: v for k, v in overrides.items() if k in RECIPE_FIELDS})
    run_options = {k: v for k, v in overrides.items() if k not in RECIPE_FIELDS}
    start = time.perf_counter()
    result = nin_keras.train(model, data, epochs=args.epochs, seed=seed, evaluate_test=False, verbose=2,
                             out_dir=work_dir / f"{config_name(overrides).replace(', ', '_')}-s{seed}",
                             overwrite=True, tensorboard=False, recipe=recipe, **run_options)
    config = json.loads((result.run_dir / "config.json").read_text(encoding="utf-8"))
    return {"overrides": overrides, "seed": seed, "name": config_name(overrides),
            "recipe": config["recipe"]["summary"],
            "val_accuracy": [float(v) for v in result.history["val_accuracy"]],
            "minutes": round((time.perf_counter() - start) / 60, 1)}


def measure(args) -> dict:
    json_path = Path(args.json_path or Path(args.out).with_suffix(".json"))
    done = []
    if args.resume and json_path.exists():
        done = json.loads(json_path.read_text(encoding="utf-8"))["configurations"]
    work_dir = Path(args.work_dir or ROOT / "runs" / "tune_recipe")
    for seed in args.seeds:
        for overrides in args.tries:
            what = f"{config_name(overrides)}, seed {seed}"
            if any(run_["overrides"] == overrides and run_.get("seed", 0) == seed for run_ in done):
                log(f"{what}: kept from {json_path}")
                continue
            log(f"{what}: training")
            done.append(train_one(args, overrides, seed, work_dir))
            log(f"{what}: validation accuracy {done[-1]['val_accuracy']}")
            write_json(json_path, {"configurations": done})  # after each run: an interruption keeps it
    return {"configurations": done}


def render(results: dict) -> str:
    settings = results["settings"]
    lines = header_lines(f"Recipe search on validation accuracy: {settings['variant']} variant", results)
    size = f", zero-padded to {settings['pad_to']}x{settings['pad_to']}" if settings.get("pad_to") else ""
    images = f"{settings['train_images']} training images per epoch" if settings.get("train_images") else \
        "full epochs"
    lines += [f"- Data: {settings['dataset']}{size}; {images}, {settings['epochs']} epochs; judged on the "
              "validation hold-out (10% of the training files, seed 0), never on the test split.", "",
              "| configuration | seed | recipe as run | validation accuracy by epoch | minutes |",
              "|---|---:|---|---|---:|"]
    runs = results["configurations"]
    for config in sorted(runs, key=lambda c: (c["name"] != "defaults", c["name"], c.get("seed", 0))):
        accuracies = " / ".join(f"{a:.2%}" for a in config["val_accuracy"])
        lines.append(f"| {config['name']} | {config.get('seed', 0)} | {config['recipe']} | {accuracies} | "
                     f"{config['minutes']} |")
    lines += ["", "Final validation accuracy, mean over the seeds run:", "",
              "| configuration | seeds | mean |", "|---|---:|---:|"]
    finals = {}
    for config in runs:
        finals.setdefault(config["name"], []).append(config["val_accuracy"][-1])
    for name, values in sorted(finals.items(), key=lambda item: -sum(item[1]) / len(item[1])):
        lines.append(f"| {name} | {len(values)} | {sum(values) / len(values):.2%} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist", help="dataset name (default fashion_mnist)")
    parser.add_argument("--data-dir", default=None, help="folder with the dataset's original files")
    parser.add_argument("--variant", choices=VARIANT_NAMES, default="cifar", help="NIN variant (default cifar)")
    parser.add_argument("--pad-to", type=positive_int, default=None, help="zero-pad images to this square side")
    parser.add_argument("--train-images", type=positive_int, default=None,
                        help="training images per epoch (default: the whole training split)")
    parser.add_argument("--epochs", type=positive_int, default=2, help="epochs per configuration (default 2)")
    parser.add_argument("--seeds", type=_seeds, default=[0], help="comma-separated seeds of the initial weights "
                        "(default 0); every seed runs every configuration")
    parser.add_argument("--try", dest="tries", type=parse_try, action="append", required=False,
                        help="'defaults' or key=value overrides; repeat for each configuration")
    parser.add_argument("--resume", action="store_true", help="keep the configurations already in the JSON")
    parser.add_argument("--work-dir", default=None, help="run folders (default runs/tune_recipe)")
    add_report_arguments(parser, ROOT / "docs" / "benchmarks" / "recipe_tuning_cifar.md")
    args = parser.parse_args(argv)
    if not args.render and not args.tries:
        parser.error("give at least one --try")
    run(TOOL, args, argv, measure, render)


if __name__ == "__main__":
    main()
