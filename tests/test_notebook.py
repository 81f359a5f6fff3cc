"""examples/quickstart.ipynb, executed top to bottom in a real Jupyter kernel, twice in the same kernel.

The second pass is what a user does when re-running cells: it must work, and must leave Keras' global settings
and TF_USE_LEGACY_KERAS as the first pass found them. Any cell that raises fails the test (nbclient's
CellExecutionError names the cell).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"

# Run between the passes: the process-wide settings a library could leave changed.
STATE_CELL = """
import json as _json, os as _os, keras as _keras
print("STATE " + _json.dumps({
    "dtype_policy": _keras.config.dtype_policy().name, "floatx": _keras.config.floatx(),
    "image_data_format": _keras.config.image_data_format(), "epsilon": _keras.config.epsilon(),
    "TF_USE_LEGACY_KERAS": _os.environ.get("TF_USE_LEGACY_KERAS"),
}))
"""
# Only at the very end: the first touch of tf.keras decides which Keras it is for the rest of the process.
TF_KERAS_CELL = """
import tensorflow as _tf, keras as _keras
print("TF_KERAS_IS_KERAS_3", _tf.keras.layers.Dense is _keras.layers.Dense)
"""
NATIVE_LOG = re.compile(r"^[IWE]\d{4} ", re.MULTILINE)  # TensorFlow's C++ log lines


def _texts(cell, output_type, mime="text/plain"):
    return [o["data"][mime] for o in cell.get("outputs", []) if o["output_type"] == output_type and mime in o["data"]]


def _streams(cell):
    return [(o["name"], o["text"]) for o in cell.get("outputs", []) if o["output_type"] == "stream"]


def _cell(cells, marker):
    found = [cell for cell in cells if marker in cell.source]
    assert len(found) == 1, f"expected one cell with {marker!r}"
    return found[0]


def test_the_notebook_is_stored_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "strip the outputs before committing"


@pytest.mark.slow
def test_quickstart_runs_twice_in_one_kernel(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    source = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in source.cells if cell.cell_type == "code"]

    def state():
        return nbformat.v4.new_code_cell(STATE_CELL)

    passes = [[nbformat.v4.new_code_cell(cell.source) for cell in code] for _ in range(2)]
    cells = [state(), *passes[0], state(), *passes[1], state(), nbformat.v4.new_code_cell(TF_KERAS_CELL)]
    notebook = nbformat.v4.new_notebook(cells=cells, metadata=source.metadata)
    nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()

    states = [json.loads(text.split("STATE ", 1)[1]) for cell in cells if "STATE" in cell.source
              for _, text in _streams(cell)]
    assert len(states) == 3 and states[0] == states[1] == states[2], states
    assert states[0]["dtype_policy"] == "float32" and states[0]["TF_USE_LEGACY_KERAS"] in (None, "0")
    assert "TF_KERAS_IS_KERAS_3 True" in _streams(cells[-1])[0][1]

    accuracies = []
    for run in passes:
        _check_pass(run)
        accuracies.append(float(re.search(r"test accuracy ([\d.]+)%", "".join(
            text for _, text in _streams(_cell(run, "nin_keras.train(")))).group(1)))
    assert abs(accuracies[0] - accuracies[1]) <= 2.0, accuracies  # the same seeded run, not a stale one
    out = tmp_path / "runs" / "quickstart"
    for name in ("train/model.keras", "train/curves.png", "confidence_maps.png", "export/model_int8.tflite",
                 "export/report.json"):
        assert (out / name).is_file(), name


def _check_pass(cells):
    """One pass's outputs: one progress display per long job, figures inline, the table as HTML, no chatter."""
    for cell in cells:
        for name, text in _streams(cell):
            assert "\r" not in text and "\b" not in text, f"a redrawn bar in the output of: {cell.source[:60]}"
            assert not NATIVE_LOG.search(text), f"TensorFlow's C++ log in the output of: {cell.source[:60]}\n{text}"

    train = _cell(cells, "nin_keras.train(")
    progress = [text for text in _texts(train, "display_data") if text.startswith("recipe ")]
    assert len(progress) == 1, _texts(train, "display_data")  # one display, updated in place
    assert re.search(r"^epoch 1/2 · \d+ steps · .*val_accuracy", progress[0], re.MULTILINE), progress[0]
    assert re.search(r"^epoch 2/2 · \d+ steps · ", progress[0], re.MULTILINE), progress[0]
    assert len(_texts(train, "display_data", "image/png")) == 1  # the training curves, inline
    assert sum(text.count("\n") for _, text in _streams(train)) <= 2

    maps = _cell(cells, "plot_confidence_maps(")
    assert _texts(maps, "display_data", "image/png")

    export = _cell(cells, "nin_keras.export(")
    displays = _texts(export, "display_data")
    assert len(displays) == 1, displays  # QAT, conversion and checks share one display
    assert re.search(r"^QAT fine-tuning of \w+\nepoch 1/1 · \d+ steps · ", displays[0], re.MULTILINE), displays[0]
    assert "model_int8.tflite" in displays[0]
    table = _texts(export, "execute_result", "text/html")
    assert table and "model_float16.tflite" in table[0] and "agreement" in table[0]

    litert = _cell(cells, "Interpreter(")
    assert re.search(r"LiteRT int8 on \d+ test images: [\d.]+% correct", "".join(t for _, t in _streams(litert)))
