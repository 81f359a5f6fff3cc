"""Class-confidence maps: where the network sees each class, straight from the architecture.

The paper's point about global average pooling (Lin, Chen, Yan 2014, section 3.2 and figure 4): the last
mlpconv layer produces one feature map per class, and the GAP of each map is that class's score. So the input
of the GAP layer *is* a set of confidence maps, one per class, with no extra method (no gradients, no CAM
weights) needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nin_keras.checks import check_int
from nin_keras.errors import IncompatibleModelError, InvalidInputError
from nin_keras.viz.figures import new_figure, save_figure

GAP_LAYER_NAME = "gap"  # nin_keras.models.GAP_LAYER_NAME (not imported here: that would import keras early)


def find_gap_layer(model):
    """The layer whose input are the class maps: the layer named "gap", else the last GlobalAveragePooling2D.

    Raises:
        IncompatibleModelError: the model has no GlobalAveragePooling2D layer.
    """
    import keras  # lazy: keras imports TensorFlow, and `import nin_keras.viz` (the figures) must not

    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)]
    for layer in pools:
        if layer.name == GAP_LAYER_NAME:
            return layer
    if pools:
        return pools[-1]
    raise IncompatibleModelError(
        f"Model {model.name!r} has no GlobalAveragePooling2D layer, so it has no class-confidence maps. "
        "Build it with nin_keras.build_nin(...) (include_top=True), whose 'gap' layer averages one map per class."
    )


def class_confidence_maps(model, images, *, upsample: bool = True, batch_size: int = 64) -> np.ndarray:
    """Returns the per-class confidence maps of a NIN for `images`.

    The maps are the output of the last mlpconv layer, i.e. the input of the layer named "gap" (in general,
    of the last GlobalAveragePooling2D). Averaging a map over its pixels gives that class's score: the value
    the classifier activation (softmax) turns into the model's output. So `maps.mean(axis=(1, 2))` of the
    non-upsampled maps equals the model's pre-activation scores.

    Args:
        model: a Keras NIN (from `build_nin`, or loaded from a .keras file), any variant, include_top=True.
        images: raw pixels as the model takes them, (batch, H, W, C) or one image (H, W, C); any numeric dtype.
        upsample: bilinearly resize the maps to the input's height and width, for overlaying on the image.
            Defaults to True.
        batch_size: images per forward pass. Defaults to 64.

    Returns:
        float32 array (batch, H', W', classes): H'=H, W'=W with `upsample`, else the last mlpconv's spatial size.

    Raises:
        IncompatibleModelError: the model has no GAP layer.
        IncompatibleModelError: images whose shape does not fit the model's input.
    """
    import keras  # lazy: keras imports TensorFlow, and `import nin_keras.viz` (the figures) must not

    batch_size = check_int("batch_size", batch_size, minimum=1)
    images = _check_images(model, images)
    gap = find_gap_layer(model)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    extractor = keras.Model(inputs, gap.input, name=f"{model.name}_class_maps")
    maps = np.concatenate([
        keras.ops.convert_to_numpy(keras.ops.cast(extractor(images[start:start + batch_size], training=False),
                                                  "float32"))
        for start in range(0, len(images), batch_size)
    ])
    if maps.ndim != 4:
        raise IncompatibleModelError(
            f"The input of {gap.name!r} has shape {maps.shape[1:]}; expected (height, width, classes) maps."
        )
    if upsample and maps.shape[1:3] != images.shape[1:3]:
        resized = keras.ops.image.resize(maps, images.shape[1:3], interpolation="bilinear")
        maps = keras.ops.convert_to_numpy(resized).astype(np.float32)
    return maps


def plot_confidence_maps(model, images, path, class_names=None, *, labels=None, top_k: int = 3,
                         max_images: int = 8, title: str | None = None, show: bool | None = None) -> Path:
    """Draws, for each image: the image, its predicted class's map overlaid on it, and the top-k classes' maps.

    Maps are upsampled to the image. The top-k maps of one row share one colour scale (so they compare), with
    the class name and probability above each.

    Args:
        model: a Keras NIN with a GAP layer (see `class_confidence_maps`).
        images: raw pixels (batch, H, W, C) or one image.
        path: where to write the PNG (atomically).
        class_names: one name per class. Defaults to the class ids.
        labels: optional true class ids, shown above each image.
        top_k: how many classes' maps to show per image. Defaults to 3.
        max_images: draw at most this many images (rows). Defaults to 8.
        title: figure title.
        show: also display the figure inline; None (default) does so in a notebook.

    Returns:
        The path of the PNG.
    """
    top_k = check_int("top_k", top_k, minimum=1)
    max_images = check_int("max_images", max_images, minimum=1)
    images = _check_images(model, images)[:max_images]
    maps = class_confidence_maps(model, images, upsample=True)
    num_classes = maps.shape[-1]
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise InvalidInputError(f"class_names has {len(names)} names but the model has {num_classes} class maps.")
    probabilities = predict_probabilities(model, images, maps)
    top_k = min(top_k, num_classes)
    columns = 2 + top_k

    figure = new_figure(2.1 * columns + 0.6, 2.2 * len(images) + 0.9)
    figure.suptitle(title or "Class-confidence maps (input of the GAP layer; each map's mean is its class score)",
                    fontsize=11)
    grid = np.atleast_2d(figure.subplots(len(images), columns, squeeze=False))
    for row, (image, row_maps, probs) in enumerate(zip(images, maps, probabilities)):
        order = np.argsort(probs)[::-1][:top_k]
        shown = _displayable(image)
        image_cmap = "gray" if shown.ndim == 2 else None
        axes = grid[row]
        axes[0].imshow(shown, cmap=image_cmap, interpolation="nearest")
        predicted = int(order[0])
        wrong = labels is not None and int(labels[row]) != predicted
        caption = "image" if labels is None else f"true: {names[int(labels[row])]}"
        axes[0].set_title(caption, fontsize=9)
        chosen = row_maps[..., order]
        low, high = float(chosen.min()), float(chosen.max())
        axes[1].imshow(shown, cmap=image_cmap, interpolation="nearest")
        # On the row's scale, as the top-k maps: autoscaled, a nearly flat map would show full red-to-blue.
        axes[1].imshow(row_maps[..., predicted], cmap="jet", alpha=0.45, vmin=low, vmax=high, interpolation="bilinear")
        axes[1].set_title(f"predicted: {names[predicted]}{' (WRONG)' if wrong else ''}\n"
                          f"({probs[predicted]:.1%}), map overlaid", fontsize=9,
                          color="tab:red" if wrong else "black")
        for column, class_id in enumerate(order, start=2):
            shown_map = axes[column].imshow(row_maps[..., class_id], cmap="viridis", vmin=low, vmax=high,
                                            interpolation="bilinear")
            axes[column].set_title(f"#{column - 1}: {names[class_id]} ({probs[class_id]:.1%})\n"
                                   f"map mean {row_maps[..., class_id].mean():.3g}", fontsize=9)
        colorbar = figure.colorbar(shown_map, ax=list(axes[2:]), shrink=0.8, pad=0.01)
        colorbar.ax.tick_params(labelsize=7)
        colorbar.set_label("class score", fontsize=8)
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
    return save_figure(figure, path, show=show)


def predict_probabilities(model, images, maps=None) -> np.ndarray:
    """Class probabilities for `images`: the model's output when it is a distribution, else softmax of GAP."""
    import keras  # lazy: keras imports TensorFlow, and `import nin_keras.viz` (the figures) must not

    output = np.concatenate([
        keras.ops.convert_to_numpy(keras.ops.cast(model(images[start:start + 64], training=False), "float32"))
        for start in range(0, len(images), 64)
    ])
    if output.ndim == 2 and np.all(output >= 0) and np.allclose(output.sum(axis=-1), 1.0, atol=1e-3):
        return output
    if maps is None:
        maps = class_confidence_maps(model, images, upsample=False)
    scores = maps.mean(axis=(1, 2))
    scores = scores - scores.max(axis=-1, keepdims=True)
    exp = np.exp(scores)
    return exp / exp.sum(axis=-1, keepdims=True)


def _check_images(model, images) -> np.ndarray:
    images = np.asarray(images)
    expected = tuple(model.inputs[0].shape[1:])
    if images.ndim == len(expected):
        images = images[None]
    if images.ndim != len(expected) + 1 or any(e is not None and e != s for e, s in zip(expected, images.shape[1:])):
        raise IncompatibleModelError(
            f"Images of shape {tuple(images.shape)} do not fit model {model.name!r}, which takes "
            f"(batch, {', '.join(str(d) for d in expected)}); resize them (nin_keras.viz.load_images does)."
        )
    if len(images) == 0:
        raise InvalidInputError("No images given.")
    return images.astype(np.float32)


def _displayable(image: np.ndarray) -> np.ndarray:
    """An HxW (gray) or HxWx3 image in 0..1 for imshow."""
    image = np.asarray(image, dtype=np.float32)
    if image.shape[-1] == 1:
        image = image[..., 0]
    elif image.shape[-1] != 3:
        image = image.mean(axis=-1)
    low, high = float(image.min()), float(image.max())
    if low >= 0 and high <= 255 and high > 1:
        return image / 255.0
    if high > low and (low < 0 or high > 1):
        return (image - low) / (high - low)  # standardised / whitened inputs: stretch for display
    return np.clip(image, 0, 1)
