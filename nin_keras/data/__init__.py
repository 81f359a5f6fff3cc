"""Stage 1 of the data flow: datasets as batched tf.data pipelines of raw uint8 pixels.

`load_dataset(name, ...)` returns a `DatasetSplits` (train/validation/test pipelines plus num_classes,
class_names, input_shape, info); `list_datasets()` names what it can load; `as_splits(data)` turns the other
accepted forms (arrays, a tf.data dataset) into one. Modules, one concern each:
formats (original file readers, safe unpickler), sources (name -> loader registry), folder (image
folders), pipeline (tf.data, augmentation), preprocessing (GCN + ZCA). Whether a model fits a dataset is
the models stage's question: `nin_keras.models.check_data_fits`.
"""

import importlib

from nin_keras.process_state import explain_missing_tensorflow

# Loaded on first use: the pipelines import TensorFlow, and the models (on any Keras backend) import only the
# TensorFlow-free modules here (splits, preprocessing, formats).
_EXPORTS = {"load_dataset": "load", "measure_pipeline_throughput": "pipeline", "list_datasets": "sources",
            "DatasetSplits": "splits", "as_arrays": "splits", "as_splits": "splits"}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nin_keras.data' has no attribute {name!r}")
    with explain_missing_tensorflow(f"nin_keras.data.{name} (tf.data pipelines)"):
        value = getattr(importlib.import_module(f"nin_keras.data.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


__all__ = ["DatasetSplits", "as_arrays", "as_splits", "list_datasets", "load_dataset",
           "measure_pipeline_throughput"]
