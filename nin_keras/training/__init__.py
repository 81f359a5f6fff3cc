"""Stage 3 of the data flow: training (`train`), its recipes, precision and strategy choices, and a benchmark.

- `train(model, data, *, epochs, recipe="budget", ...)`: `model.fit` into a resumable run folder.
- `RECIPES`: "budget", "paper", "paper_no_bn", "adam" as data: frozen `Recipe`s, changed with
  `dataclasses.replace(RECIPES["budget"], learning_rate=...)` and passed to `train(recipe=...)`.
- `choose_precision("auto")`: float32 / mixed_bfloat16 / mixed_float16 for this machine, with the reason.
- `get_strategy("auto")`: one device, MirroredStrategy or MultiWorkerMirroredStrategy, with the reason.
- `benchmark_training(...)`: training images/s of a NIN on synthetic data.

Modules, one job each:

- `trainer`: `train`, `TrainingResult`, `TrainingDivergedError`: the steps below, in order.
- `inputs`: the data `train` accepts as train/validation/test pipelines for `fit` (steps per epoch, one-hot
  labels for label smoothing, sharding across workers).
- `run_folder`: `RunFolder`: the run folder's files, the resume/overwrite rules, config.json.
- `setup`: the model to fit: rebuilt under the precision in the strategy's scope, optimizer, loss, metrics.
- `callbacks`: NaN guard, atomic backup (resume), best-model saver, history.csv, all written in place.
- `summary`: the end of a run: the saved model and its test metrics, curves, how it ended.
- `recipes`, `precision`, `strategy`: the choices, as data and with their reasons.
- `benchmark`: `benchmark_training`.
"""

from nin_keras.training.benchmark import benchmark_training
from nin_keras.training.precision import PRECISIONS, PrecisionChoice, choose_precision, clone_with_policy
from nin_keras.training.recipes import RECIPES, Recipe
from nin_keras.training.strategy import STRATEGIES, StrategyChoice, get_strategy
from nin_keras.training.trainer import TrainingDivergedError, TrainingResult, train

__all__ = [
    "PRECISIONS",
    "RECIPES",
    "STRATEGIES",
    "PrecisionChoice",
    "Recipe",
    "StrategyChoice",
    "TrainingDivergedError",
    "TrainingResult",
    "benchmark_training",
    "choose_precision",
    "clone_with_policy",
    "get_strategy",
    "train",
]
