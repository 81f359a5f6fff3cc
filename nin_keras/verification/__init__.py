"""Stage 6 of the data flow: check that every artifact still classifies like the Keras model.

- `load_artifact(path_or_model)`: the one loader of .keras, SavedModel and .tflite artifacts (any I/O type).
- `evaluate(artifact, data)`: accuracy, and top-1 agreement with a reference model.
- `benchmark_inference(artifact)`: batch-1 latency and batched throughput on this machine.
- `benchmark_interleaved({name: artifact})`: batch-1 latency of several artifacts, timed interleaved over
  rounds (order alternating) and compared by medians: fair on a noisy machine; `rank_by_latency(timings)`
  names the fastest.
- `verify_export(out_dir, data)`: all of it for an export folder, written to report.json and report.md, one
  `ReportRow` per artifact; `report_table(rows)` shows its rows as a rich table.
- `Predictor(artifact)`: thread-safe predictions from Python.
"""

from nin_keras.verification.artifacts import load_artifact
from nin_keras.verification.evaluate import evaluate
from nin_keras.verification.latency import benchmark_inference, benchmark_interleaved, rank_by_latency
from nin_keras.verification.predictor import Predictor
from nin_keras.verification.report import (ROW_KEYS, ReportRow, discover_artifacts, report_table,
                                           verify_export)

__all__ = ["ROW_KEYS", "Predictor", "ReportRow", "benchmark_inference", "benchmark_interleaved", "discover_artifacts",
           "evaluate", "load_artifact", "rank_by_latency", "report_table", "verify_export"]
