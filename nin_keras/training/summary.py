"""The end of a run: the saved model loaded back (and scored on the test split), the curves, and how the run
ended, in words.

After a NaN loss the message names the epoch and step, which model was kept, and what to try.
"""

from __future__ import annotations

from pathlib import Path

from nin_keras.models.io import load_model
from nin_keras.training.callbacks import HistoryCSV, RunCallbacks
from nin_keras.training.precision import PrecisionChoice
from nin_keras.training.recipes import RecipePlan
from nin_keras.training.setup import loss_and_metrics
from nin_keras.training.strategy import StrategyChoice
from nin_keras.viz import plot_training_curves


def load_saved_model(path: Path, *, into):
    """The saved (best, float32) model at `path`, or None when no epoch finished; `into` gets its weights."""
    if not path.exists():
        return None
    saved = load_model(path)
    try:
        into.set_weights(saved.get_weights())
    except ValueError:  # a caller's model that differs from the saved one (e.g. other layers) keeps its weights
        pass
    return saved


def score_on_test(saved_model, test, *, label_smoothing: float) -> dict | None:
    """{"loss", "accuracy"} of the saved model on the `test` pipeline; None without either."""
    if saved_model is None or test is None:
        return None
    loss, metrics = loss_and_metrics(saved_model, label_smoothing)
    saved_model.compile(loss=loss, metrics=metrics)
    values = saved_model.evaluate(test, verbose=0, return_dict=True)
    saved_model.compiled = False  # the caller gets it as loaded: not compiled
    return {"loss": float(values["loss"]), "accuracy": float(values["accuracy"])}


def plot_curves(history: HistoryCSV, path: Path, *, title: str) -> Path | None:
    """Loss and accuracy curves of the run so far at `path`; None when no epoch finished."""
    if not history.rows:
        return None
    curves = {k: v for k, v in history.history.items() if k not in ("epoch", "learning_rate", "epoch_seconds")}
    return Path(plot_training_curves(curves, path, title=title))


def how_it_ended(run: RunCallbacks, *, epochs: int, model_path: Path, plan: RecipePlan, precision: PrecisionChoice,
                 strategy: StrategyChoice, batch_norm: bool) -> tuple[str | None, str]:
    """(stopped, message): stopped is None (all epochs ran), "nan" or "early_stopping"."""
    rows, best, monitor = run.history.rows, run.best, run.saver.monitor
    if run.guard.tripped:
        event = run.guard.event
        kept = (f"Kept the last good model: {model_path} (epoch {best['epoch']}, {monitor} {best['value']:.4f})."
                if best and model_path.exists() else
                "No epoch finished before that, so there is no saved model.")
        peak = plan.peak_learning_rate
        tips = [f"a lower learning rate (this run's peak: {peak:g}; try learning_rate={peak / 10:g})"]
        if precision.mixed:
            tips.append(f"precision='float32' (this run used {precision.policy})")
        if not batch_norm:
            tips.append("a model with batch normalization")
        return "nan", (f"Training diverged: the loss became {event['loss']} at epoch {event['epoch']}, step "
                       f"{event['step']}. {kept} Try {' or '.join(tips)}.")
    if len(rows) < epochs and rows and rows[-1]["epoch"] < epochs:
        return "early_stopping", f"Stopped early after epoch {rows[-1]['epoch']} ({monitor} stopped improving)."
    return None, f"Trained {len(rows)} epochs ({precision.policy}, {strategy.name} strategy)."
