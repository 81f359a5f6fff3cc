"""nin-keras: Network In Network (Lin, Chen, Yan, ICLR 2014) for Keras 3.

The package follows the data flow, one subpackage a stage:

    data -> models -> training -> quantization -> exporting -> verification

plus `viz` (figures), `workflows` (jobs that span stages: `export` = QAT + write targets + verify, and the
demo) and `cli`. Below them all sit small shared modules, one fact each: `errors`, `checks` (argument
checks), `formatting` (sizes, percentages, names), `display` (progress, tables and figures in a
notebook, a terminal or a log), `machine` (machine facts), `process_state` (TensorFlow's log level and
TF_USE_LEGACY_KERAS), `export_layout` (the export folder's file names) and `_atomic` (atomic writes).

The public API is re-exported here and loaded on first use, so `import nin_keras` stays fast and the CLI
can quiet TensorFlow before TensorFlow is imported.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # models
    "build_nin": "nin_keras.models",
    "mlpconv_block": "nin_keras.models",
    "list_variants": "nin_keras.models",
    "adapt_standardization": "nin_keras.models",
    "adapt_whitening": "nin_keras.models",
    "minimum_input_size": "nin_keras.models",
    "FusedBatchNormalization": "nin_keras.models",
    "GCNZCAWhitening": "nin_keras.models",
    "load_model": "nin_keras.models",
    "save_model": "nin_keras.models",
    # data
    "load_dataset": "nin_keras.data",
    "list_datasets": "nin_keras.data",
    "DatasetSplits": "nin_keras.data",
    "as_splits": "nin_keras.data",
    # training
    "train": "nin_keras.training",
    "benchmark_training": "nin_keras.training",
    # quantization
    "quantization_plan": "nin_keras.quantization",
    "quantize_aware": "nin_keras.quantization",
    "post_training_quantize": "nin_keras.exporting",
    "to_tf_keras": "nin_keras.quantization",
    # exporting
    "export": "nin_keras.workflows",
    "run_demo": "nin_keras.workflows",
    "check_edgetpu": "nin_keras.exporting",
    "EXPORT_TARGETS": "nin_keras.exporting",
    # verification
    "evaluate": "nin_keras.verification",
    "explain_int8": "nin_keras.verification.int8_diagnosis",
    "propose_int8_float_layers": "nin_keras.verification.int8_diagnosis",
    "benchmark_inference": "nin_keras.verification",
    "benchmark_interleaved": "nin_keras.verification",
    "rank_by_latency": "nin_keras.verification",
    "Predictor": "nin_keras.verification",
    "report_table": "nin_keras.verification",
    # viz
    "class_confidence_maps": "nin_keras.viz",
    # process
    "quiet_tensorflow": "nin_keras.process_state",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'nin_keras' has no attribute {name!r}")
    from nin_keras.process_state import explain_missing_tensorflow  # lazy: `import nin_keras` imports nothing

    with explain_missing_tensorflow(f"nin_keras.{name}"):  # a TensorFlow-only stage on another backend
        value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
