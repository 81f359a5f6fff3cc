"""Stage 1 of the data flow: datasets as batched tf.data pipelines of raw uint8 pixels.

`load_dataset(name, ...)` returns a `DatasetSplits` (train/validation/test pipelines plus num_classes,
class_names, input_shape, info); `list_datasets()` names what it can load; `as_splits(data)` turns the other
accepted forms (arrays, a tf.data dataset) into one. Modules, one concern each:
formats (original file readers, safe unpickler), sources (name -> loader registry), folder (image
folders), pipeline (tf.data, augmentation), preprocessing (GCN + ZCA). Whether a model fits a dataset is
the models stage's question: `nin_keras.models.check_data_fits`.
"""

from nin_keras.data.load import load_dataset
from nin_keras.data.pipeline import measure_pipeline_throughput
from nin_keras.data.sources import list_datasets
from nin_keras.data.splits import DatasetSplits, as_arrays, as_splits

__all__ = ["DatasetSplits", "as_arrays", "as_splits", "list_datasets", "load_dataset",
           "measure_pipeline_throughput"]
