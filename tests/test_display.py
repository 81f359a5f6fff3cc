"""Progress, tables and figures: one display updated in place in a notebook, plain lines in logs.

The notebook itself runs in a real Jupyter kernel in test_notebook.py; here each output kind is driven directly.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import helpers


def _fit(display_kind, epochs=2):
    import keras

    from nin_keras.display import ProgressDisplay, fit_progress

    stream = io.StringIO()
    model = helpers.small_nin()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    images, labels = helpers.random_data(64)
    fit = fit_progress(1, base=keras.callbacks.Callback, title="a title line",
                       display=ProgressDisplay(kind=display_kind, stream=stream))
    model.fit(images, labels, validation_data=(images, labels), epochs=epochs, batch_size=16, verbose=0,
              callbacks=fit.callbacks)
    fit.close()
    return stream.getvalue(), fit.progress.display


def test_plain_output_is_one_line_per_epoch_without_redraws():
    text, _ = _fit("plain")
    lines = text.splitlines()
    assert lines[0] == "a title line"
    assert len(lines) == 3, lines  # the title and two epochs: no per-batch lines in a log
    for epoch, line in enumerate(lines[1:], start=1):
        assert line.startswith(f"epoch {epoch}/2 · 4 steps · "), line
        assert line.index("loss") < line.index("accuracy") < line.index("val_loss") < line.index("val_accuracy")
    assert "\r" not in text and "\b" not in text  # Keras' own bar writes these even into files


def test_notebook_display_is_one_output_redrawn_at_a_bounded_rate(monkeypatch):
    pytest.importorskip("IPython")
    from IPython import display as ipython_display

    from nin_keras.display import NOTEBOOK_REFRESH_S, ProgressDisplay

    shown = []

    class Handle:
        def update(self, bundle, raw):
            shown.append(bundle)

    def fake_display(bundle, raw, display_id):
        assert display_id is True
        shown.append(bundle)
        return Handle()

    monkeypatch.setattr(ipython_display, "display", fake_display)
    display = ProgressDisplay(kind="notebook")
    display.start("epoch 1/1", 1000)
    for step in range(1, 1001):  # far faster than the refresh interval: nearly all updates are skipped
        display.update(step, status=f"loss {1 / step:.4f}")
    assert "1000/1000" in display.text()  # the text is current even when the last redraw was skipped
    display.finish("epoch 1/1 · 1000 steps · 0.1 s · loss 0.0010")
    display.close()
    assert len(shown) <= 4 + 2 / NOTEBOOK_REFRESH_S, len(shown)
    assert shown[-1]["text/plain"] == "epoch 1/1 · 1000 steps · 0.1 s · loss 0.0010"
    assert "&lt;" not in shown[-1]["text/html"] and shown[-1]["text/html"].startswith("<pre")


def test_a_running_bar_shows_steps_and_status_in_the_text():
    from nin_keras.display import ProgressDisplay

    display = ProgressDisplay(kind="plain", stream=io.StringIO())
    display.log("done before")
    display.start("epoch 2/3", 10)
    display.update(4, status="loss 0.5000")
    text = display.text()
    assert text.splitlines()[0] == "done before"
    assert "epoch 2/3" in text and "4/10" in text and "loss 0.5000" in text
    display.finish()
    assert display.text() == "done before"


def test_metrics_are_formatted_loss_first_and_validation_last():
    from nin_keras.display import format_metrics

    logs = {"val_accuracy": 0.5, "accuracy": 0.75, "val_loss": 1.25, "loss": 0.5, "learning_rate": 1e-5,
            "note": "text"}
    assert format_metrics(logs) == ("loss 0.5000 · accuracy 0.7500 · learning_rate 1e-05 · val_loss 1.2500 · "
                                    "val_accuracy 0.5000")


def test_train_rejects_an_unknown_verbosity_before_writing(tmp_path):
    import nin_keras
    from nin_keras.errors import InvalidInputError

    images, labels = helpers.random_data(32)
    with pytest.raises(InvalidInputError, match="verbose"):
        nin_keras.train(helpers.small_nin(), (images, labels), epochs=1, out_dir=tmp_path / "run", verbose=3)
    assert not (tmp_path / "run").exists()


def test_report_table_prints_every_column_in_logs():
    from nin_keras.display import show_table
    from nin_keras.verification import report_table

    rows = [{"artifact": "model_int8.tflite", "precision": "int8", "size_bytes": 35_000, "accuracy": 0.9,
             "agreement": 0.99, "latency_ms_batch1_median": 0.1, "throughput_images_per_s": 5000.0}]
    stream = io.StringIO()
    show_table(report_table(rows), stream=stream)
    text = stream.getvalue()
    for cell in ("model_int8.tflite", "int8", "35.00 kB", "90.00%", "99.00%", "0.100", "5,000"):
        assert cell in text, text


def test_take_keeps_whole_batches_of_each_split():
    import nin_keras

    data = nin_keras.load_dataset("digits", batch_size=64)
    small = data.take(train=100, test=64)
    assert sum(1 for _ in small.train) == 2 and sum(1 for _ in small.test) == 1
    assert small.info["sizes"]["train"] == 128 and small.info["sizes"]["test"] == 64
    assert small.info["sizes"]["validation"] == data.info["sizes"]["validation"]
    images, _ = next(iter(small.test))
    np.testing.assert_array_equal(images.numpy(), next(iter(data.test))[0].numpy())  # the same first images
    with pytest.raises(ValueError, match="whole number"):
        data.take(train=0)
