"""Stage 3 of the data flow: training (`train`), its recipes, precision and strategy choices, and a benchmark.

- `train(model, data, *, epochs, ...)`: `model.fit` into a resumable run folder (see `nin_keras.training.run`).
- `RECIPES`: "paper", "paper_no_bn", "adam" as data (`nin_keras.training.recipes`).
- `choose_precision("auto")`: float32 / mixed_bfloat16 / mixed_float16 for this machine, with the reason.
- `get_strategy("auto")`: one device, MirroredStrategy or MultiWorkerMirroredStrategy, with the reason.
- `benchmark_training(...)`: training images/s of a NIN on synthetic data.
"""

from nin_keras.training.benchmark import benchmark_training
from nin_keras.training.precision import PRECISIONS, PrecisionChoice, choose_precision, clone_with_policy
from nin_keras.training.recipes import RECIPES, Recipe
from nin_keras.training.run import TrainingDivergedError, TrainingResult, train
from nin_keras.training.strategy import STRATEGIES, StrategyChoice, get_strategy

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
