"""Figures any stage may draw, and the paper's class-confidence maps.

Everything here writes PNGs with matplotlib's Agg canvas on a `matplotlib.figure.Figure` made directly (never
`pyplot`, so no global figure state leaks into a user's session), atomically via `nin_keras._atomic`.

- `plot_training_curves(history, path)`: loss and accuracy, train and validation.
- `plot_confusion_matrix(labels, predictions, class_names, path)`: test-set confusion matrix.
- `class_confidence_maps(model, images)`: the maps the last mlpconv layer produces, one per class, whose
  global average is that class's score (the input of the GAP layer).
- `plot_confidence_maps(model, images, path, class_names=None)`: a grid of images and their predicted
  class's map, plus the top-3 classes' maps.
- `load_images(paths, input_shape)`: PNG/JPEG files as uint8 raw pixels resized for a model.
- `plot_artifact_comparison(rows, path)`: accuracy, size and latency per exported artifact (rows of
  `nin_keras.verification.verify_export`).
"""

from nin_keras.viz.figures import (
    plot_artifact_comparison,
    plot_confusion_matrix,
    plot_int8_layer_errors,
    plot_training_curves,
)
from nin_keras.viz.images import load_images
from nin_keras.viz.maps import class_confidence_maps, find_gap_layer, plot_confidence_maps

__all__ = [
    "class_confidence_maps",
    "find_gap_layer",
    "load_images",
    "plot_artifact_comparison",
    "plot_confidence_maps",
    "plot_confusion_matrix",
    "plot_int8_layer_errors",
    "plot_training_curves",
]
