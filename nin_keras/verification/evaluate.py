"""`evaluate(artifact, data)`: accuracy of any artifact on a dataset, and top-1 agreement with a reference.

Data streams through batch by batch (a test split never has to fit in memory at once); only per-image top-1
classes are kept.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from nin_keras.checks import check_int
from nin_keras.data.splits import as_splits, data_errors_as_input
from nin_keras.display import progress_to
from nin_keras.errors import IncompatibleModelError, InvalidInputError
from nin_keras.models.signature import check_labels_fit
from nin_keras.process_state import silenced_native_stderr
from nin_keras.verification.artifacts import load_artifact


def evaluate(artifact, data, *, reference=None, limit=None, batch_size=64, progress=True) -> dict:
    """Evaluates an artifact on a dataset's test split.

    Args:
        artifact: a Keras model, a `.keras` file, a SavedModel folder (or a TF Serving folder of numbered
            versions: the highest is used) or any `.tflite` (float32/float16/dynamic/int8/uint8 I/O,
            dynamic batch or static batch 1). Raw pixels go in; quantization is handled.
        data: a `DatasetSplits` (its test split), a `tf.data.Dataset` of `(images, labels)` (batched or not:
            an unbatched one is batched by `batch_size`), or a tuple of numpy arrays `(images, labels)`; all
            of it is evaluated (`nin_keras.data.as_splits`).
        reference: optional artifact (typically the Keras model) whose top-1 predictions the artifact's are
            compared with. Defaults to None (no agreement).
        limit: evaluate at most this many examples. Defaults to all.
        batch_size: images per call of the artifact (static batch-1 models run one at a time). Defaults to 64.
        progress: show a progress bar on stderr. Defaults to True.

    Returns:
        A dict: accuracy, agreement (None without reference), num_examples, num_classes, mean_confidence
        (mean top-1 probability), top5_accuracy (None with 5 classes or fewer), artifact, kind, precision,
        seconds, images_per_s.

    Raises:
        IncompatibleModelError: the data's image shape or class count does not match the artifact (the
            message names both).
        FileNotFoundError, InvalidInputError: see `load_artifact`.
    """
    runner = load_artifact(artifact)
    source = EvalData(data, limit=limit, batch_size=batch_size)
    ref_runner = None
    if reference is not None:
        ref_runner = load_artifact(reference)
        if ref_runner.num_classes != runner.num_classes:
            raise IncompatibleModelError(
                f"The reference {ref_runner.name} has {ref_runner.num_classes} classes; {runner.name} has "
                f"{runner.num_classes}."
            )
    runners = [runner] if ref_runner is None else [runner, ref_runner]
    for each in runners:
        source.check(each)
    stats = run_over(source, runners, batch_size=batch_size, progress=progress, description=runner.name)
    result = stats[0].result(runner)
    if ref_runner is not None:
        result["agreement"] = float(np.mean(stats[0].top1() == stats[1].top1()))
    return result


class EvalData:
    """The test examples of any accepted data form, as a re-iterable stream of numpy batches."""

    def __init__(self, data, *, limit=None, batch_size=64):
        self.limit = check_int("limit (None for all)", limit, minimum=1, allow_none=True)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        splits = as_splits(data, split="test", batch_size=self.batch_size)
        self.num_classes, self.name = splits.num_classes, splits.name
        self.input_shape = tuple(splits.input_shape or ())
        self._size = (splits.info or {}).get("size")  # arrays: known without reading them
        self._dataset = splits.split("test")
        self._first = None

    @property
    def total(self) -> int | None:
        """Number of examples if known without reading the data (for the progress bar), else None."""
        if self._size is not None:
            return self._size if self.limit is None else min(self._size, self.limit)
        batches = int(self._dataset.cardinality())
        if batches < 0:  # unknown or infinite
            return self.limit
        first = self.first_batch()[1]
        estimate = batches * len(first)
        return estimate if self.limit is None else min(estimate, self.limit)

    def first_batch(self):
        if self._first is None:
            batches = iter(self)
            # One batch leaves a cached tf.data pipeline part-read, and TensorFlow logs a C++ warning when
            # that iterator goes: close it now, where the CLI drops native log lines.
            with silenced_native_stderr():
                self._first = next(batches, None)
                batches.close()
            if self._first is None:
                raise InvalidInputError("The evaluation data is empty.")
        return self._first

    def __iter__(self):
        seen = 0
        with data_errors_as_input():  # a bad label further in the dataset: the package's error, not TensorFlow's
            for images, labels in self._dataset.as_numpy_iterator():
                labels = _labels(labels)
                if self.limit is not None:
                    images, labels = images[:self.limit - seen], labels[:self.limit - seen]
                if len(labels) == 0:
                    break
                seen += len(labels)
                yield images, labels
                if self.limit is not None and seen >= self.limit:
                    break

    def check(self, runner) -> None:
        """Raises IncompatibleModelError when the images' shape or the class count does not fit `runner`."""
        images, _ = self.first_batch()
        runner.check_images(images)
        k = runner.num_classes
        if self.num_classes is not None and self.num_classes != k:
            raise IncompatibleModelError(
                f"The dataset has {self.num_classes} classes but {runner.name} outputs {k} class scores. "
                f"Evaluate it on a dataset with {k} classes, or train/export a model with "
                f"num_classes={self.num_classes}."
            )


def _labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:  # one-hot
        labels = labels.argmax(axis=1)
    labels = labels.reshape(-1)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.number) or not np.all(np.mod(labels, 1) == 0):
            raise InvalidInputError(f"Labels must be integer class ids; received dtype {labels.dtype}.")
    return labels.astype(np.int64)


class _Stats:
    """Running totals of one runner over the stream."""

    def __init__(self):
        self._top1, self._labels = [], []
        self.confidence = 0.0
        self.top5_hits = 0
        self.seconds = 0.0

    def add(self, probs, labels, seconds):
        self._top1.append(probs.argmax(axis=1))
        self._labels.append(labels)
        self.confidence += float(probs.max(axis=1).sum())
        if probs.shape[1] > 5:
            top5 = np.argpartition(-probs, 5, axis=1)[:, :5]
            self.top5_hits += int((top5 == labels[:, None]).any(axis=1).sum())
        self.seconds += seconds

    def top1(self) -> np.ndarray:
        return np.concatenate(self._top1) if self._top1 else np.zeros(0, np.int64)

    def labels(self) -> np.ndarray:
        return np.concatenate(self._labels) if self._labels else np.zeros(0, np.int64)

    def result(self, runner, reference_top1=None) -> dict:
        top1, labels = self.top1(), self.labels()
        n = len(labels)
        return {
            "artifact": runner.name,
            "kind": runner.kind,
            "precision": runner.precision,
            "accuracy": float(np.mean(top1 == labels)),
            "agreement": None if reference_top1 is None else float(np.mean(top1 == reference_top1)),
            "num_examples": int(n),
            "num_classes": runner.num_classes,
            "mean_confidence": self.confidence / n,
            "top5_accuracy": self.top5_hits / n if runner.num_classes > 5 else None,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(n / self.seconds, 1) if self.seconds > 0 else None,
        }


def run_over(source: EvalData, runners, *, batch_size=64, progress=True, description="evaluating") -> list:
    """Runs every runner on every batch of `source` (one pass over the data); returns one _Stats each.

    `progress`: True / False, or a `nin_keras.display.ProgressDisplay` to draw on (stderr by default).
    """
    stats = [_Stats() for _ in runners]
    with progress_to(progress, stream=sys.stderr) as display:
        total, done, start = source.total, 0, time.perf_counter()
        display.start(description, total)
        for images, labels in source:
            for runner, stat in zip(runners, stats):
                check_labels_fit(runner.name, runner.num_classes, labels)
                began = time.perf_counter()
                probs = runner.predict(images, batch_size=batch_size)
                stat.add(probs, labels, time.perf_counter() - began)
            done += len(labels)
            display.update(done, total=max(total, done) if total is not None else None)
        display.finish(f"{description}: {done:,} images in {time.perf_counter() - start:.1f} s")
    if not len(stats[0].labels()):
        raise InvalidInputError("The evaluation data is empty.")
    return stats


def evaluate_runner(runner, source: EvalData, *, reference_top1=None, batch_size=64, progress=True) -> dict:
    """`evaluate` on a loaded runner; `reference_top1` from an earlier pass (verify_export reuses it)."""
    source.check(runner)
    stat = run_over(source, [runner], batch_size=batch_size, progress=progress, description=runner.name)[0]
    if reference_top1 is not None and len(reference_top1) != len(stat.labels()):
        raise InvalidInputError("The evaluation data changed between passes (a shuffled test split?).")
    return stat.result(runner, reference_top1)
