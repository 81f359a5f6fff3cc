"""`benchmark_interleaved` (several artifacts timed in alternating rounds) and `nin-keras benchmark infer --rounds`.

Also: the benchmark CLI's `--variant` choices come from a Keras-free list that must match the presets, and
`import nin_keras.cli` loads neither Keras nor TensorFlow.
"""

import json
import subprocess
import sys

import pytest

from nin_keras.errors import InvalidInputError

SHAPE = (8, 8, 1)
ROUNDS = 3


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny NIN exported to float32 and dynamic-range .tflite files (no calibration data needed)."""
    import keras

    import nin_keras

    keras.utils.set_random_seed(0)
    model = nin_keras.build_nin(4, variant="mnist", input_shape=SHAPE, width_multiplier=0.1, name="tiny")
    out = tmp_path_factory.mktemp("interleaved")
    result = nin_keras.export(model, out, targets="tflite_float32,tflite_dynamic", verify=False, progress=False)
    files = {name: out / entry["file"] for name, entry in result["manifest"]["targets"].items()}
    return model, files


def test_interleaved_rounds_alternate_and_medians_are_over_rounds(exported, monkeypatch):
    from nin_keras.verification import benchmark_interleaved, latency

    model, files = exported
    calls = []
    real = latency._time_batch1

    def recording(runner, *, runs, warmup):
        calls.append(runner.name)
        return real(runner, runs=runs, warmup=warmup)

    monkeypatch.setattr(latency, "_time_batch1", recording)
    rounds_seen = []
    artifacts = {"float32": files["tflite_float32"], "dynamic": files["tflite_dynamic"], "keras": model}
    result = benchmark_interleaved(artifacts, rounds=ROUNDS, runs=3, warmup=1, threads=1,
                                   on_round=lambda index, values: rounds_seen.append((index, values)))

    forward = ["model_float32.tflite", "model_dynamic.tflite", "tiny (in memory)"]
    backward = forward[::-1]
    assert calls == forward + backward + forward  # each round times each artifact once, order alternating
    assert [index for index, _ in rounds_seen] == list(range(ROUNDS))
    assert (result["rounds"], result["runs"], result["warmup"]) == (ROUNDS, 3, 1)
    assert result["order"] == ["float32", "dynamic", "keras"] and list(result["artifacts"]) == result["order"]
    for name, entry in result["artifacts"].items():
        per_round = entry["latency_ms_batch1_per_round"]
        assert len(per_round) == ROUNDS and all(value > 0 for value in per_round)
        assert entry["latency_ms_batch1_median"] == pytest.approx(sorted(per_round)[ROUNDS // 2], abs=1e-4)
    for name in ("float32", "dynamic"):  # .tflite: invoke() alone is timed beside the whole predict call
        entry = result["artifacts"][name]
        invoke = entry["latency_ms_batch1_invoke_per_round"]
        assert entry["kind"] == "tflite" and entry["threads"] == 1 and len(invoke) == ROUNDS
        assert entry["latency_ms_batch1_invoke_median"] == pytest.approx(sorted(invoke)[ROUNDS // 2], abs=1e-4)
        assert entry["latency_ms"] == entry["latency_ms_batch1_invoke_median"]
        assert rounds_seen[-1][1][name] == invoke[-1]
    keras_entry = result["artifacts"]["keras"]
    assert keras_entry["kind"] == "keras" and keras_entry["latency_ms_batch1_invoke_median"] is None
    assert keras_entry["latency_ms_batch1_invoke_per_round"] is None
    assert keras_entry["latency_ms"] == keras_entry["latency_ms_batch1_median"]
    assert result["artifacts"]["dynamic"]["precision"] != result["artifacts"]["float32"]["precision"]


def test_interleaved_rejects_bad_input(exported, tmp_path):
    from nin_keras.verification import benchmark_interleaved

    _, files = exported
    for kwargs, match in ((dict(rounds=0), "rounds"), (dict(runs=0), "runs"), (dict(warmup=-1), "warmup"),
                          (dict(threads=0), "threads"), (dict(rounds=True), "rounds")):
        with pytest.raises(InvalidInputError, match=match):
            benchmark_interleaved({"f": files["tflite_float32"]}, **kwargs)
    for artifacts in ({}, [files["tflite_float32"]]):
        with pytest.raises(InvalidInputError, match="non-empty dict"):
            benchmark_interleaved(artifacts)
    with pytest.raises(FileNotFoundError):  # every artifact is loaded before any timing
        benchmark_interleaved({"f": files["tflite_float32"], "missing": tmp_path / "missing.tflite"}, rounds=1)


def _timing(predict_ms, invoke_ms=None):
    return {"latency_ms_batch1_median": predict_ms, "latency_ms_batch1_invoke_median": invoke_ms}


def test_rank_by_latency_compares_on_the_measure_all_artifacts_share():
    from nin_keras.verification import rank_by_latency

    # All .tflite: invoke() decides, even where the whole predict call would order them the other way.
    ranked = rank_by_latency({"float32": _timing(3.0, 2.0), "int8": _timing(2.5, 2.6), "float16": _timing(3.1, 2.05)})
    assert ranked["measure"] == "invoke" and ranked["fastest"] == "float32"
    assert [entry["artifact"] for entry in ranked["ranking"]] == ["float32", "float16", "int8"]
    assert [entry["vs_fastest"] for entry in ranked["ranking"]] == [1.0, 1.025, 1.3]
    assert ranked["as_fast"] == ["float16"]  # within TIE_MARGIN of the fastest
    assert rank_by_latency({"a": _timing(1.0, 1.0), "b": _timing(1.2, 1.02)}, tie_margin=0.01)["as_fast"] == []

    # A Keras model has no invoke(): the whole predict call is the only shared measure.
    ranked = rank_by_latency({"int8": _timing(2.5, 0.5), "keras": _timing(1.5)})
    assert ranked["measure"] == "predict" and ranked["fastest"] == "keras"
    assert ranked["ranking"][1] == {"artifact": "int8", "latency_ms": 2.5, "vs_fastest": 1.667}

    for bad in ({}, [], {"a": {"latency_ms_batch1_invoke_median": 1.0}}, {"a": 3.0}):
        with pytest.raises(InvalidInputError):
            rank_by_latency(bad)


def test_a_runner_with_other_threads_is_reloaded(exported):
    from nin_keras.verification import benchmark_interleaved, load_artifact

    _, files = exported
    runner = load_artifact(files["tflite_float32"], num_threads=2)
    result = benchmark_interleaved({"f": runner}, rounds=1, runs=2, warmup=0, threads=1)
    assert result["artifacts"]["f"]["threads"] == 1


# ---------------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def _quiet_cli_restored():
    """`main` quiets TensorFlow for the whole process; undo that for the tests after these."""
    import logging

    from nin_keras import process_state

    quiet = process_state.QUIET
    levels = {name: logging.getLogger(name).level for name in ("tensorflow", "absl")}
    yield
    process_state.QUIET = quiet
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _latency_lines(out):
    return [line for line in out.strip().splitlines() if line.startswith("latency_ms_batch1_median=")]


def test_cli_rounds_times_the_artifacts_interleaved(exported, capsys, _quiet_cli_restored):
    from nin_keras.cli import main

    _, files = exported
    paths = [str(files["tflite_dynamic"]), str(files["tflite_float32"])]
    common = ["--rounds", str(ROUNDS), "--runs", "3", "--warmup", "1", "--threads", "1"]
    assert main(["benchmark", "infer", *paths, *common]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "invoke ms per round" in lines[0] and f"{ROUNDS} interleaved rounds" in lines[-4]
    assert lines[-2:] == _latency_lines("\n".join(lines))  # the contract: one final line per artifact, in order
    assert all(float(line.split("=")[1]) > 0 for line in lines[-2:])
    fastest_line = lines[-3]  # names the fastest of the two, by invoke(): both are .tflite files
    assert fastest_line.startswith("Fastest here: ") and "interpreter.invoke()" in fastest_line
    assert sum(fastest_line.count(path) for path in paths) == 2

    assert main(["benchmark", "infer", *paths, *common, "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in results] == paths and [r["artifact"] for r in results] == [
        "model_dynamic.tflite", "model_float32.tflite"]
    for result in results:
        assert result["rounds"] == ROUNDS and len(result["latency_ms_batch1_per_round"]) == ROUNDS
        assert result["latency_ms_batch1_median"] > 0 and result["latency_ms_batch1_invoke_median"] > 0
    fastest = [r for r in results if r["fastest"]]
    assert len(fastest) == 1 and fastest[0]["vs_fastest"] == 1.0
    assert fastest[0]["latency_ms_batch1_invoke_median"] == min(r["latency_ms_batch1_invoke_median"] for r in results)
    assert all(r["vs_fastest"] >= 1.0 for r in results)


def test_cli_one_round_is_the_plain_benchmark(exported, capsys, _quiet_cli_restored):
    from nin_keras.cli import main

    _, files = exported
    assert main(["benchmark", "infer", str(files["tflite_float32"]), "--runs", "2", "--warmup", "0", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert "throughput_images_per_s" in result and "latency_ms_batch1_per_round" not in result


def test_cli_rounds_refuses_an_artifact_given_twice(exported, capsys, _quiet_cli_restored):
    from nin_keras.cli import main

    path = str(exported[1]["tflite_float32"])
    assert main(["benchmark", "infer", path, path, "--rounds", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "more than once" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark", "infer", path, "--rounds", "0"])
    assert exit_info.value.code == 2


def test_variant_choices_match_the_presets(capsys):
    from nin_keras.cli import build_parser
    from nin_keras.models import PRESETS
    from nin_keras.choices import VARIANT_NAMES

    assert VARIANT_NAMES == tuple(PRESETS)
    parser = build_parser()
    for name in VARIANT_NAMES:
        assert parser.parse_args(["benchmark", "train", "--variant", name]).variant == name
    with pytest.raises(SystemExit):
        parser.parse_args(["benchmark", "train", "--variant", "vgg"])
    assert "invalid choice: 'vgg'" in capsys.readouterr().err


def test_cli_imports_neither_keras_nor_tensorflow():
    code = ("import sys, nin_keras.cli; nin_keras.cli.build_parser(); "
            "loaded = [m for m in ('keras', 'tensorflow') if m in sys.modules]; "
            "assert not loaded, f'imported at CLI start-up: {loaded}'")
    subprocess.run([sys.executable, "-c", code], check=True)
