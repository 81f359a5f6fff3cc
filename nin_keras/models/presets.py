"""NIN variants as data.

Each preset is a list of mlpconv blocks. A block is one k x k convolution followed by 1x1 convolutions
(the paper's "micro network", a small MLP slid over every pixel), then optional pooling and dropout.
`CLASSES` in a block's widths stands for "num_classes": such a layer is the classifier and is never
scaled by `width_multiplier` and is dropped by `include_top=False`.

Adding a variant means adding an entry to `PRESETS` (and its name to `nin_keras.choices.VARIANT_NAMES`, which
the CLI reads without importing Keras); the builder reads nothing else.
"""

from __future__ import annotations

import dataclasses

from nin_keras.choices import VARIANT_NAMES, check_same
from nin_keras.errors import InvalidInputError

CLASSES = "classes"


@dataclasses.dataclass(frozen=True)
class MlpconvSpec:
    """One mlpconv block.

    Attributes:
        widths: output channels of the k x k conv then of each 1x1 conv ("mlp" layers). `CLASSES` marks
            a layer whose width is the number of classes.
        kernel_size: size of the first (spatial) convolution.
        strides: stride of the first convolution.
        padding: padding of the first convolution, "same" or "valid".
        pool: "max", "avg" or None: pooling after the block.
        pool_size, pool_strides, pool_padding: pooling geometry.
        dropout: whether dropout follows the block (the rate is a builder argument).
    """

    widths: tuple
    kernel_size: int
    strides: int = 1
    padding: str = "same"
    pool: str | None = None
    pool_size: int = 3
    pool_strides: int = 2
    pool_padding: str = "same"
    dropout: bool = False


@dataclasses.dataclass(frozen=True)
class NINPreset:
    """A named NIN configuration."""

    name: str
    description: str
    input_shape: tuple[int, int, int]
    blocks: tuple[MlpconvSpec, ...]
    reference: str


PRESETS: dict[str, NINPreset] = {
    "cifar": NINPreset(
        name="cifar",
        description=(
            "The authors' CIFAR-10 NIN: 3 mlpconv blocks (5x5/192-160-96, 5x5/192-192-192, "
            "3x3/192-192-classes), max pool then average pool, GAP; 32x32x3."
        ),
        input_shape=(32, 32, 3),
        blocks=(
            MlpconvSpec((192, 160, 96), kernel_size=5, pool="max", dropout=True),
            # Second pool: average, as in the Caffe model-zoo port of the authors' net
            # (the cuda-convnet config uses max here; accuracy is within noise either way).
            MlpconvSpec((192, 192, 192), kernel_size=5, pool="avg", dropout=True),
            MlpconvSpec((192, 192, CLASSES), kernel_size=3),
        ),
        reference="Lin, Chen, Yan. Network In Network. ICLR 2014 (arXiv:1312.4400), CIFAR-10 model.",
    ),
    "mnist": NINPreset(
        name="mnist",
        description=(
            "The authors' MNIST NIN (mnist_def): 5x5/96-64-48, 5x5/128-96-48, 5x5/128-96-classes, "
            "GAP over 7x7; 28x28x1."
        ),
        input_shape=(28, 28, 1),
        blocks=(
            MlpconvSpec((96, 64, 48), kernel_size=5, pool="max", dropout=True),
            MlpconvSpec((128, 96, 48), kernel_size=5, pool="max", dropout=True),
            MlpconvSpec((128, 96, CLASSES), kernel_size=5),
        ),
        reference="Lin, Chen, Yan. Network In Network. ICLR 2014 (arXiv:1312.4400), MNIST model.",
    ),
    "imagenet": NINPreset(
        name="imagenet",
        description=(
            "The 4-mlpconv ImageNet NIN (Caffe model zoo, top-1 59.36%): 11x11/4 96, 5x5 256, 3x3 384, "
            "dropout, 3x3 1024-1024-classes, GAP; 224x224x3."
        ),
        input_shape=(224, 224, 3),
        blocks=(
            MlpconvSpec((96, 96, 96), kernel_size=11, strides=4, padding="valid", pool="max"),
            MlpconvSpec((256, 256, 256), kernel_size=5, pool="max"),
            MlpconvSpec((384, 384, 384), kernel_size=3, pool="max", dropout=True),
            MlpconvSpec((1024, 1024, CLASSES), kernel_size=3),
        ),
        reference="Lin, Chen, Yan. Network In Network. ICLR 2014; Caffe model zoo ImageNet NIN.",
    ),
    "d2l": NINPreset(
        name="d2l",
        description=(
            "The Dive into Deep Learning NiN: nin_blocks 11x11/4 96, 5x5 256, 3x3 384 (max pools 3/2, "
            "valid), dropout, then a classes-wide 3x3 block and GAP; 224x224x1."
        ),
        input_shape=(224, 224, 1),
        blocks=(
            MlpconvSpec((96, 96, 96), kernel_size=11, strides=4, padding="valid", pool="max",
                        pool_padding="valid"),
            MlpconvSpec((256, 256, 256), kernel_size=5, pool="max", pool_padding="valid"),
            MlpconvSpec((384, 384, 384), kernel_size=3, pool="max", pool_padding="valid", dropout=True),
            MlpconvSpec((CLASSES, CLASSES, CLASSES), kernel_size=3),
        ),
        reference="Zhang et al. Dive into Deep Learning, section 8.3 (Network in Network).",
    ),
}

check_same("variants", PRESETS, VARIANT_NAMES)


def list_variants() -> dict[str, str]:
    """Returns the known NIN variants, name -> one-line description."""
    return {name: preset.description for name, preset in PRESETS.items()}


def get_preset(variant: str) -> NINPreset:
    """Returns the preset named `variant`, or raises ValueError listing the known ones."""
    try:
        return PRESETS[variant]
    except (KeyError, TypeError):
        known = ", ".join(sorted(PRESETS))
        raise InvalidInputError(f"Unknown variant {variant!r}. Known variants: {known}.") from None
