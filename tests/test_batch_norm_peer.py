"""Keras' own BatchNormalization tests, run against FusedBatchNormalization.

A .keras file the project writes says "stock BatchNormalization" (so any Keras loads it), so the fused layer
must behave exactly like Keras' one. The test file ships in the keras wheel; its `layers.BatchNormalization`
is pointed at FusedBatchNormalization and every test in it runs here unchanged.
"""

from __future__ import annotations

import importlib

import pytest

from nin_keras.models import FusedBatchNormalization

peer = pytest.importorskip("keras.src.layers.normalization.batch_normalization_test",
                           reason="this keras wheel does not ship its BatchNormalization tests")
keras_layers = importlib.import_module("keras.src.layers")


class _LayersWithFusedBatchNorm:
    """keras.src.layers, except that BatchNormalization is FusedBatchNormalization."""

    BatchNormalization = FusedBatchNormalization

    def __getattr__(self, name):
        return getattr(keras_layers, name)


peer.layers = _LayersWithFusedBatchNorm()


class TestKerasBatchNormalizationSuiteOnFusedLayer(peer.BatchNormalizationTest):
    """Every test of Keras' BatchNormalizationTest, with the fused layer in place of Keras' layer."""


def test_the_peer_suite_really_uses_the_fused_layer():
    assert peer.layers.BatchNormalization is FusedBatchNormalization
    assert peer.layers.Dense is keras_layers.Dense
