#!/usr/bin/env python3
"""NIN training speed on one Keras 3 backend (JAX, PyTorch or TensorFlow), and time to accuracy on Fashion-MNIST.

Needs only keras, the backend and numpy: on jax and torch nothing imports TensorFlow, so it runs on a GPU
machine without it. Run from the repository root (nin_keras is imported from this checkout):

    python tools/benchmark_backends.py --backend jax --variant cifar --batch-size 512 --steps 50 \\
        --precision bfloat16 --json out.json
    python tools/benchmark_backends.py --backend jax --variant mnist --batch-size 256 --precision bfloat16 \\
        --data-dir fashion/ --epochs 10 --json tta.json

Speed: `--warmup-steps` untimed steps (compilation, allocation) then `--steps` timed ones on one synthetic batch
of the variant's input shape, SGD momentum 0.9 as nin_keras.training.benchmark_training; each step waits for
its loss, so a step's time is its whole device work. With `--data-dir` holding the four Fashion-MNIST IDX
files it trains the mnist variant on them instead with the budget recipe (optimizer, schedule, label
smoothing, dropout; no augmentation: that is tf.data's), evaluating the test set after each epoch, and reports
the training time (evaluations excluded) and wall time when test accuracy first reached 92% and 93%.

Peak memory: the device's (jax: memory_stats' peak_bytes_in_use, torch: max_memory_allocated, tensorflow:
get_memory_info's peak) on a GPU, else the process' peak resident set size. The last stdout line is
`train_images_per_s=<images per second>`; --json writes every figure.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("jax", "torch", "tensorflow")
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
TARGETS = (0.92, 0.93)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=BACKENDS, required=True)
    parser.add_argument("--variant", choices=("cifar", "mnist"), default="cifar")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30, help="timed steps (speed mode)")
    parser.add_argument("--warmup-steps", type=int, default=5, help="untimed steps first (speed mode)")
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="float32")
    parser.add_argument("--width", type=float, default=1.0, help="width multiplier (tests use a small one)")
    parser.add_argument("--data-dir", type=Path, default=None, help="Fashion-MNIST IDX files: time to accuracy")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the time-to-accuracy run")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N train and test images")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    for name in ("batch_size", "steps", "epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup_steps < 0:
        parser.error("--warmup-steps must be >= 0")
    return args


def backend_module(backend: str):
    """The backend's own package (imported before keras so a missing one is reported clearly), or its error."""
    try:
        return importlib.import_module(backend), None
    except ImportError as error:  # e.g. no PyTorch on this machine
        return None, f"{backend} is not installed ({error})"


def device_info(backend: str, module) -> dict:
    """What the backend runs on: {"device": name, "accelerator": bool}."""
    if backend == "jax":
        device = module.devices()[0]
        return {"device": f"{device.platform}: {getattr(device, 'device_kind', device)}",
                "accelerator": device.platform != "cpu"}
    if backend == "torch" and module.cuda.is_available():
        return {"device": f"cuda: {module.cuda.get_device_name(0)}", "accelerator": True}
    if backend == "tensorflow" and module.config.list_physical_devices("GPU"):
        return {"device": "gpu: " + ", ".join(d.name for d in module.config.list_physical_devices("GPU")),
                "accelerator": True}
    return {"device": f"cpu: {platform.processor() or platform.machine()}", "accelerator": False}


def peak_memory(backend: str, module) -> dict:
    """Peak device memory where the backend can tell, else the process' peak resident set size."""
    try:
        if backend == "jax":
            stats = module.devices()[0].memory_stats() or {}
            if "peak_bytes_in_use" in stats:
                return {"peak_memory_bytes": int(stats["peak_bytes_in_use"]), "peak_memory_of": "device"}
        elif backend == "torch" and module.cuda.is_available():
            return {"peak_memory_bytes": int(module.cuda.max_memory_allocated()), "peak_memory_of": "device"}
        elif backend == "tensorflow" and module.config.list_physical_devices("GPU"):
            info = module.config.experimental.get_memory_info("GPU:0")
            return {"peak_memory_bytes": int(info["peak"]), "peak_memory_of": "device"}
    except (RuntimeError, ValueError, AttributeError) as error:  # best effort: fall back to the process' RSS
        print(f"note: device memory unavailable ({error}); reporting resident set size", file=sys.stderr)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"peak_memory_bytes": int(rss), "peak_memory_of": "process resident set"}


def load_recipes():
    """nin_keras/training/recipes.py by itself: the package `nin_keras.training` imports TensorFlow's parts."""
    name = "nin_keras_training_recipes"
    spec = importlib.util.spec_from_file_location(name, ROOT / "nin_keras" / "training" / "recipes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


class StepTimer:
    """A keras callback factory: times[k] = end of step k (times[0] = start); each step waits for its loss."""

    def __init__(self, keras, on_epoch=None):
        times = self.times = []
        self.evaluating = []  # (start, end) of each evaluation, to leave out of training time
        self.epochs = []  # (end time, logs) of each epoch
        owner = self

        class _Callback(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                times.append(time.perf_counter())

            def on_train_batch_end(self, batch, logs=None):
                float(logs["loss"])  # wait for the step's device work
                times.append(time.perf_counter())

            def on_test_begin(self, logs=None):
                owner.evaluating.append([time.perf_counter(), None])

            def on_test_end(self, logs=None):
                owner.evaluating[-1][1] = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                owner.epochs.append((time.perf_counter(), dict(logs or {})))
                if on_epoch is not None:
                    on_epoch(owner)

        self.callback = _Callback()


def build_model(keras, nin_keras_models, args, *, dropout_rate=0.5):
    keras.config.set_dtype_policy(PRECISIONS[args.precision])
    try:
        return nin_keras_models.build_nin(10, variant=args.variant, width_multiplier=args.width,
                                          dropout_rate=dropout_rate)
    finally:
        keras.config.set_dtype_policy("float32")


def compile_model(keras, model, optimizer, args, loss="sparse_categorical_crossentropy"):
    if args.precision == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])


def speed(keras, nin_keras_models, args) -> dict:
    """Training steps per second on one synthetic batch, warm-up excluded."""
    import numpy as np

    model = build_model(keras, nin_keras_models, args)
    compile_model(keras, model, keras.optimizers.SGD(0.01, momentum=0.9), args)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch_size, *model.input_shape[1:]), dtype=np.uint8).astype("float32")
    labels = rng.integers(0, 10, (args.batch_size,)).astype("int32")

    def batches():
        while True:
            yield images, labels

    timer = StepTimer(keras)
    model.fit(batches(), epochs=1, steps_per_epoch=args.warmup_steps + args.steps, verbose=0, shuffle=False,
              callbacks=[timer.callback])
    timed = timer.times[args.warmup_steps:]
    elapsed = timed[-1] - timed[0]
    step_ms = [1000 * (b - a) for a, b in zip(timed, timed[1:])]
    return {"mode": "speed", "train_images_per_s": args.steps * args.batch_size / max(elapsed, 1e-9),
            "step_ms_median": statistics.median(step_ms), "seconds": elapsed, "params": model.count_params()}


def time_to_accuracy(keras, nin_keras_models, args, base: dict) -> dict:
    """Trains the mnist variant on Fashion-MNIST with the budget recipe; when did test accuracy reach TARGETS?"""
    import numpy as np

    from nin_keras.data.formats import find_idx_files, read_idx_dataset

    files = find_idx_files(args.data_dir)
    if files is None:
        raise SystemExit(f"error: {args.data_dir} does not hold the four IDX files (train-images-idx3-ubyte.gz, "
                         "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)")
    x_train, y_train, x_test, y_test = read_idx_dataset(files)[:4]
    if args.limit:
        x_train, y_train, x_test, y_test = (a[:args.limit] for a in (x_train, y_train, x_test, y_test))
    x_train, x_test = (x[..., None].astype("float32") for x in (x_train, x_test))
    one_hot = np.eye(10, dtype="float32")
    recipes = load_recipes()
    recipe = recipes.adapt_recipe("budget", has_batch_norm=True, variant="mnist").recipe
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    plan = recipes.plan_recipe(recipe, epochs=args.epochs, steps_per_epoch=steps_per_epoch,
                               batch_size=args.batch_size, augment=False, image_shape=x_train.shape[1:],
                               flips_allowed=False)
    model = build_model(keras, nin_keras_models, args, dropout_rate=0.5 if plan.dropout is None else plan.dropout)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=plan.recipe.label_smoothing)
    compile_model(keras, model, recipes.make_optimizer(plan), args, loss=loss)
    result = {"mode": "time_to_accuracy", "recipe": plan.describe(), "epochs": args.epochs,
              "train_images": len(x_train), "test_images": len(x_test), "params": model.count_params(),
              "augmentation": "none (the recipe's is a tf.data pipeline)"}
    start = time.perf_counter()
    # After each epoch the figures so far go to --json, so a run stopped by a time limit still reports.
    timer = StepTimer(keras, on_epoch=lambda t: args.json and _write(args.json, {
        **base, **accuracy_figures(result, t, start, len(x_train)), "partial": True}))
    model.fit(x_train, one_hot[y_train], batch_size=args.batch_size, epochs=args.epochs, verbose=0,
              validation_data=(x_test, one_hot[y_test]), callbacks=[timer.callback])
    return accuracy_figures(result, timer, start, len(x_train))


def accuracy_figures(result: dict, timer: StepTimer, start: float, train_images: int) -> dict:
    """`result` with the accuracy of each epoch so far, the times to TARGETS and the throughput."""
    result = {**result, "test_accuracy_by_epoch": []}
    for end, logs in timer.epochs:
        evaluation = sum(b - a for a, b in timer.evaluating if b is not None and b <= end + 1e-6)
        accuracy = float(logs.get("val_accuracy", float("nan")))
        result["test_accuracy_by_epoch"].append(accuracy)
        for target in TARGETS:
            key = f"seconds_to_{round(target * 100)}"
            if accuracy >= target and key not in result:
                result[key] = end - start - evaluation  # training time; wall time below
                result[f"wall_{key}"] = end - start
    for target in TARGETS:
        result.setdefault(f"seconds_to_{round(target * 100)}", None)
    # Throughput of the epochs after the first (the first compiles), evaluations excluded.
    epoch_ends = [timer.times[0]] + [end for end, _ in timer.epochs]
    durations = [b - a - sum(e - s for s, e in timer.evaluating if e is not None and a <= s <= b)
                 for a, b in zip(epoch_ends, epoch_ends[1:])]
    timed = durations[1:] or durations
    result["train_images_per_s"] = train_images * len(timed) / max(sum(timed), 1e-9)
    result["final_test_accuracy"] = result["test_accuracy_by_epoch"][-1]
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend  # before keras is imported
    result = {"backend": args.backend, "variant": "mnist" if args.data_dir else args.variant,
              "batch_size": args.batch_size, "precision": args.precision, "width_multiplier": args.width}
    if args.data_dir:
        args.variant = "mnist"
    module, missing = backend_module(args.backend)
    if module is None:
        result.update(available=False, reason=missing)
        print(f"backend {args.backend} unavailable: {missing}")
        _write(args.json, result)
        return 3
    import keras  # lazy: after KERAS_BACKEND is set

    if keras.backend.backend() != args.backend:
        raise SystemExit(f"error: keras runs on {keras.backend.backend()}, not {args.backend} (imported earlier?)")
    sys.path.insert(0, str(ROOT))  # nin_keras from this checkout: the GPU machine has no install
    nin_keras_models = importlib.import_module("nin_keras.models")
    result.update(available=True, keras=keras.__version__, backend_version=getattr(module, "__version__", None),
                  steps=args.steps, warmup_steps=args.warmup_steps, **device_info(args.backend, module))
    result.update(time_to_accuracy(keras, nin_keras_models, args, dict(result)) if args.data_dir
                  else speed(keras, nin_keras_models, args))
    result.update(peak_memory(args.backend, module))
    result["tensorflow_imported"] = "tensorflow" in sys.modules
    _write(args.json, result)
    for key in ("device", "params", "step_ms_median", "seconds_to_92", "seconds_to_93", "final_test_accuracy",
                "peak_memory_bytes"):
        if key in result:
            print(f"{key}={result[key]}")
    print(f"train_images_per_s={result['train_images_per_s']:.1f}")
    return 0


def _write(path, result) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
