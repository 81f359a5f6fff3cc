"""The mlpconv block: a k x k convolution followed by 1x1 convolutions.

The 1x1 convolutions are the paper's micro-MLP ("cascaded cross channel parametric pooling"): the same small
fully connected network applied at every pixel across channels. Layer names make that visible in
`model.summary()`: `mlpconv2_conv5x5`, `mlpconv2_mlp1`, `mlpconv2_mlp2`, each optionally followed by
`_bn` and `_relu`.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from nin_keras.checks import check_choice, check_int
from nin_keras.errors import InvalidInputError
from nin_keras.models.layers import FusedBatchNormalization

# Torch-port BN settings: momentum 0.9 lets moving statistics settle in short runs (Keras' 0.99 lags).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-3


def conv_bn_relu(x, filters: int, kernel_size: int, *, strides: int = 1, padding: str = "same",
                 batch_norm: bool = True, relu: bool = True, name: str):
    """Conv2D, then optional BatchNormalization, then optional ReLU; layers named `name`, `name_bn`, `name_relu`."""
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        # A bias before BN is redundant: BN's beta plays its part.
        use_bias=not batch_norm,
        kernel_initializer="he_normal",
        name=name,
    )(x)
    if batch_norm:
        x = FusedBatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    if relu:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return x


def mlpconv_block(x, filters: Sequence[int], kernel_size: int, strides: int = 1, *, batch_norm: bool = True,
                  padding: str = "same", final_relu: bool = True, name: str = "mlpconv"):
    """One mlpconv block of Network In Network.

    Reference:
        Lin, Chen, Yan. Network In Network. ICLR 2014. https://arxiv.org/abs/1312.4400

    Args:
        x: input tensor, channels last.
        filters: output channels of the k x k convolution followed by those of each 1x1 convolution,
            e.g. `(192, 160, 96)`. At least one entry.
        kernel_size: size of the first convolution.
        strides: stride of the first convolution. Defaults to 1.
        batch_norm: add BatchNormalization after every convolution. Defaults to True.
        padding: padding of the first convolution, "same" or "valid". Defaults to "same".
        final_relu: ReLU after the last 1x1 convolution. Defaults to True (the paper has a ReLU after
            every convolution).
        name: prefix of every layer name. Defaults to "mlpconv".

    Returns:
        The block's output tensor.
    """
    filters = list(filters)
    if not filters:
        raise InvalidInputError("filters must name at least one width, e.g. (192, 160, 96); received an empty list.")
    filters = [check_int(f"filters[{i}]", width, minimum=1) for i, width in enumerate(filters)]
    check_choice("padding", padding, ("same", "valid"))
    last = len(filters) - 1
    x = conv_bn_relu(x, filters[0], kernel_size, strides=strides, padding=padding, batch_norm=batch_norm,
                     relu=final_relu or last > 0, name=f"{name}_conv{kernel_size}x{kernel_size}")
    for j, width in enumerate(filters[1:], start=1):
        x = conv_bn_relu(x, width, 1, batch_norm=batch_norm, relu=final_relu or j < last,
                         name=f"{name}_mlp{j}")
    return x
