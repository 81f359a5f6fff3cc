"""`Predictor(artifact)`: thread-safe classification from Python, for any artifact kind."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from nin_keras.checks import check_bool, check_int
from nin_keras.data.splits import check_pixel_range
from nin_keras.errors import IncompatibleModelError
from nin_keras.export_layout import LABELS_FILE, read_labels
from nin_keras.verification.artifacts import DEFAULT_CHUNK, load_artifact


class Predictor:
    """Serves an artifact from any number of threads.

    A `.tflite` gets one interpreter per thread (an interpreter must not be called from two threads at
    once); Keras and SavedModel artifacts share one TensorFlow function, called under a lock, since
    TensorFlow already spreads one call over all cores. Results are the same as from one thread.

    Example:
        predictor = Predictor("export/nin/model_int8.tflite")
        probabilities = predictor.predict(image)        # (classes,) for one HWC image
        predictor.top_k(images, k=3)                    # [[{"class_id", "label", "probability"}, ...], ...]

    Args:
        artifact: a Keras model, `.keras` file, SavedModel folder or `.tflite` file (any I/O type).
        class_names: names of the classes, for `top_k`. Defaults to `labels.txt` beside the artifact, if
            there is one, else None.
        num_threads: TFLite interpreter threads per interpreter. Defaults to 1 (threads are the callers').
        batch_size: the most images per artifact call; larger inputs are split. Defaults to 64.
        allow_unit_range: take float images whose pixels all lie in 0..1. By default they are refused: the
            models take raw 0..255 pixels, and 0..1 images (a common Keras-tutorial habit) would be classified
            confidently and wrongly. Defaults to False.
    """

    def __init__(self, artifact, *, class_names=None, num_threads: int | None = 1, batch_size: int = DEFAULT_CHUNK,
                 allow_unit_range: bool = False):
        batch_size = check_int("batch_size", batch_size, minimum=1)
        self.allow_unit_range = check_bool("allow_unit_range", allow_unit_range)
        self._runner = load_artifact(artifact, num_threads=num_threads)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._owner = threading.get_ident()
        self.batch_size = batch_size
        self.input_shape = self._runner.input_shape
        self.num_classes = self._runner.num_classes
        self.kind = self._runner.kind
        self.class_names = list(class_names) if class_names is not None else self._labels_beside()
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise IncompatibleModelError(
                f"{len(self.class_names)} class names given for a model with {self.num_classes} classes."
            )

    def __repr__(self):
        return f"Predictor({self._runner!r})"

    def _labels_beside(self):
        path = self._runner.path
        if path is None:
            return None
        folder = path.parent if path.is_file() else path
        for candidate in (folder / LABELS_FILE, folder.parent / LABELS_FILE, folder.parent.parent / LABELS_FILE):
            if candidate.is_file():
                names = read_labels(candidate)
                if len(names) == self.num_classes:
                    return names
        return None

    def _thread_runner(self):
        if self._runner.thread_safe or threading.get_ident() == self._owner:
            return self._runner
        runner = getattr(self._local, "runner", None)
        if runner is None:
            runner = self._local.runner = self._runner.clone()
        return runner

    def _as_batch(self, images):
        images = np.asarray(images)
        h, w, c = self.input_shape
        single = images.shape == (h, w, c) or (c == 1 and images.shape == (h, w))
        if single:
            images = images.reshape(1, h, w, c)
        return images, single

    def predict(self, images) -> np.ndarray:
        """Class probabilities (float32): (classes,) for one HWC image, (N, classes) for an NHWC batch.

        Images are raw pixels (uint8 0..255 or float), as the model was trained on; one-channel models also
        take HW / NHW arrays.
        """
        batch, single = self._as_batch(images)
        if not self.allow_unit_range:
            check_pixel_range(batch, what="The images given to the predictor",
                              opt_out="create the predictor with Predictor(..., allow_unit_range=True)")
        runner = self._thread_runner()
        if runner.thread_safe:
            with self._lock:
                probs = runner.predict(batch, batch_size=self.batch_size)
        else:
            probs = runner.predict(batch, batch_size=self.batch_size)
        return probs[0] if single else probs

    __call__ = predict

    def predict_classes(self, images) -> np.ndarray:
        """Top-1 class ids: an int for one image, an int64 array for a batch."""
        probs = self.predict(images)
        classes = np.argmax(probs, axis=-1)
        return int(classes) if classes.ndim == 0 else classes.astype(np.int64)

    def top_k(self, images, k: int = 5):
        """The k most likely classes, best first, as dicts {class_id, label, probability}.

        Returns a list of k dicts for one image, a list of such lists for a batch.
        """
        k = check_int("k", k, minimum=1)
        probs = self.predict(images)
        single = probs.ndim == 1
        probs = np.atleast_2d(probs)
        k = min(k, self.num_classes)
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        rows = [
            [{"class_id": int(i), "label": self.class_names[i] if self.class_names else None,
              "probability": float(p[i])} for i in idx]
            for p, idx in zip(probs, order)
        ]
        return rows[0] if single else rows

    @property
    def path(self) -> Path | None:
        return self._runner.path
