"""Options that several commands share: which dataset to read, and how.

Kept thin and free of TensorFlow at import time (the CLI quiets TensorFlow before importing it); the work is
done by `nin_keras.data.load_dataset`.
"""

from __future__ import annotations

import argparse
import math
import re

from nin_keras.checks import (MAX_BATCH_SIZE, MAX_COUNT, MAX_EPOCHS, MAX_SEED, MAX_THREADS, MAX_WIDTH_MULTIPLIER,
                              describe_range, in_range)
from nin_keras.cli import CLIError

# Python argument -> the flag that sets it. Library messages name arguments ("pass overwrite=True",
# "epochs=3"); `as_flags` rewrites them for the command line ("pass --overwrite", "--epochs 3").
FLAGS = {
    "allow_changed_data": "--resume-changed-data",
    "batch_size": "--batch-size", "data": "--dataset", "data_dir": "--data-dir", "dropout": "--dropout",
    "epochs": "--epochs", "float_layers": "--qat-float-layers", "label_smoothing": "--label-smoothing",
    "learning_rate": "--lr", "momentum": "--momentum", "name": "--name", "on_bad_image": "--on-bad-image",
    "optimizer": "--optimizer", "out_dir": "--out", "overwrite": "--overwrite", "precision": "--precision",
    "qat_epochs": "--qat-epochs", "qat_float_layers": "--qat-float-layers",
    "int8_float_layers": "--int8-float-layers", "recipe": "--recipe",
    "resume": "--resume", "schedule": "--schedule", "seed": "--seed", "steps_per_epoch": "--steps-per-epoch",
    "strategy": "--strategy", "targets": "--targets", "validation_split": "--validation-split", "variant": "--variant",
    "warmup_epochs": "--warmup-epochs", "weight_decay": "--weight-decay", "width_multiplier": "--width",
}
# Arguments whose False the CLI spells as a flag of its own.
FALSE_FLAGS = {"augment": "--no-augment", "batch_norm": "--no-batch-norm", "tensorboard": "--no-tensorboard",
               "verify": "--no-verify"}
QUOTES = "'\""
_ARGUMENT = re.compile(r"(?<![\w.])(?P<name>[a-z][a-z0-9_]*)=(?P<value>'[^']*'|\"[^\"]*\"|\[[^\]]*\]|[\w.+-]*)")

# Used for `--dataset synthetic` when neither a model nor a variant says otherwise (the CIFAR preset).
_DEFAULT_SYNTHETIC_SHAPE = (32, 32, 3)
_DEFAULT_SYNTHETIC_CLASSES = 10


def _number(text: str, kind, *, low: float, low_inclusive: bool, high: float | None = None,
            high_inclusive: bool = True):
    """Parses `text` as `kind` (int or float) within the bounds; argparse reports the message.

    argparse puts the option's name in front ("argument --epochs: must be ..."); the bounds are worded by
    `nin_keras.checks`, as the library's own argument checks word them.
    """
    description = describe_range("a whole number" if kind is int else "a number", low, high,
                                 min_inclusive=low_inclusive, max_inclusive=high_inclusive)
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}") from None
    if not math.isfinite(value) or not in_range(value, low, high, min_inclusive=low_inclusive,
                                                max_inclusive=high_inclusive):
        raise argparse.ArgumentTypeError(f"must be {description}, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a count, an integer in 1..MAX_COUNT."""
    return _number(text, int, low=1, low_inclusive=True, high=MAX_COUNT)


def non_negative_int(text: str) -> int:
    """argparse type: a count that may be zero, an integer in 0..MAX_COUNT."""
    return _number(text, int, low=0, low_inclusive=True, high=MAX_COUNT)


def epoch_count(text: str) -> int:
    """argparse type: epochs of a run, 1..MAX_EPOCHS."""
    return _number(text, int, low=1, low_inclusive=True, high=MAX_EPOCHS)


def non_negative_epoch_count(text: str) -> int:
    """argparse type: epochs that may be zero (e.g. QAT epochs), 0..MAX_EPOCHS."""
    return _number(text, int, low=0, low_inclusive=True, high=MAX_EPOCHS)


def batch_size_count(text: str) -> int:
    """argparse type: a batch size, 1..MAX_BATCH_SIZE."""
    return _number(text, int, low=1, low_inclusive=True, high=MAX_BATCH_SIZE)


def thread_count(text: str) -> int:
    """argparse type: a thread count, 1..MAX_THREADS."""
    return _number(text, int, low=1, low_inclusive=True, high=MAX_THREADS)


def seed_value(text: str) -> int:
    """argparse type: a random seed, 0..MAX_SEED (NumPy's range)."""
    return _number(text, int, low=0, low_inclusive=True, high=MAX_SEED)


def width_multiplier(text: str) -> float:
    """argparse type: a width multiplier, > 0 and <= MAX_WIDTH_MULTIPLIER (build_nin checks the memory)."""
    return _number(text, float, low=0, low_inclusive=False, high=MAX_WIDTH_MULTIPLIER)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(text, float, low=0, low_inclusive=False)


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _number(text, float, low=0, low_inclusive=True)


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1)."""
    return _number(text, float, low=0, low_inclusive=True, high=1, high_inclusive=False)


def add_data_arguments(parser, *, required: bool = True) -> None:
    """Adds --dataset, --data-dir, --batch-size, --seed and --on-bad-image to `parser`."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset", metavar="NAME", required=required, default=None,
        help="cifar10, cifar100, mnist, fashion_mnist, svhn_cropped, digits (offline), folder:PATH, "
             "or synthetic (random images, for smoke tests and benchmarks)",
    )
    group.add_argument(
        "--data-dir", metavar="DIR", default=None,
        help="read the dataset's original files from DIR (no network): mnist.npz or the four IDX .gz files, "
             "cifar-10-batches-py/ or cifar-10-python.tar.gz, cifar-100-python/ or cifar-100-python.tar.gz",
    )
    group.add_argument("--batch-size", metavar="N", type=batch_size_count, default=128,
                       help="batch size (default 128)")
    group.add_argument("--seed", metavar="N", type=seed_value, default=0,
                       help="seed of the validation split, shuffling and augmentation (default 0)")
    group.add_argument(
        "--on-bad-image", choices=("fail", "skip"), default="fail",
        help="folder datasets: stop at an unreadable image (fail, default) or skip it with a warning",
    )


def _synthetic_spec(args, model):
    """(input_shape, num_classes) for `--dataset synthetic`: from the model, else --variant, else CIFAR."""
    if model is not None:
        from nin_keras.models import check_image_classifier

        return check_image_classifier(model)
    num_classes = getattr(args, "num_classes", None) or _DEFAULT_SYNTHETIC_CLASSES
    variant = getattr(args, "variant", None)
    if variant:
        from nin_keras.models.presets import get_preset

        return tuple(get_preset(variant).input_shape), int(num_classes)
    return _DEFAULT_SYNTHETIC_SHAPE, int(num_classes)


def load_data_from_args(args, *, model=None, augment: bool = False, validation_split: float = 0.1):
    """Loads the dataset the parsed `args` name (see `add_data_arguments`). Returns a `DatasetSplits`."""
    from nin_keras.data import load_dataset

    name = getattr(args, "dataset", None)
    if not name:
        raise CLIError("No dataset given: pass --dataset NAME (e.g. --dataset digits).")
    kwargs = {}
    if name == "synthetic":
        input_shape, num_classes = _synthetic_spec(args, model)
        kwargs.update(input_shape=input_shape, num_classes=num_classes)
    if name.startswith("folder:"):
        kwargs["on_bad_image"] = getattr(args, "on_bad_image", "fail")
    return load_dataset(
        name,
        data_dir=getattr(args, "data_dir", None),
        batch_size=getattr(args, "batch_size", 128),
        validation_split=validation_split,
        augment=augment,
        seed=getattr(args, "seed", 0),
        **kwargs,
    )


def as_flags(message: str) -> str:
    """`message` with each `argument=value` that a flag sets written as that flag ("--epochs 3", "--overwrite").

    True becomes the flag alone, False the flag in FALSE_FLAGS, and `argument=` without a value the flag;
    strings lose their quotes and lists become comma-separated. Arguments without a flag are left as written.
    """
    def rewrite(match) -> str:
        name, raw = match.group("name"), match.group("value")
        value = raw.rstrip(".")  # a sentence's full stop is not part of the value
        if value == "False" and name in FALSE_FLAGS:
            written = FALSE_FLAGS[name]
        elif name not in FLAGS or value in ("False", "None"):
            return match.group(0)
        elif value in ("", "True"):
            written = FLAGS[name]
        elif value.startswith("["):
            written = f"{FLAGS[name]} " + ",".join(item.strip(" '\"") for item in value[1:-1].split(","))
        else:
            written = f"{FLAGS[name]} {value.strip(QUOTES)}"
        return written + raw[len(value):]

    return _ARGUMENT.sub(rewrite, message)
