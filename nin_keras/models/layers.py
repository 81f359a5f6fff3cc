"""Layers NIN needs beyond stock Keras.

`FusedBatchNormalization` is Keras' BatchNormalization with the same weights, config and semantics, but on
the TensorFlow backend, for 4-D channels-last inputs, it runs TensorFlow's fused kernel (one op instead of
moments + several elementwise ops) and accepts bfloat16/float16 activations without upcasting them.
Measured on a 2-core AVX-512 CPU this about doubles NIN training speed (docs/BENCHMARKS.md).
Anything else (other backends, other ranks, masks, renorm, synchronized BN) falls back to Keras' code, and
TensorFlow is imported only when the fused path runs, so the layer works on JAX or PyTorch without it.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="nin_keras")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization that uses TensorFlow's fused kernel where it can.

    Weights are `gamma, beta, moving_mean, moving_variance` (Keras' order), so weights copy to and from
    `keras.layers.BatchNormalization` and `tf_keras.layers.BatchNormalization` as they are.

    It behaves as Keras' layer does, moving averages included: the kernel's running variance is the unbiased
    batch variance (n / (n - 1) times Keras' biased one, n = batch * height * width), so the layer takes the
    batch statistics from the kernel and updates the moving averages itself, with the biased variance as
    Keras does. Keras' own BatchNormalization test file runs against this layer in the test suite.
    """

    def _can_fuse(self, inputs, mask) -> bool:
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and not self.renorm
            and not self.synchronized
        )

    def call(self, inputs, training=None, mask=None):
        if not self._can_fuse(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf  # lazy: only the TensorFlow backend fuses; other backends run without TensorFlow
        # The fused kernel takes float16/bfloat16 x with float32 statistics: no upcast of activations.
        x = inputs if inputs.dtype in (tf.float16, tf.bfloat16) else tf.cast(inputs, tf.float32)
        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        moving_mean = tf.cast(self.moving_mean, tf.float32)
        moving_variance = tf.cast(self.moving_variance, tf.float32)

        is_training = bool(training and self.trainable)
        # In training (exponential_avg_factor 1) the kernel returns this batch's mean and unbiased variance.
        y, batch_mean, batch_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x,
            scale=gamma,
            offset=beta,
            mean=moving_mean,
            variance=moving_variance,
            epsilon=self.epsilon,
            exponential_avg_factor=1.0,
            data_format="NHWC",
            is_training=is_training,
        )
        if is_training:
            # Keras' convention: new = momentum * old + (1 - momentum) * batch, with the biased variance.
            count = tf.cast(tf.size(x, out_type=tf.int64) // channels, tf.float32)
            biased = tf.where(count > 1, batch_variance * (count - 1.0) / tf.maximum(count, 1.0), 0.0)
            new_mean = self.momentum * moving_mean + (1.0 - self.momentum) * batch_mean
            new_variance = self.momentum * moving_variance + (1.0 - self.momentum) * biased
            self.moving_mean.assign(ops.cast(new_mean, self.moving_mean.dtype))
            self.moving_variance.assign(ops.cast(new_variance, self.moving_variance.dtype))
        return ops.cast(y, self.compute_dtype)
