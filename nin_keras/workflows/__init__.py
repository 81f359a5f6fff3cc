"""Jobs that span stages, each calling the stages' public functions in data-flow order.

- `export` (`workflows.export`): quantization-aware training when asked -> write the export targets ->
  verify every artifact written. What `nin_keras.export` and `nin-keras export` run.
- `run_demo` (`workflows.demo`): the whole flow on the offline digits set: load -> build -> train -> export
  -> verify -> figures. What `make demo` and `nin-keras demo` run.

Nothing in the stages imports this package, so the stages stay usable one by one.
"""

from nin_keras.workflows.demo import run_demo
from nin_keras.workflows.export import DEFAULT_EXPORT_ROOT, export

__all__ = ["DEFAULT_EXPORT_ROOT", "export", "run_demo"]
