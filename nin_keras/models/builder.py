"""`build_nin`: one builder for every NIN variant in `presets.PRESETS`."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from nin_keras.checks import MAX_WIDTH_MULTIPLIER, check_choice, check_float, check_int
from nin_keras.data.splits import as_splits
from nin_keras.errors import IncompatibleModelError, InvalidInputError, MissingFileError, one_line
from nin_keras.formatting import format_size
from nin_keras.machine import total_memory_bytes
from nin_keras.models.blocks import mlpconv_block
from nin_keras.models.io import load_model
from nin_keras.models.presets import CLASSES, PRESETS, MlpconvSpec, NINPreset, get_preset
from nin_keras.models.whitening import GCNZCAWhitening

POOLINGS = (None, "avg", "max")
CLASSIFIER_ACTIVATIONS = ("softmax", "sigmoid", "linear", None)
PREPROCESSINGS = ("rescale", "standardize", "gcn_zca", None)
INPUT_NAME = "image"
# Name of the layer that averages the class maps; the class-confidence maps are its input.
GAP_LAYER_NAME = "gap"


def build_nin(num_classes: int = 10, *, variant: str = "cifar", input_shape=None, width_multiplier: float = 1.0,
              batch_norm: bool = True, dropout_rate: float = 0.5, include_top: bool = True, pooling=None,
              classifier_activation="softmax", preprocessing="rescale", input_tensor=None, final_relu=None,
              name: str | None = None, weights=None) -> keras.Model:
    """Builds a Network In Network image classifier (a Keras 3 functional model).

    Reference:
        Lin, Chen, Yan. Network In Network. ICLR 2014. https://arxiv.org/abs/1312.4400

    The model takes raw pixels (0..255, any float or integer dtype) in an input named "image"; scaling happens
    inside the model, so exported artifacts take raw pixels too. Each mlpconv block is a k x k convolution then
    1x1 convolutions (`mlpconvN_convKxK`, `mlpconvN_mlp1`, ...). The last 1x1 convolution has one channel per
    class; `gap` averages each class map to that class's score (no dense layers).

    With `batch_norm=False`, `preprocessing=None` and width 1.0 the variants are the papers' networks
    (cifar: 966,986 parameters for 10 classes; imagenet: 7,595,176 for 1000).

    Args:
        num_classes: number of classes. Defaults to 10.
        variant: one of `nin_keras.list_variants()`: "cifar", "mnist", "imagenet", "d2l". Defaults to "cifar".
        input_shape: (height, width, channels). Defaults to the variant's (cifar 32x32x3, mnist 28x28x1,
            imagenet 224x224x3, d2l 224x224x1); must be at least the variant's minimum size. Height and width
            may be None, as in keras.applications: the model then takes any size at least the minimum
            (export needs a static size: `with_input_size`).
        width_multiplier: scales every hidden width (never the class layer) for smaller, faster models.
            Defaults to 1.0.
        batch_norm: BatchNormalization after every convolution (as in the well-known Torch port); the
            trainable default. False gives the paper's network. Defaults to True.
        dropout_rate: rate of the dropout layers after pooled blocks; 0 removes them. Defaults to 0.5.
        include_top: keep the class layer, GAP and the classifier activation. False gives a feature
            extractor ending at the last hidden mlpconv layer. Defaults to True.
        pooling: with `include_top=False`: None (4-D features), "avg" or "max" (global pooling to 2-D).
            Defaults to None.
        classifier_activation: "softmax", "sigmoid", "linear" or None (logits). It always computes in
            float32, also under mixed precision. Defaults to "softmax".
        preprocessing: "rescale" (x / 255), "standardize" (a `Normalization` layer named "standardize" to
            adapt on training data, see `adapt_standardization`), "gcn_zca" (the paper's GCN + ZCA
            whitening, a `GCNZCAWhitening` layer named "gcn_zca": fit it on the raw, un-augmented training
            images with `adapt_whitening(model, images)` before training; its fitted mean and matrix are
            saved with the model, so the model and its exports still take raw pixels) or None (the model
            sees raw values). Defaults to "rescale".
        input_tensor: optional Keras tensor to use as the model's input.
        final_relu: ReLU after the class layer, before GAP, as in the paper. Defaults to `batch_norm`:
            on with BN; off without BN, because the paper's ReLU-before-GAP with lr 0.1 is the known cause of
            runs stuck at loss ln(num_classes). Pass True with `batch_norm=False` for the exact paper net.
        name: model name. Defaults to "nin_<variant>".
        weights: None (random initialisation) or the path of a `.weights.h5` or `.keras` file whose weights
            fit this architecture (same variant, widths, classes, BN and preprocessing; any input size).
            Defaults to None.

    Returns:
        A `keras.Model`.

    Raises:
        InvalidInputError: a bad argument, or a network too large for this machine's memory (estimated
            before anything is built; the message says what it would need and what the machine has).
    """
    preset = get_preset(variant)
    num_classes = check_int("num_classes", num_classes, minimum=1)
    check_choice("pooling", pooling, POOLINGS)
    check_choice("classifier_activation", classifier_activation, CLASSIFIER_ACTIVATIONS)
    check_choice("preprocessing", preprocessing, PREPROCESSINGS)
    width_multiplier = check_float("width_multiplier", width_multiplier, minimum=0, min_inclusive=False,
                                   maximum=MAX_WIDTH_MULTIPLIER)
    dropout_rate = check_float("dropout_rate", dropout_rate, minimum=0, maximum=1, max_inclusive=False)
    if include_top and pooling is not None:
        raise InvalidInputError(
            f"pooling={pooling!r} only applies with include_top=False (with the top, GAP is the pooling)."
        )
    final_relu = batch_norm if final_relu is None else bool(final_relu)

    shape = _resolve_input_shape(preset, input_shape, input_tensor)
    sized = tuple(default if side is None else side for side, default in zip(shape, preset.input_shape))
    _check_fits_in_memory(preset, sized, num_classes, width_multiplier, batch_norm=batch_norm,
                          include_top=include_top, preprocessing=preprocessing)
    if input_tensor is None:
        inputs = keras.Input(shape=shape, name=INPUT_NAME)
        x = inputs
    else:
        inputs = keras.utils.get_source_inputs(input_tensor)
        x = input_tensor

    if preprocessing == "rescale":
        x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(x)
    elif preprocessing == "standardize":
        x = keras.layers.Normalization(axis=-1, name="standardize")(x)
    elif preprocessing == "gcn_zca":
        x = GCNZCAWhitening(dtype="float32", name="gcn_zca")(x)

    blocks = preset.blocks if include_top else _drop_class_layers(preset.blocks)
    for index, spec in enumerate(blocks, start=1):
        widths = [_width(w, num_classes, width_multiplier) for w in spec.widths]
        is_last = index == len(blocks)
        x = mlpconv_block(
            x,
            widths,
            spec.kernel_size,
            spec.strides,
            batch_norm=batch_norm,
            padding=spec.padding,
            # Hidden layers always have their ReLU; only the class layer's is optional.
            final_relu=final_relu if (is_last and include_top) else True,
            name=f"mlpconv{index}",
        )
        if spec.pool is not None:
            pool_layer = keras.layers.MaxPooling2D if spec.pool == "max" else keras.layers.AveragePooling2D
            x = pool_layer(spec.pool_size, strides=spec.pool_strides, padding=spec.pool_padding,
                           name=f"mlpconv{index}_{spec.pool}pool")(x)
        if spec.dropout and dropout_rate > 0:
            x = keras.layers.Dropout(dropout_rate, name=f"mlpconv{index}_dropout")(x)

    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name=GAP_LAYER_NAME)(x)
        # float32 output: stable softmax and loss under mixed precision.
        x = keras.layers.Activation(classifier_activation or "linear", dtype="float32", name="predictions")(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)

    model = keras.Model(inputs, x, name=name or f"nin_{variant}")
    if weights is not None:
        load_weights_into(model, weights)
    return model


def load_weights_into(model: keras.Model, path) -> None:
    """Sets `model`'s weights from a `.weights.h5` or `.keras` file, refusing one of another architecture.

    Raises:
        MissingFileError: no such file.
        InvalidInputError: neither a .weights.h5 nor a .keras file.
        IncompatibleModelError: the file's weights do not fit the model (the message says where they differ).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"Weights file not found: {path} (weights= takes a .weights.h5 or .keras file).")
    arrays = shapes = None
    if path.suffix == ".keras":
        arrays = load_model(path).get_weights()
        shapes = [tuple(array.shape) for array in arrays]
    elif not path.name.endswith(".weights.h5"):
        raise InvalidInputError(f"weights must be a .weights.h5 or .keras file; received {path}.")
    expected = [tuple(v.shape) for v in model.get_weights()]
    if shapes is not None and shapes != expected:
        first = next((i for i, (a, b) in enumerate(zip(shapes, expected)) if a != b), min(len(shapes), len(expected)))
        raise IncompatibleModelError(
            f"The weights in {path} do not fit this {model.name} model: {len(shapes)} arrays vs {len(expected)}, "
            f"first difference at array {first} ({shapes[first] if first < len(shapes) else 'none'} vs "
            f"{expected[first] if first < len(expected) else 'none'}). Build the model with the file's variant, "
            "width, classes, batch_norm and preprocessing."
        )
    try:
        if arrays is None:
            model.load_weights(path)  # Keras checks each layer's weights against the file's
        else:
            model.set_weights(arrays)
    except (ValueError, KeyError, OSError) as error:
        raise IncompatibleModelError(f"The weights in {path} do not fit this {model.name} model: "
                                     f"{one_line(error, 300)}. Build the model with the file's "
                                     "variant, width, classes, batch_norm and preprocessing.") from None
    for layer in model.layers:
        if hasattr(layer, "finalize_state"):  # adapted Normalization derives its tensors from its weights
            layer.finalize_state()


def estimate_size(variant: str, input_shape, num_classes: int, width_multiplier: float = 1.0, *,
                  batch_norm: bool = True, include_top: bool = True, preprocessing="rescale") -> tuple[int, int]:
    """(parameters, activation values of one image) of the network `build_nin` would build, without building it.

    Activations count every conv, BatchNormalization, ReLU and pooling output: what a forward pass of one
    image holds, and at least what training keeps per image for the backward pass.
    """
    preset = get_preset(variant)
    height, width, channels = (int(d) for d in input_shape)
    features = height * width * channels
    params = {"standardize": 2 * channels + 1, "gcn_zca": features * features + features}.get(preprocessing, 0)
    activations = features
    for spec in preset.blocks if include_top else _drop_class_layers(preset.blocks):
        for index, layer_width in enumerate(spec.widths):
            out = _width(layer_width, num_classes, width_multiplier)
            kernel = spec.kernel_size if index == 0 else 1
            if index == 0:
                height = _after(height, kernel, spec.strides, spec.padding) or 1
                width = _after(width, kernel, spec.strides, spec.padding) or 1
            params += kernel * kernel * channels * out + (4 * out if batch_norm else out)  # BN: 4 per channel
            activations += height * width * out * (3 if batch_norm else 2)  # conv (+ BN) + ReLU outputs
            channels = out
        if spec.pool is not None:
            height = _after(height, spec.pool_size, spec.pool_strides, spec.pool_padding) or 1
            width = _after(width, spec.pool_size, spec.pool_strides, spec.pool_padding) or 1
            activations += height * width * channels
    return params, activations


def _check_fits_in_memory(preset: NINPreset, shape, num_classes: int, width_multiplier: float, **options) -> None:
    """Refuses, before Keras allocates anything, a network whose float32 weights and one image's activations
    alone exceed this machine's memory (a large --width would otherwise end in an out-of-memory traceback)."""
    available = total_memory_bytes()
    if available is None:
        return
    params, activations = estimate_size(preset.name, shape, num_classes, width_multiplier, **options)
    weights, per_image = 4 * params, 4 * activations
    if weights + per_image <= available:
        return
    raise InvalidInputError(
        f"A {preset.name!r} NIN at width_multiplier={width_multiplier:g} for "
        f"{'x'.join(map(str, shape))} images would need at least {format_size(weights + per_image)} of memory "
        f"({params:,} parameters: {format_size(weights)} of float32 weights, plus {format_size(per_image)} of "
        f"activations for a single image; training needs several times that), but this machine has "
        f"{format_size(available)}. Use a smaller width multiplier (width_multiplier=)."
    )


def minimum_input_size(variant: str) -> int:
    """Smallest square input side for which every layer of `variant` keeps at least one pixel."""
    preset = get_preset(variant)
    for side in range(1, 4096):
        if _output_side(preset.blocks, side) is not None:
            return side
    raise AssertionError(f"no input size works for {variant}")  # presets are fixed data: cannot happen


def variant_of(model) -> str | None:
    """The variant of `PRESETS` that `build_nin` built `model` as, at any width, input size, top or BN; else None.

    Read from the structure, not from the model's name (which a user may change): the kernel size, stride and
    padding of each mlpconv block's first convolution, and the block's pooling. Training uses it to pick the
    values a recipe tuned for that variant.
    """
    layers = {layer.name: layer for layer in getattr(model, "layers", ())}
    blocks = []  # (kernel, strides, padding, pool, pool padding) of each block, as `_block_signature` gives
    for index in range(1, 100):
        conv = next((layer for name, layer in layers.items() if name.startswith(f"mlpconv{index}_conv")), None)
        if conv is None:
            break
        config = conv.get_config()
        pool = next((kind for kind in ("max", "avg") if f"mlpconv{index}_{kind}pool" in layers), None)
        pool_padding = layers[f"mlpconv{index}_{pool}pool"].get_config()["padding"] if pool else None
        blocks.append((_pair(config["kernel_size"]), _pair(config["strides"]), config["padding"], pool, pool_padding))
    matches = []
    for name, preset in PRESETS.items():
        expected = [_block_signature(spec) for spec in preset.blocks]
        # include_top=False drops a block made only of class layers (d2l's last): one block fewer still matches.
        if blocks and len(blocks) >= len(expected) - 1 and expected[:len(blocks)] == blocks:
            matches.append(name)
    return matches[0] if len(matches) == 1 else None


def _block_signature(spec: MlpconvSpec) -> tuple:
    """What `variant_of` reads of a block: its first convolution's geometry and its pooling."""
    return spec.kernel_size, spec.strides, spec.padding, spec.pool, spec.pool_padding if spec.pool else None


def _pair(value) -> int:
    """A square kernel size or stride as one int (Keras stores them as pairs)."""
    return int(value[0]) if isinstance(value, (tuple, list)) else int(value)


def adapt_standardization(model: keras.Model, images) -> None:
    """Adapts the model's "standardize" layer (built with `preprocessing="standardize"`) to `images`.

    Args:
        model: a model from `build_nin(..., preprocessing="standardize")`.
        images: raw training images: an array, a `tf.data.Dataset` of images, or any form
            `nin_keras.data.as_splits` takes (a `DatasetSplits`: its train split).

    Raises:
        ValueError: the model has no "standardize" layer.
        InvalidInputError: data of another form (see `as_splits`).
    """
    try:
        layer = model.get_layer("standardize")
    except ValueError:
        raise IncompatibleModelError(
            "This model has no 'standardize' layer; build it with preprocessing='standardize'."
        ) from None
    if isinstance(images, np.ndarray):  # an array adapts without tf.data: on any Keras backend, no TensorFlow
        layer.adapt(images)
        return
    splits = as_splits(images, batch_size=256, images_only=True)
    layer.adapt(splits.split("train").map(lambda x, _: x))


def _width(width, num_classes: int, multiplier: float) -> int:
    if width == CLASSES:
        return num_classes
    return max(1, int(round(width * multiplier)))


def _drop_class_layers(blocks: tuple[MlpconvSpec, ...]) -> tuple[MlpconvSpec, ...]:
    """The blocks without their class-width layers; a block made only of those disappears."""
    kept = []
    for spec in blocks:
        widths = tuple(w for w in spec.widths if w != CLASSES)
        if widths:
            kept.append(MlpconvSpec(**{**spec.__dict__, "widths": widths}))
    return tuple(kept)


def _output_side(blocks, side: int) -> int | None:
    """Spatial side after all blocks, or None if some layer would get an empty input."""
    for spec in blocks:
        side = _after(side, spec.kernel_size, spec.strides, spec.padding)
        if side is None:
            return None
        if spec.pool is not None:
            side = _after(side, spec.pool_size, spec.pool_strides, spec.pool_padding)
            if side is None:
                return None
    return side


def _after(side: int, window: int, stride: int, padding: str) -> int | None:
    if padding == "same":
        return math.ceil(side / stride)
    if side < window:
        return None
    return (side - window) // stride + 1


def _resolve_input_shape(preset: NINPreset, input_shape, input_tensor) -> tuple[int, int, int]:
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is None:
        return preset.input_shape
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise InvalidInputError(
            f"input_shape must be (height, width, channels); received {input_shape!r}."
        ) from None
    if len(shape) != 3:
        raise InvalidInputError(
            f"input_shape must have rank 3, (height, width, channels); received {shape!r} "
            f"(rank {len(shape)})."
        )
    # As keras.applications: height and width may be None (any size at least the minimum, as GAP allows).
    what = f"input_shape {shape!r}: height and width (an integer, or None for any size) and channels"
    shape = tuple(None if value is None and index < 2 else check_int(what, value, minimum=1)
                  for index, value in enumerate(shape))
    height, width, _ = shape
    minimum = minimum_input_size(preset.name)
    if min(side for side in (height, width, minimum) if side is not None) < minimum:
        raise InvalidInputError(
            f"input_shape {shape!r} is too small for variant {preset.name!r}: its downsampling needs at "
            f"least {minimum}x{minimum}."
        )
    return shape



def with_input_size(model: keras.Model, input_size=None) -> keras.Model:
    """`model` at a static input size: exports (TFLite, SavedModel, ONNX) need one.

    Args:
        model: a Keras image classifier, e.g. `build_nin(input_shape=(None, None, 3))`.
        input_size: None (keep the model's size), a side (32), (height, width) or "HxW" / "H" (the CLI's
            --input-size). A model with None height or width and no `input_size` is refused.

    Returns:
        `model` itself when its size is static and `input_size` is None; else a copy built at the size with
        the same layers and weights.

    Raises:
        InvalidInputError: a None-size model without `input_size`, a bad size, or one below the variant's
            minimum.
    """
    height, width, channels = tuple(model.inputs[0].shape[1:])
    if input_size is None:
        if height is None or width is None:
            raise InvalidInputError(
                f"Model {model.name!r} takes images of any size ({height}x{width}x{channels}); exporting needs a "
                "static size: pass input_size=(height, width) (CLI: --input-size HxW), e.g. the training size."
            )
        return model
    size = _parse_size(input_size)
    variant = variant_of(model)
    minimum = minimum_input_size(variant) if variant is not None else 1
    if min(size) < minimum:
        raise InvalidInputError(f"input_size {size[0]}x{size[1]} is too small for this {variant} model: its "
                                f"downsampling needs at least {minimum}x{minimum}.")
    if (height, width) == size:
        return model
    inputs = keras.Input(shape=(*size, channels), name=model.inputs[0].name or INPUT_NAME)
    clone = keras.models.clone_model(model, input_tensors=inputs)
    clone.set_weights(model.get_weights())  # same layers in the same order: the weights line up
    for layer in clone.layers:
        if hasattr(layer, "finalize_state"):  # adapted Normalization derives its tensors from its weights
            layer.finalize_state()
    return clone


def _parse_size(input_size) -> tuple[int, int]:
    """(height, width) from 32, (32, 32) or "32x32" / "32"."""
    if isinstance(input_size, str):
        input_size = input_size.lower().split("x")
    sides = [input_size] if not isinstance(input_size, (tuple, list)) else list(input_size)
    if len(sides) == 1:
        sides = sides * 2
    try:
        size = tuple(int(side) for side in sides)
    except (TypeError, ValueError):
        size = ()
    if len(size) != 2 or min(size) < 1 or any(str(side).strip() != str(int_side)
                                                   for side, int_side in zip(sides, size)):
        raise InvalidInputError(f"input_size must be a side or height x width in pixels (32, (32, 32) or "
                                f"'32x32'); received {input_size!r}.")
    return size
