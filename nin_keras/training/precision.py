"""Which floating-point precision to train in, and why; and rebuilding a model under that precision.

`choose_precision("auto")` picks:

* a GPU with bfloat16 tensor cores (compute capability >= 8.0, Ampere and later): `mixed_bfloat16`;
* an older GPU with float16 tensor cores (compute capability 7.x): `mixed_float16` (with loss scaling);
* a CPU with AVX512_BF16 or AMX-BF16 instructions and oneDNN on: `mixed_bfloat16` (about 2x float32 speed on
  a 2-core AVX-512 machine for NIN, see docs/benchmarks/training.md);
* anything else: `float32`.

Mixed precision keeps variables in float32 and computes in 16 bits; the model's output layer keeps computing in
float32 (stable softmax and loss), and the saved model is a float32 copy.

A Keras dtype policy is global and applies when layers are *created*, so `clone_with_policy` rebuilds a model
under a policy (inside `dtype_policy_scope`, which restores the caller's global policy) and copies its weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import keras
import tensorflow as tf

from nin_keras.checks import check_choice
from nin_keras.choices import PRECISIONS
# Imported under a module-level name so tests can stand in another CPU.
from nin_keras.errors import IncompatibleModelError
from nin_keras.machine import cpu_flags as _cpu_flags
from nin_keras.process_state import ONEDNN_VAR, onednn_active


@dataclasses.dataclass(frozen=True)
class PrecisionChoice:
    """The chosen Keras dtype policy name, what was asked for and why this one."""

    policy: str
    requested: str
    reason: str

    @property
    def mixed(self) -> bool:
        return self.policy != "float32"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _gpu_compute_capabilities() -> list[tuple[str, tuple[int, int] | None]]:
    """(name, compute capability) of each GPU TensorFlow sees."""
    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(device)
        except Exception:  # noqa: BLE001  (details are best effort)
            details = {}
        name = details.get("device_name", device.name)
        capability = details.get("compute_capability")
        gpus.append((name, tuple(capability) if capability else None))
    return gpus


def _onednn_enabled() -> bool:
    active = onednn_active()  # TensorFlow is loaded here: its own decision is the fact
    if active is not None:
        return active
    return os.environ.get(ONEDNN_VAR, "1").strip().lower() not in ("0", "false", "no", "off")


def choose_precision(requested: str = "auto") -> PrecisionChoice:
    """Resolves a precision request to a Keras dtype policy name, with the reason.

    Args:
        requested: "auto", "float32", "mixed_bfloat16" or "mixed_float16".

    Returns:
        A `PrecisionChoice` (`policy`, `requested`, `reason`).

    Raises:
        InvalidInputError: an unknown precision.
    """
    check_choice("precision", requested, PRECISIONS)
    if requested != "auto":
        reason = "asked for"
        if requested == "mixed_float16" and not _gpu_compute_capabilities():
            reason += " (note: float16 has no fast path on CPUs; expect it to be slower than float32)"
        return PrecisionChoice(requested, requested, reason)

    gpus = _gpu_compute_capabilities()
    if gpus:
        name, capability = gpus[0]
        if capability is not None and capability >= (8, 0):
            return PrecisionChoice(
                "mixed_bfloat16", requested,
                f"GPU {name} (compute capability {capability[0]}.{capability[1]}) has bfloat16 tensor cores: "
                "mixed_bfloat16 (no loss scaling needed); variables and the output stay float32",
            )
        if capability is not None and capability >= (7, 0):
            return PrecisionChoice(
                "mixed_float16", requested,
                f"GPU {name} (compute capability {capability[0]}.{capability[1]}) has float16 tensor cores: "
                "mixed_float16 with dynamic loss scaling; variables and the output stay float32",
            )
        shown = "unknown" if capability is None else f"{capability[0]}.{capability[1]}"
        return PrecisionChoice(
            "float32", requested,
            f"GPU {name} (compute capability {shown}) has no 16-bit tensor cores: float32",
        )

    flags = _cpu_flags()
    features = [label for flag, label in (("avx512_bf16", "AVX512_BF16"), ("amx_bf16", "AMX-BF16"))
                if flag in flags]
    if features and not _onednn_enabled():
        return PrecisionChoice(
            "float32", requested,
            f"CPU has {' and '.join(features)} but oneDNN is off (TF_ENABLE_ONEDNN_OPTS=0), so bfloat16 "
            "would be emulated: float32",
        )
    if features:
        return PrecisionChoice(
            "mixed_bfloat16", requested,
            f"CPU has {' and '.join(features)} (native bfloat16 math through oneDNN): mixed_bfloat16, about "
            "2x float32 speed; variables and the output stay float32",
        )
    reason = "no GPU and the CPU lacks AVX512_BF16/AMX (16-bit math would be emulated, slower): float32"
    if not _onednn_enabled():
        reason += (f"; TensorFlow's oneDNN kernels are off: {ONEDNN_VAR}=1 set before TensorFlow loads trains "
                   "about 1.7x faster on AVX2 CPUs (the nin-keras CLI sets it)")
    return PrecisionChoice("float32", requested, reason)


@contextlib.contextmanager
def dtype_policy_scope(policy):
    """Sets Keras' global dtype policy for the block, then restores the caller's policy."""
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def _policy_name(layer) -> str:
    policy = getattr(layer, "dtype_policy", None)
    return getattr(policy, "name", str(policy))


_PLAIN_POLICIES = ("float32", "float16", "bfloat16", "mixed_float16", "mixed_bfloat16", "float64")


def clone_with_policy(model, policy: str, *, replace_layer=None):
    """Rebuilds `model` with every layer under `policy` (output layers stay float32) and copies its weights.

    Args:
        model: a functional or Sequential Keras model.
        policy: Keras dtype policy name, e.g. "mixed_bfloat16".
        replace_layer: optional `(layer, config) -> layer or None`; returning a layer uses it instead of
            `type(layer).from_config(config)` (e.g. stock BatchNormalization for a plain-Keras baseline).

    Returns:
        The new model (weights copied). The caller's global dtype policy is unchanged afterwards.

    Raises:
        IncompatibleModelError: the model cannot be cloned (a subclassed model).
    """
    output_layers = set()
    for tensor in getattr(model, "outputs", None) or []:
        history = getattr(tensor, "_keras_history", None)
        if history is not None:
            output_layers.add(id(history[0]))
    if isinstance(model, keras.Sequential) and model.layers:
        output_layers.add(id(model.layers[-1]))

    def clone_layer(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.InputLayer):
            return layer.__class__.from_config(config)
        current = _policy_name(layer)
        if current in _PLAIN_POLICIES:  # leave quantized or custom policies alone
            config["dtype"] = "float32" if id(layer) in output_layers else policy
        if replace_layer is not None:
            replaced = replace_layer(layer, config)
            if replaced is not None:
                return replaced
        return layer.__class__.from_config(config)

    with dtype_policy_scope(policy):
        try:
            clone = keras.models.clone_model(model, clone_function=clone_layer)
        except ValueError as error:
            raise IncompatibleModelError(
                f"Cannot rebuild model {model.name!r} under precision {policy!r}: {error} (subclassed models "
                "cannot be cloned; build it with the functional API, e.g. nin_keras.build_nin)."
            ) from None
    clone.set_weights(model.get_weights())
    return clone
