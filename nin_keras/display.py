"""How progress, tables and figures reach the user, wherever the package runs.

Three kinds of output, chosen per display by `output_kind`:

* "notebook": inside a Jupyter kernel. A long job is one display output updated in place (IPython's
  `display_id`), so a training run leaves one block in the notebook, not hundreds of lines; tables render as
  HTML tables and figures inline.
* "terminal": the stream is a TTY. rich draws the running bar in place; finished steps stay above it as lines.
* "plain": anything else (CI logs, pipes, files): only finished steps, one line each, never a redraw.

Training (`keras`), QAT fine-tuning (`tf_keras`) and evaluation all draw through `ProgressDisplay`, so they look
the same; `fit_callback` adapts a `FitProgress` to either Keras' callback class.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import io
import math
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from nin_keras.checks import check_choice
from nin_keras.errors import InvalidInputError

OUTPUT_KINDS = ("notebook", "terminal", "plain")
VERBOSITY = ("auto", 0, 1, 2, True, False)  # `verbose` as Keras' fit takes it
# A notebook display is redrawn at most this often (each redraw is a message to the front end).
NOTEBOOK_REFRESH_S = 0.5
_NOTEBOOK_WIDTH = 100


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython's kernel shell); never imports IPython when it is not loaded."""
    ipython = sys.modules.get("IPython")
    if ipython is None or "ipykernel" not in sys.modules:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def output_kind(stream=None) -> str:
    """"notebook", "terminal" or "plain" for output written to `stream` (default: stdout)."""
    if in_notebook():
        return "notebook"
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return "terminal" if isatty is not None and isatty() else "plain"


def _columns():
    return (TextColumn("{task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"))


class ProgressDisplay:
    """One progress display: finished lines, plus one bar for the step running now (a context manager).

    `start(description, total)` begins a bar, `update(completed, status=...)` moves it, `finish(line)` ends it and
    keeps `line`; `log(line)` keeps a line at any time. What is drawn depends on the output kind (module doc).

    Args:
        kind: "notebook", "terminal" or "plain". Defaults to `output_kind(stream)`.
        stream: where terminal and plain output go. Defaults to stdout.
        enabled: False draws nothing at all.
    """

    def __init__(self, *, kind: str | None = None, stream=None, enabled: bool = True):
        self.stream = sys.stdout if stream is None else stream
        self.kind = kind or output_kind(self.stream)
        if self.kind not in OUTPUT_KINDS:
            raise InvalidInputError(f"kind must be one of {OUTPUT_KINDS}; received {kind!r}.")
        self.enabled = enabled
        self.lines: list[str] = []
        self._task = None
        self._last_draw = 0.0
        self._handle = None  # the notebook display
        self._live = self.enabled and self.kind == "terminal"  # rich redraws the bar itself, in place
        self._progress = Progress(*_columns(), console=Console(file=self.stream) if self._live else None,
                                  transient=True, auto_refresh=self._live)
        self._started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self, description: str, total: int | None) -> None:
        """Begins the bar of a new step (`total` None: unknown length)."""
        self._drop_task()
        if self._live and not self._started:
            self._progress.start()
            self._started = True
        self._task = self._progress.add_task(description, total=total, status="")
        self._draw(force=True)

    def update(self, completed: int, *, total: int | None = None, status: str = "") -> None:
        """Moves the bar to `completed` (and `total`, once it is known); `status` is shown after it."""
        if self._task is None:
            return
        fields = {"completed": completed, "status": status}
        if total is not None:
            fields["total"] = total
        self._progress.update(self._task, **fields)
        self._draw()

    def finish(self, line: str | None = None) -> None:
        """Ends the running bar; `line` (if given) stays, as a finished step."""
        self._drop_task()
        if line is not None:
            self.log(line)
        else:
            self._draw(force=True)

    def log(self, line: str) -> None:
        """Keeps `line` above the bar (every kind prints it, plain output only these)."""
        if not self.enabled:
            return
        self.lines.append(line)
        if self.kind == "terminal":
            self._progress.console.print(line, markup=False, highlight=False)
        elif self.kind == "plain":
            print(line, file=self.stream, flush=True)
        else:
            self._draw(force=True)

    def close(self) -> None:
        """Ends the display (safe to call more than once; a bar still running is dropped)."""
        self._drop_task()
        if self._started:
            self._progress.stop()
            self._started = False
        self._draw(force=True)

    def text(self) -> str:
        """What the display shows now, as plain text (the notebook's text/plain; tests read it)."""
        parts = list(self.lines)
        if self._task is not None:
            console = Console(file=io.StringIO(), width=_NOTEBOOK_WIDTH, color_system=None, force_terminal=False,
                              force_jupyter=False)
            with console.capture() as captured:
                console.print(self._progress.make_tasks_table(self._progress.tasks))
            parts.append(captured.get().rstrip())
        return "\n".join(parts)

    def _drop_task(self) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None

    def _draw(self, force: bool = False) -> None:
        """Redraws the notebook display (terminal: rich redraws itself; plain: nothing to redraw)."""
        if not self.enabled or self.kind != "notebook":
            return
        now = time.monotonic()
        if not force and now - self._last_draw < NOTEBOOK_REFRESH_S:
            return
        self._last_draw = now
        text = self.text()
        bundle = {"text/plain": text, "text/html": f"<pre style=\"margin:0\">{html.escape(text)}</pre>"}
        from IPython.display import display  # lazy: only inside a kernel, where IPython is loaded

        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)


def format_metrics(logs) -> str:
    """"loss 0.4123 · accuracy 0.8812 · val_loss ..." from a Keras logs dict: names as Keras gives them, loss
    first, validation after training; values that are not numbers are left out."""
    numbers = {}
    for name, value in (logs or {}).items():
        try:
            numbers[name] = float(value)
        except (TypeError, ValueError):
            continue
    order = sorted(numbers, key=lambda name: (name.startswith("val_"), name.removeprefix("val_") != "loss"))
    return " · ".join(f"{name} {_number(numbers[name])}" for name in order)


def _number(value: float) -> str:
    return f"{value:.4f}" if value == 0 or (math.isfinite(value) and 1e-3 <= abs(value) < 1e4) else f"{value:.3g}"


class FitProgress:
    """`model.fit`'s progress on a `ProgressDisplay`: a bar per epoch, then one line that stays per epoch.

    The line reads "epoch 2/3 · 469 steps · 41 s · loss 0.4123 · accuracy 0.8812 · val_loss ... ". Works for
    Keras 3 and tf_keras alike through `fit_callback`.

    Args:
        display: the `ProgressDisplay` to draw on. Defaults to a new one (stdout).
        title: a line shown before the first epoch (e.g. the recipe); None shows nothing.
    """

    def __init__(self, display: ProgressDisplay | None = None, *, title: str | None = None):
        self.display = display if display is not None else ProgressDisplay()
        self.title = title
        self.epochs = None
        self.steps = None
        self._epoch_start = 0.0
        self._epoch = 0
        self._seen = 0

    def train_begin(self, params: dict) -> None:
        self.epochs = params.get("epochs")
        self.steps = params.get("steps")
        if self.title:
            self.display.log(self.title)

    def epoch_begin(self, epoch: int) -> None:
        self._epoch, self._seen = epoch, 0
        self._epoch_start = time.perf_counter()
        self.display.start(f"epoch {epoch + 1}/{self.epochs}", self.steps)

    def batch_end(self, batch: int, logs) -> None:
        self._seen = batch + 1
        total = self.steps if self.steps else None
        self.display.update(self._seen, total=max(total, self._seen) if total else None,
                            status=format_metrics(logs))

    def epoch_end(self, epoch: int, logs) -> None:
        if not self.steps:  # a dataset of unknown length: now it is known
            self.steps = self._seen or None
        seconds = time.perf_counter() - self._epoch_start
        line = f"epoch {epoch + 1}/{self.epochs} · {self._seen} steps · {seconds:.{0 if seconds >= 10 else 1}f} s"
        metrics = format_metrics(logs)
        self.display.finish(f"{line} · {metrics}" if metrics else line)

    def train_end(self) -> None:
        self.display.finish()  # the display may go on (an export draws QAT, conversion and checks on one)


def fit_callback(base, progress: FitProgress):
    """A callback of class `base` (`keras.callbacks.Callback` or tf_keras') that draws `progress`."""

    class ProgressCallback(base):
        def on_train_begin(self, logs=None):
            progress.train_begin(self.params or {})

        def on_epoch_begin(self, epoch, logs=None):
            progress.epoch_begin(epoch)

        def on_train_batch_end(self, batch, logs=None):
            progress.batch_end(batch, logs)

        def on_epoch_end(self, epoch, logs=None):
            progress.epoch_end(epoch, logs)

        def on_train_end(self, logs=None):
            progress.train_end()

    return ProgressCallback()


@dataclasses.dataclass
class FitDisplay:
    """The progress callbacks of one `fit` (none when silent); `close()` ends the display it made, also after
    an error (a display it was given stays open for its owner)."""

    callbacks: list
    progress: FitProgress | None = None
    owned: bool = True

    def close(self) -> None:
        if self.progress is not None:
            self.progress.train_end()
            if self.owned:
                self.progress.display.close()


def fit_progress(verbose, *, base, title: str | None = None, display: ProgressDisplay | None = None) -> FitDisplay:
    """Progress callbacks for `fit(..., verbose=0)`, with Keras' meaning of `verbose`: 0 silent, "auto" or 1
    the display for where output goes, 2 one line per epoch; `display` draws on one the caller already shows.
    `base` is the callback class: Keras 3's, or tf_keras' for QAT. Keras' own bar is not used: it redraws with
    backspaces even into log files."""
    check_choice("verbose", verbose, VERBOSITY)
    if verbose in (0, False):
        return FitDisplay([])
    owned = display is None
    if owned:
        display = ProgressDisplay(kind="plain" if verbose == 2 else None)
    progress = FitProgress(display, title=title)
    return FitDisplay([fit_callback(base, progress)], progress, owned)


@contextlib.contextmanager
def progress_to(progress, *, stream=None):
    """The `ProgressDisplay` a function with a `progress` argument draws on: `progress` itself when the caller
    passes one (and keeps it open), else a new one on `stream` (True) or a silent one (False), closed at the end.
    """
    if isinstance(progress, ProgressDisplay):
        yield progress
        return
    with ProgressDisplay(stream=stream, enabled=bool(progress)) as display:
        yield display


def show_image(path) -> None:
    """Shows the PNG at `path` inline when running in a notebook (elsewhere the saved file is the output)."""
    if in_notebook():
        from IPython.display import Image, display  # lazy: only inside a kernel

        display(Image(filename=str(path)))


def show_table(table, *, stream=None) -> None:
    """Shows a rich renderable: an HTML table in a notebook, drawn text in a terminal, plain text in logs."""
    if in_notebook() and stream is None:
        from IPython.display import display  # lazy: only inside a kernel

        display(table)  # rich renderables carry their own HTML representation
        return
    stream = sys.stdout if stream is None else stream
    terminal = output_kind(stream) == "terminal"
    Console(file=stream, width=None if terminal else 132).print(table)  # logs: wide enough for report rows
