"""Which `tf.distribute` strategy to train under, and why.

* "one": one device (TensorFlow's default strategy: the first GPU if there is one, else the CPU).
* "mirrored": `MirroredStrategy`, synchronous data parallelism over all local GPUs (or, without GPUs, over the
  logical CPU devices when there are several, which is how the tests run it).
* "multiworker": `MultiWorkerMirroredStrategy` over the machines listed in the `TF_CONFIG` environment
  variable. TensorFlow requires it to be created before any other TensorFlow op runs: create it first (the
  CLI does) and pass the returned `StrategyChoice` to `train`.
* "auto": multiworker when TF_CONFIG lists several workers, mirrored with two or more GPUs, else one.

On JAX and PyTorch `get_strategy` creates no tf.distribute strategy: see `nin_keras.training.distribution`
(Keras' own `DataParallel` on JAX).

Batches from the data pipeline are global batches: each of N replicas computes on batch_size / N examples.

`resolve_strategy` turns `train`'s strategy argument (a name, a `StrategyChoice` or a strategy) into a choice;
`patch_for_multiworker` works around Keras 3's multi-worker problems on a compiled model.
"""

from __future__ import annotations

import dataclasses
import json
import os

import keras
import tensorflow as tf

from nin_keras.checks import check_choice
from nin_keras.choices import STRATEGIES
from nin_keras.errors import InvalidInputError

# TensorFlow allows one MultiWorkerMirroredStrategy per process (collectives are configured once).
_MULTIWORKER = None


@dataclasses.dataclass
class StrategyChoice:
    """A tf.distribute strategy with what was asked for, why, and this process's role."""

    strategy: object
    name: str
    requested: str
    reason: str
    num_replicas: int = 1
    num_workers: int = 1
    worker_index: int = 0
    is_chief: bool = True
    # Set only off TensorFlow, where `strategy` is a Keras distribution (see nin_keras.training.distribution).
    backend: str | None = None
    devices: tuple = ()

    def as_dict(self) -> dict:
        record = {
            "name": self.name,
            "requested": self.requested,
            "reason": self.reason,
            "num_replicas": self.num_replicas,
            "num_workers": self.num_workers,
            "worker_index": self.worker_index,
            "is_chief": self.is_chief,
        }
        if self.backend is not None:
            record.update(backend=self.backend, devices=list(self.devices))
        return record


def read_tf_config() -> dict | None:
    """The parsed TF_CONFIG environment variable, or None when unset.

    Raises:
        InvalidInputError: TF_CONFIG is not valid JSON or lacks cluster/task.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"TF_CONFIG is not valid JSON ({error}).") from None
    if not isinstance(config, dict) or "cluster" not in config or "task" not in config:
        raise InvalidInputError(
            'TF_CONFIG must hold "cluster" and "task", e.g. {"cluster": {"worker": ["host1:port", '
            '"host2:port"]}, "task": {"type": "worker", "index": 0}}.'
        )
    return config


def _cluster_role(config: dict) -> tuple[int, int, bool]:
    """(number of workers incl. chief, this task's worker index, whether it is the chief)."""
    cluster = config.get("cluster", {})
    task = config.get("task", {})
    chiefs = list(cluster.get("chief", []))
    workers = list(cluster.get("worker", []))
    task_type, index = task.get("type", "worker"), int(task.get("index", 0))
    total = len(chiefs) + len(workers)
    if task_type == "chief":
        return total, 0, True
    worker_index = index + len(chiefs)
    return total, worker_index, (not chiefs and index == 0)


def _num_tf_config_workers() -> int:
    config = read_tf_config()
    if config is None:
        return 0
    return _cluster_role(config)[0]


def get_strategy(name: str = "auto") -> StrategyChoice:
    """Creates the tf.distribute strategy named `name` ("auto", "one", "mirrored", "multiworker").

    Off the TensorFlow backend no tf.distribute strategy is created: the choice comes from
    `nin_keras.training.distribution.training_strategy` (Keras' DataParallel on JAX).

    Returns:
        A `StrategyChoice` with `.strategy` (use `with choice.strategy.scope():`), the reason, the number of
        replicas and, for multi-worker training, this process's worker index and whether it is the chief.

    Raises:
        InvalidInputError: an unknown name, or "multiworker" without a usable TF_CONFIG, or created too late.
    """
    if keras.backend.backend() != "tensorflow":
        from nin_keras.training.distribution import training_strategy  # lazy: that module imports this one

        return training_strategy(name)
    check_choice("strategy", name, STRATEGIES)
    requested = name
    if name == "auto":
        if _num_tf_config_workers() > 1:
            name = "multiworker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "one"

    if name == "multiworker":
        return _multiworker(requested)
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            devices = [d.name for d in gpus]
            what = f"{len(devices)} local GPU(s)"
        else:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
            what = f"{len(devices)} logical CPU device(s) (no GPU)"
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        reason = "asked for" if requested == "mirrored" else "several local GPUs"
        return StrategyChoice(strategy, "mirrored", requested, f"{reason}: MirroredStrategy over {what}",
                              num_replicas=strategy.num_replicas_in_sync)

    gpus = tf.config.list_physical_devices("GPU")
    device = "GPU:0" if gpus else "CPU"
    reason = "asked for" if requested == "one" else ("no TF_CONFIG cluster and fewer than 2 GPUs")
    return StrategyChoice(tf.distribute.get_strategy(), "one", requested, f"{reason}: one device ({device})")


def _multiworker(requested: str) -> StrategyChoice:
    global _MULTIWORKER
    config = read_tf_config()
    if config is None:
        raise InvalidInputError(
            "strategy 'multiworker' needs the TF_CONFIG environment variable describing the cluster, e.g. "
            'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
            '"index": 0}}\' on the first machine (index 1 on the second).'
        )
    num_workers, worker_index, is_chief = _cluster_role(config)
    if _MULTIWORKER is None:
        try:
            _MULTIWORKER = tf.distribute.MultiWorkerMirroredStrategy()
        except (RuntimeError, ValueError) as error:
            raise InvalidInputError(
                f"Could not create MultiWorkerMirroredStrategy ({error}). It must be created before any other "
                "TensorFlow op runs: call nin_keras.training.get_strategy('multiworker') first thing."
            ) from None
    strategy = _MULTIWORKER
    reason = "asked for" if requested == "multiworker" else "TF_CONFIG lists several workers"
    return StrategyChoice(
        strategy, "multiworker", requested,
        f"{reason}: MultiWorkerMirroredStrategy, {num_workers} workers, this is worker {worker_index}"
        + (" (chief)" if is_chief else ""),
        num_replicas=strategy.num_replicas_in_sync, num_workers=num_workers, worker_index=worker_index,
        is_chief=is_chief,
    )


def describe_strategy(strategy) -> StrategyChoice:
    """Wraps a `tf.distribute.Strategy` you created in a `StrategyChoice` (role from TF_CONFIG if multi-worker)."""
    name = type(strategy).__name__
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        config = read_tf_config()
        num_workers, worker_index, is_chief = _cluster_role(config) if config else (1, 0, True)
        return StrategyChoice(strategy, "multiworker", "given", f"{name} passed in, {num_workers} workers",
                              num_replicas=strategy.num_replicas_in_sync, num_workers=num_workers,
                              worker_index=worker_index, is_chief=is_chief)
    short = "mirrored" if isinstance(strategy, tf.distribute.MirroredStrategy) else name
    return StrategyChoice(strategy, short, "given", f"{name} passed in",
                          num_replicas=strategy.num_replicas_in_sync)


def resolve_strategy(strategy) -> StrategyChoice:
    """`train`'s strategy argument as a `StrategyChoice`: a name (see `get_strategy`), a choice, or a strategy.

    A MultiWorkerMirroredStrategy must exist before any other TensorFlow op, so callers create it first and
    pass it (or its choice) in.
    """
    if isinstance(strategy, StrategyChoice):
        return strategy
    if isinstance(strategy, tf.distribute.Strategy):
        return describe_strategy(strategy)
    return get_strategy(strategy)


def patch_for_multiworker(model, element_spec) -> None:
    """Works around two Keras 3 problems under MultiWorkerMirroredStrategy (Keras 3.15, TF 2.21).

    1. `fit`/`evaluate` first all-reduce one input batch across workers to build the model symbolically
       (`TFTrainer._maybe_symbolic_build`); the collective reduce of the nested (images, labels) structure
       fails ("Attempt to convert a value (PerReplica...) to a Tensor"). We build from the dataset's element
       spec instead and skip that step.
    2. The step's logs are reduced with `strategy.reduce("MEAN", v, axis=0)`, which fails on scalars
       ("Invalid reduction dimension 0 for input with 0 dimensions"). The steps return each log as a
       1-element vector, which that reduction turns back into a scalar (the mean over workers).
    """
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=element_spec)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None

    def vector_logs(step):
        def wrapped(data):
            logs = step(data)
            return {key: tf.reshape(value, [1]) for key, value in logs.items()}

        return wrapped

    model.train_step = vector_logs(model.train_step)
    model.test_step = vector_logs(model.test_step)
