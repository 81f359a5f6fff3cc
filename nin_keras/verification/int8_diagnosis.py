"""Which layers int8 hurts, ranked: `explain_int8` (tf.lite.experimental.QuantizationDebugger underneath).

The ranking measure is the error a layer's OWN int8 output quantization adds: the debugger hands each
quantized tensor's float twin and its scale/zero point; the float twin is re-quantized with them and the
RMSE over each channel's float std is averaged over the channels (capped at 1: a channel rounded away).
Layers downstream of a bad one inherit its damage in the debugger's end-to-end error, but not in this
measure, so the origin ranks first. The end-to-end error (RMSE over std of the whole tensor) is kept beside it.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from nin_keras.checks import check_bool, check_float, check_int
from nin_keras.exporting.int8_layers import (
    int8_debugger,
    quantize_with_float_nodes,
    quantized_tensors,
    resolve_float_layers,
)
from nin_keras.quantization.data import DEFAULT_REPRESENTATIVE_SAMPLES, representative_images, training_arrays
from nin_keras.verification.predictor import Predictor

DEFAULT_DIAGNOSIS_SAMPLES = 64  # images the per-layer statistics are computed on


def _channels(tensor) -> np.ndarray:
    tensor = np.asarray(tensor, dtype=np.float64)
    return tensor.reshape(-1, tensor.shape[-1]) if tensor.ndim > 1 else tensor[None]


def _own_error(float_tensor, quantized_tensor, scale, zero_point) -> float:
    values = _channels(float_tensor)
    requantized = (np.clip(np.round(values / scale) + zero_point, -128, 127) - zero_point) * scale
    std = values.std(axis=0)
    rmse = np.sqrt(((requantized - values) ** 2).mean(axis=0))
    live = std > 0
    return float(np.mean(np.minimum(rmse[live] / std[live], 1.0))) if live.any() else 0.0


def _end_to_end_error(float_tensor, quantized_tensor, scale, zero_point) -> float:
    values = np.asarray(float_tensor, dtype=np.float64)
    dequantized = (np.asarray(quantized_tensor, dtype=np.float64) - zero_point) * scale
    std = values.std()
    return float(np.sqrt(((dequantized - values) ** 2).mean()) / std) if std > 0 else 0.0


_METRICS = {
    "own_error": _own_error,
    "end_to_end_error": _end_to_end_error,
    "scale": lambda f, q, scale, zero_point: float(scale),
    "zero_point": lambda f, q, scale, zero_point: float(zero_point),
}


@dataclasses.dataclass(frozen=True)
class Int8LayerRow:
    """One quantized layer output. `own_error` ranks; `agreement_alone` is None unless measured."""

    layer: str
    position: int
    fused: tuple[str, ...]
    op: str
    own_error: float
    end_to_end_error: float
    max_abs_error: float
    scale: float
    zero_point: int
    agreement_alone: float | None
    node: str

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "fused": list(self.fused)}


@dataclasses.dataclass(frozen=True)
class Int8Diagnosis:
    """`explain_int8`'s answer: rows ranked worst first, and the whole-model int8 top-1 agreement."""

    model: str
    rows: tuple[Int8LayerRow, ...]
    agreement: float | None
    samples: int
    agreement_images: int
    single_layer: bool
    qat: bool = False

    @property
    def worst(self) -> Int8LayerRow | None:
        return self.rows[0] if self.rows else None

    def in_network_order(self) -> list[Int8LayerRow]:
        return sorted(self.rows, key=lambda row: row.position)

    def to_dict(self) -> dict:
        return {"model": self.model, "agreement": self.agreement, "samples": self.samples,
                "agreement_images": self.agreement_images, "single_layer": self.single_layer, "qat": self.qat,
                "measure": "own_error: RMSE of the layer's own int8 output rounding over each channel's float "
                           "std, averaged over channels (1 = the channels are rounded away)",
                "rows": [row.to_dict() for row in self.rows]}


def explain_int8(model, data, *, num_samples: int = DEFAULT_DIAGNOSIS_SAMPLES,
                 calibration_samples: int = DEFAULT_REPRESENTATIVE_SAMPLES, single_layer: bool = False,
                 agreement_images=None, agreement_limit: int = 500, qat_model=None) -> Int8Diagnosis:
    """Ranks the layers of `model` by the error their int8 output adds, worst first.

    Args:
        model: a Keras 3 image classifier taking raw pixels.
        data: any form `nin_keras.data.as_splits` takes: its train split calibrates (as the int8 export
            does); the validation split (else test split, else the arrays themselves) measures agreement.
        num_samples: training images the per-layer statistics are computed on. Defaults to 64.
        calibration_samples: calibration images. Defaults to 200, as the export.
        single_layer: also measure, per layer, the top-1 agreement with the float model when only that layer
            is quantized (one extra quantization and evaluation a layer). Defaults to False.
        agreement_images: raw-pixel images for the agreement. Defaults to those drawn from `data`.
        agreement_limit: at most this many agreement images. Defaults to 500.
        qat_model: a `QATModel` to diagnose instead of post-training quantization of `model`. Its tensors
            that FakeQuant already ranges arrive quantized, so only the tensors calibration ranges are listed.

    Returns:
        An `Int8Diagnosis`.

    Raises:
        InvalidInputError, IncompatibleModelError: data that does not fit; ConversionError: the converter failed.
    """
    num_samples = check_int("num_samples", num_samples, minimum=1)
    single_layer = check_bool("single_layer", single_layer)
    calibration = representative_images(model, data, num_samples=calibration_samples)
    if agreement_images is None:
        agreement_images = _agreement_images(model, data, agreement_limit)
    agreement_images = np.asarray(agreement_images, dtype="float32")[:agreement_limit]
    float_top1 = np.asarray(model.predict(agreement_images, verbose=0, batch_size=64)).argmax(-1)
    with int8_debugger(model, calibration, debug_images=calibration[:num_samples], qat_model=qat_model,
                       direct_metrics=_METRICS) as debugger:
        tensors = quantized_tensors(debugger, model)
        stats = debugger.layer_statistics
        names = list(stats)
        whole = _agreement(quantize_with_float_nodes(debugger, []), agreement_images, float_top1)
        rows = []
        for index, tensor in enumerate(tensors):
            row_stats = stats[names[index]]
            alone = None
            if single_layer:
                others = [other.node for other in tensors if other.node != tensor.node]
                alone = _agreement(quantize_with_float_nodes(debugger, others), agreement_images, float_top1)
            rows.append(Int8LayerRow(
                layer=tensor.layer, position=tensor.position, fused=tensor.fused, op=tensor.op,
                own_error=float(row_stats["own_error"]), end_to_end_error=float(row_stats["end_to_end_error"]),
                max_abs_error=float(row_stats["max_abs_error"]), scale=float(row_stats["scale"]),
                zero_point=int(round(row_stats["zero_point"])), agreement_alone=alone, node=tensor.node))
    ranked = sorted(rows, key=lambda row: (-row.own_error, -row.end_to_end_error, row.position))
    return Int8Diagnosis(model=model.name, rows=tuple(ranked), agreement=whole,
                         samples=min(num_samples, len(calibration)), agreement_images=len(agreement_images),
                         single_layer=single_layer, qat=qat_model is not None)


def _agreement_images(model, data, limit: int) -> np.ndarray:
    return _held_out(model, data, limit)[0]


def _held_out(model, data, limit: int):
    """(images, labels) of the validation split, else the test split, else the data itself."""
    for split in ("validation", "test"):
        if getattr(data, split, None) is not None:
            return training_arrays(model, data, limit=limit, split=split)
    return training_arrays(model, data, limit=limit)


@dataclasses.dataclass(frozen=True)
class FloatLayerProposal:
    """`propose_int8_float_layers`' answer: the layers to keep in float and the accuracies it measured.

    Attributes:
        layers: the smallest prefix of the ranking that brought int8 within `max_drop` of float (or, when
            none did within `max_layers`, the best prefix tried; `reached` says which).
        float_accuracy: the float model's accuracy on the held-out images.
        steps: (layers kept float, accuracy) for each prefix tried, the plain int8 model first.
        reached: whether the drop is within `max_drop`.
    """

    layers: tuple[str, ...]
    float_accuracy: float
    steps: tuple[tuple[tuple[str, ...], float], ...]
    reached: bool
    images: int


def propose_int8_float_layers(model, data, *, max_drop: float = 0.01, max_layers: int = 5, diagnosis=None,
                              calibration_samples: int = DEFAULT_REPRESENTATIVE_SAMPLES, limit: int = 1000,
                              qat_model=None) -> FloatLayerProposal:
    """The fewest layers (greedily, worst first by `explain_int8`'s ranking) whose float fallback brings the
    int8 accuracy within `max_drop` of float on held-out data (validation split, else test split, else `data`).

    Args:
        model: the Keras 3 classifier.
        data: any form `as_splits` takes; its train split calibrates.
        max_drop: accepted accuracy drop below float, as a fraction (0.01 = 1 point). Defaults to 0.01.
        max_layers: the most layers tried. Defaults to 5.
        diagnosis: an `Int8Diagnosis` of `model` already made (else one is made).
        calibration_samples: calibration images. Defaults to 200.
        limit: at most this many held-out images. Defaults to 1000.
        qat_model: a `QATModel` to convert instead.

    Returns:
        A `FloatLayerProposal`; pass its `layers` as `int8_float_layers` to `nin_keras.export`.
    """
    max_drop = check_float("max_drop", max_drop, minimum=0.0, maximum=1.0)
    max_layers = check_int("max_layers", max_layers, minimum=1)
    images, labels = _held_out(model, data, limit)
    if diagnosis is None:
        diagnosis = explain_int8(model, data, calibration_samples=calibration_samples, agreement_images=images,
                                 qat_model=qat_model)
    float_accuracy = float(np.mean(np.asarray(model.predict(images, verbose=0, batch_size=64)).argmax(-1) == labels))
    ranking = list(dict.fromkeys(row.layer for row in diagnosis.rows))
    calibration = representative_images(model, data, num_samples=calibration_samples)
    steps, chosen = [], ()
    with int8_debugger(model, calibration, debug_images=calibration[:1], qat_model=qat_model) as debugger:
        tensors = quantized_tensors(debugger, model)
        for count in range(0, min(max_layers, len(ranking)) + 1):
            layers = tuple(ranking[:count])
            nodes = resolve_float_layers(tensors, layers, model.name) if layers else []
            accuracy = _accuracy(quantize_with_float_nodes(debugger, nodes), images, labels)
            steps.append((layers, accuracy))
            if accuracy >= float_accuracy - max_drop:
                chosen = layers
                break
    reached = bool(steps) and steps[-1][1] >= float_accuracy - max_drop
    if not reached:
        chosen = max(steps, key=lambda step: (step[1], -len(step[0])))[0]
    return FloatLayerProposal(layers=chosen, float_accuracy=float_accuracy, steps=tuple(steps), reached=reached,
                              images=len(images))


def _accuracy(content: bytes, images, labels) -> float:
    return _agreement(content, images, np.asarray(labels))


def _agreement(content: bytes, images, float_top1) -> float:
    with tempfile.TemporaryDirectory(prefix="nin_int8_explain_") as folder:
        path = Path(folder) / "model.tflite"
        path.write_bytes(content)
        top1 = Predictor(path).predict_classes(images)
    return float(np.mean(np.asarray(top1) == float_top1))


def format_diagnosis(diagnosis: Int8Diagnosis, *, top: int = 10) -> str:
    """The ranked table and what to do about the worst layers: one screen of text."""
    lines = [f"int8 per-layer error of {diagnosis.model} (own_error: 0 = exact, 1 = channels rounded away)"]
    if diagnosis.agreement is not None:
        lines.append(f"whole-model int8 top-1 agreement with float: {diagnosis.agreement:.1%} "
                     f"on {diagnosis.agreement_images} images")
    header = (f"{'rank':>4}  {'layer':<28} {'op':<15} {'pos':>3}  {'own err':>8}  {'end-to-end':>10}  "
              f"{'max abs':>9}  {'scale':>9}")
    if diagnosis.single_layer:
        header += "  alone-agree"
    lines.append(header)
    for rank, row in enumerate(diagnosis.rows[:top], start=1):
        line = (f"{rank:>4}  {row.layer[:28]:<28} {row.op[:15]:<15} {row.position:>3}  {row.own_error:>8.3f}  "
                f"{row.end_to_end_error:>10.3f}  {row.max_abs_error:>9.3g}  {row.scale:>9.3g}")
        if diagnosis.single_layer:
            line += f"  {row.agreement_alone:>10.1%}" if row.agreement_alone is not None else "  -"
        lines.append(line)
    if len(diagnosis.rows) > top:
        lines.append(f"      ... {len(diagnosis.rows) - top} more layers (report.json has them all)")
    lines.extend(advice(diagnosis))
    return "\n".join(lines)


def advice(diagnosis: Int8Diagnosis, *, threshold: float = 0.1) -> list[str]:
    """What to do about the worst layers, as lines of text."""
    bad = [row for row in diagnosis.rows if row.own_error >= threshold][:3]
    if diagnosis.agreement is not None and diagnosis.agreement >= 0.99:
        return [f"int8 agrees with float on {diagnosis.agreement:.1%} of the images: nothing to repair."]
    if not bad:
        return [f"No layer's own int8 error reaches {threshold:g}; compare the end-to-end column to see where the "
                "difference grows."]
    names = ",".join(row.layer for row in bad)
    lines = [
        f"Worst: {', '.join(row.layer for row in bad)}. What to do:",
        f"  - keep them in float in a separate file model_int8_mixed.tflite: --int8-float-layers {names} "
        "(LiteRT CPU; not for the Edge TPU)",
        "  - or int16 activations for the whole model: the tflite_int16x8 target (LiteRT CPU, reference kernels)",
    ]
    if not diagnosis.qat:
        lines.append("  - or quantization-aware training (--qat-epochs N), which learns ranges that fit the layer")
    return lines
