"""The paper's GCN + ZCA whitening as a layer of the model, so a model trained that way takes raw pixels.

`GCNZCAWhitening` holds the fitted ZCA mean and whitening matrix as non-trainable weights: they are saved in
`.keras` files and baked into every SavedModel and .tflite export, and the whole model keeps taking raw
0..255 pixels like any other NIN. It computes exactly what `nin_keras.data.preprocessing.GCNZCA.transform`
computes on the arrays: per image, pylearn2's global contrast normalisation (subtract the image's mean,
scale its L2 norm to `scale`), then ZCA `(x - mean) @ matrix`, always in float32.

    model = build_nin(10, preprocessing="gcn_zca", batch_norm=False)
    adapt_whitening(model, load_dataset("cifar10").train)   # un-augmented raw training images
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from nin_keras.checks import check_float
from nin_keras.data.preprocessing import GCN_MIN_DIVISOR, GCN_SCALE, GCN_SQRT_BIAS, ZCA_EPSILON, GCNZCA
from nin_keras.data.splits import as_arrays, as_splits
from nin_keras.errors import IncompatibleModelError, InvalidInputError


@keras.saving.register_keras_serializable(package="nin_keras")
class GCNZCAWhitening(keras.layers.Layer):
    """Global contrast normalisation then ZCA whitening, fitted with `adapt` on raw training images.

    Until adapted the layer applies GCN only (zero mean, identity matrix), as an un-adapted
    `keras.layers.Normalization` passes values through. It computes in float32 under any dtype policy
    (dtype defaults to "float32"), so mixed-precision training keeps the whitening exact.

    Args:
        scale: GCN: each image's L2 norm after mean subtraction becomes `scale`. Defaults to 55.
        sqrt_bias: GCN: added under the square root of the norm. Defaults to 0.
        epsilon: ZCA's filter bias, added to the covariance eigenvalues by `adapt`. Defaults to 0.1.
        min_divisor: GCN: norms (divided by `scale`) below this are replaced by 1. Defaults to 1e-8.
        **kwargs: `keras.layers.Layer` arguments (name, dtype, ...).
    """

    def __init__(self, scale: float = GCN_SCALE, sqrt_bias: float = GCN_SQRT_BIAS, epsilon: float = ZCA_EPSILON,
                 min_divisor: float = GCN_MIN_DIVISOR, **kwargs):
        if kwargs.get("dtype") is None:
            kwargs["dtype"] = "float32"  # the whitening sums thousands of products: never in float16/bfloat16
        super().__init__(**kwargs)
        self.scale = check_float("scale", scale, minimum=0, min_inclusive=False)
        self.sqrt_bias = check_float("sqrt_bias", sqrt_bias, minimum=0)
        self.epsilon = check_float("epsilon", epsilon, minimum=0)
        self.min_divisor = check_float("min_divisor", min_divisor, minimum=0)
        self.mean = None
        self.matrix = None
        self._image_shape = None

    def build(self, input_shape):
        image_shape = tuple(input_shape[1:])
        if not image_shape or any(d is None for d in image_shape):
            raise InvalidInputError(
                f"{self.name}: GCN + ZCA whitening needs a static image shape; received input shape "
                f"{tuple(input_shape)}."
            )
        self._image_shape = tuple(int(d) for d in image_shape)
        features = math.prod(self._image_shape)
        self.mean = self.add_weight(name="mean", shape=(features,), initializer="zeros", trainable=False)
        self.matrix = self.add_weight(name="matrix", shape=(features, features), initializer="identity",
                                      trainable=False)

    def call(self, inputs):
        return gcn_zca_whiten(inputs, self.mean, self.matrix, image_shape=self._image_shape, scale=self.scale,
                              sqrt_bias=self.sqrt_bias, min_divisor=self.min_divisor)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def adapt(self, data) -> None:
        """Fits the whitening on raw training images (the paper fits on the training split only).

        Args:
            data: raw training images: an array (N, H, W, C), a `tf.data.Dataset` of images, or any form
                `nin_keras.data.as_splits` takes (a `DatasetSplits`: its train split, which must not be
                augmented and must not be whitened already).

        Raises:
            InvalidInputError: data of another form, augmented or already whitened.
            IncompatibleModelError: images of another shape than the layer's.
        """
        images = _raw_training_images(data)
        if not self.built:
            self.build((None, *images.shape[1:]))
        self.set_fitted(GCNZCA(scale=self.scale, sqrt_bias=self.sqrt_bias, epsilon=self.epsilon).fit(
            self._check_images(images)))

    def set_fitted(self, preprocessor: GCNZCA) -> None:
        """Copies a fitted `GCNZCA` (e.g. `DatasetSplits.preprocessor`) into the layer's weights."""
        if not isinstance(preprocessor, GCNZCA) or preprocessor.zca is None or preprocessor.zca.matrix is None:
            raise InvalidInputError(f"{self.name}: expected a fitted GCNZCA; received {preprocessor!r}.")
        if (preprocessor.scale, preprocessor.sqrt_bias) != (self.scale, self.sqrt_bias):
            raise InvalidInputError(
                f"{self.name}: the GCNZCA was fitted with GCN scale {preprocessor.scale}, sqrt_bias "
                f"{preprocessor.sqrt_bias}, but the layer uses {self.scale}, {self.sqrt_bias}; build the layer "
                "with the same constants."
            )
        if not self.built:
            raise InvalidInputError(f"{self.name}: call the layer (or build it) before set_fitted.")
        features = int(self.mean.shape[0])
        if tuple(preprocessor.zca.matrix.shape) != (features, features):
            raise IncompatibleModelError(
                f"{self.name}: the GCNZCA was fitted on images of {preprocessor.zca.matrix.shape[0]} values but "
                f"the layer takes {self._image_shape} images ({features} values); fit it on images of that shape."
            )
        self.epsilon = float(preprocessor.epsilon)
        self.mean.assign(np.asarray(preprocessor.zca.mean, dtype="float32"))
        self.matrix.assign(np.asarray(preprocessor.zca.matrix, dtype="float32"))

    @property
    def image_shape(self) -> tuple | None:
        """(height, width, channels) of the images the layer takes; None until built."""
        return self._image_shape

    @property
    def adapted(self) -> bool:
        """Whether the layer holds a fitted whitening (not the identity it starts with)."""
        if not self.built:
            return False
        matrix = keras.ops.convert_to_numpy(self.matrix)
        return bool(np.any(keras.ops.convert_to_numpy(self.mean))) or not np.array_equal(
            matrix, np.eye(len(matrix), dtype=matrix.dtype))

    def get_config(self) -> dict:
        return {**super().get_config(), "scale": self.scale, "sqrt_bias": self.sqrt_bias, "epsilon": self.epsilon,
                "min_divisor": self.min_divisor}

    def _check_images(self, images: np.ndarray) -> np.ndarray:
        if tuple(images.shape[1:]) != self._image_shape:
            raise IncompatibleModelError(
                f"{self.name}: adapt got images of shape {tuple(images.shape[1:])}, but the layer takes "
                f"{self._image_shape}."
            )
        return images


def gcn_zca_whiten(images, mean, matrix, *, image_shape, scale: float, sqrt_bias: float, min_divisor: float):
    """GCN then ZCA of a batch of images, in float32, with keras.ops (the layer's and its tf_keras twin's maths).

    Same steps and constants as `global_contrast_normalize` then `ZCA.transform`: per image subtract its
    mean, divide by `sqrt(sqrt_bias + sum of squares) / scale` (1 where that is below `min_divisor`), then
    `(x - mean) @ matrix`.
    """
    features = math.prod(image_shape)
    x = ops.reshape(ops.cast(images, "float32"), (-1, features))
    x = x - ops.mean(x, axis=1, keepdims=True)
    norms = ops.sqrt(sqrt_bias + ops.sum(ops.square(x), axis=1, keepdims=True)) / scale
    norms = ops.where(norms < min_divisor, 1.0, norms)
    x = ops.matmul(x / norms - ops.cast(mean, "float32"), ops.cast(matrix, "float32"))
    return ops.reshape(x, (-1, *image_shape))


def adapt_whitening(model: keras.Model, data) -> None:
    """Fits the "gcn_zca" layer of a model built with `build_nin(..., preprocessing="gcn_zca")`.

    Call it once, before training, with the raw (uint8) training images; the model then takes raw pixels and
    whitens them itself, in training, evaluation and every export.

    Args:
        model: a model with one `GCNZCAWhitening` layer.
        data: raw training images: an array, a `tf.data.Dataset` of images, or any form
            `nin_keras.data.as_splits` takes (a `DatasetSplits` loaded without `augment` and without
            `preprocessing`: its train split is used).

    Raises:
        InvalidInputError: the model has no whitening layer, or the data is augmented or already whitened.
        IncompatibleModelError: the images' shape does not match the model's input.
    """
    layers = [layer for layer in model.layers if isinstance(layer, GCNZCAWhitening)]
    if len(layers) != 1:
        raise InvalidInputError(
            f"Model {model.name!r} has {len(layers)} GCN + ZCA whitening layers; adapt_whitening needs exactly "
            "one: build it with build_nin(..., preprocessing='gcn_zca')."
        )
    layers[0].adapt(data)


def _raw_training_images(data) -> np.ndarray:
    """The images of `data` as one numpy array, refusing data that cannot be what the paper fits on."""
    if isinstance(data, np.ndarray):  # raw images as they are: no tf.data, so any Keras backend, no TensorFlow
        if data.ndim < 2 or data.dtype.kind not in "uif":
            raise InvalidInputError(f"Expected images (N, height, width, channels) of numbers; received an array of "
                                    f"shape {data.shape} and dtype {data.dtype}.")
        return data
    splits = as_splits(data, batch_size=256, images_only=True)
    if splits.preprocessor is not None:
        raise InvalidInputError(
            f"Dataset {splits.name!r} is already GCN + ZCA whitened; the whitening layer fits on raw pixels: "
            "load it without preprocessing (load_dataset(name))."
        )
    if (splits.info or {}).get("augmentation"):
        raise InvalidInputError(
            f"Dataset {splits.name!r} is augmented; fit the whitening on the training images as they are: "
            "pass load_dataset(name) without augment=True (same seed and validation_split)."
        )
    return as_arrays(splits, split="train")[0]
