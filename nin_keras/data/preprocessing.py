"""The paper's preprocessing: global contrast normalisation (GCN) then ZCA whitening.

NIN (like Maxout, whose pipeline it reuses) trains CIFAR on GCN + ZCA whitened images: pylearn2's
`GlobalContrastNormalization(scale=55)` followed by `ZCA(filter_bias=0.1)`. Both are fitted on training
images only and then applied unchanged to validation and test images.

Two ways to use it:

- In the model (exported artifacts take raw pixels): `build_nin(..., preprocessing="gcn_zca")` then
  `adapt_whitening(model, raw_training_images)`; the fitted mean and whitening matrix are weights of the
  model's `GCNZCAWhitening` layer (nin_keras.models.whitening), saved with it.
- On the arrays (`load_dataset(..., preprocessing="gcn_zca")`): float32 whitened images; a model trained on
  them must be built with `preprocessing=None` and takes whitened images, so it cannot be exported as a
  raw-pixel artifact.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nin_keras.errors import InvalidInputError

PREPROCESSINGS = ("none", "gcn_zca")
# pylearn2's constants for CIFAR (Maxout / NIN): GCN scale, sqrt bias and smallest divisor; ZCA filter bias.
GCN_SCALE = 55.0
GCN_SQRT_BIAS = 0.0
GCN_MIN_DIVISOR = 1e-8
ZCA_EPSILON = 0.1


def global_contrast_normalize(images, *, scale: float = GCN_SCALE, sqrt_bias: float = GCN_SQRT_BIAS,
                              min_divisor: float = GCN_MIN_DIVISOR) -> np.ndarray:
    """GCN as pylearn2 does it: per image, subtract the mean, then scale its L2 norm to `scale`."""
    x = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
    x = x - x.mean(axis=1, keepdims=True)
    norms = np.sqrt(sqrt_bias + np.square(x).sum(axis=1, keepdims=True)) / scale
    norms[norms < min_divisor] = 1.0
    return (x / norms).reshape(np.shape(images)).astype(np.float32)


@dataclasses.dataclass
class ZCA:
    """ZCA whitening `x -> (x - mean) @ W`, W = U diag(1/sqrt(eigenvalues + epsilon)) U^T.

    Attributes:
        epsilon: added to the eigenvalues (pylearn2's `filter_bias`); 0.1 for GCN'd CIFAR images.
        mean, matrix: fitted statistics (None until `fit`).
    """

    epsilon: float = ZCA_EPSILON
    mean: np.ndarray | None = None
    matrix: np.ndarray | None = None

    def fit(self, images) -> "ZCA":
        x = np.asarray(images).reshape(len(images), -1)
        if len(x) < 2:
            raise InvalidInputError("ZCA whitening needs at least 2 training images.")
        self.mean = x.mean(axis=0, dtype=np.float64)
        x = (x - self.mean).astype(np.float32)  # float32 products (2x faster, half the memory), float64 eigh
        covariance = (x.T @ x).astype(np.float64) / len(x)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        eigenvalues = np.clip(eigenvalues, 0.0, None)
        self.matrix = (eigenvectors / np.sqrt(eigenvalues + self.epsilon)) @ eigenvectors.T
        return self

    def transform(self, images, *, batch: int = 4096) -> np.ndarray:
        if self.matrix is None:
            raise InvalidInputError("ZCA.transform called before fit.")
        shape = np.shape(images)
        flat = np.asarray(images).reshape(len(images), -1)
        mean, matrix = self.mean.astype(np.float32), self.matrix.astype(np.float32)
        out = np.empty(flat.shape, dtype=np.float32)
        for start in range(0, len(flat), batch):
            out[start:start + batch] = (flat[start:start + batch].astype(np.float32) - mean) @ matrix
        return out.reshape(shape)


@dataclasses.dataclass
class GCNZCA:
    """GCN then ZCA, fitted on training images (`fit`) and applied to any split (`transform`)."""

    scale: float = GCN_SCALE
    sqrt_bias: float = GCN_SQRT_BIAS
    epsilon: float = ZCA_EPSILON
    zca: ZCA | None = None

    def fit(self, train_images) -> "GCNZCA":
        gcn = global_contrast_normalize(train_images, scale=self.scale, sqrt_bias=self.sqrt_bias)
        self.zca = ZCA(epsilon=self.epsilon).fit(gcn)
        return self

    def fit_transform(self, train_images) -> np.ndarray:
        """Fits on `train_images` and returns them transformed."""
        gcn = global_contrast_normalize(train_images, scale=self.scale, sqrt_bias=self.sqrt_bias)
        self.zca = ZCA(epsilon=self.epsilon).fit(gcn)
        return self.zca.transform(gcn)

    def transform(self, images) -> np.ndarray:
        if self.zca is None:
            raise InvalidInputError("GCNZCA.transform called before fit.")
        return self.zca.transform(global_contrast_normalize(images, scale=self.scale, sqrt_bias=self.sqrt_bias))

    def describe(self) -> dict:
        return {"name": "gcn_zca", "gcn_scale": self.scale, "gcn_sqrt_bias": self.sqrt_bias,
                "zca_epsilon": self.epsilon, "fitted_on": "train split only (validation hold-out excluded)"}


def resolve_preprocessing(preprocessing):
    """Returns None or a fresh (unfitted) GCNZCA from "none"/None, "gcn_zca" or a GCNZCA instance."""
    if preprocessing is None or preprocessing == "none":
        return None
    if preprocessing == "gcn_zca":
        return GCNZCA()
    if isinstance(preprocessing, GCNZCA):
        return dataclasses.replace(preprocessing, zca=None)
    raise InvalidInputError(
        f"Unknown preprocessing {preprocessing!r}. Allowed: None (raw uint8 pixels; the model rescales them), "
        "'gcn_zca' (the paper's GCN + ZCA whitening) or a nin_keras.data.preprocessing.GCNZCA instance."
    )
