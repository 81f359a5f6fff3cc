"""Checks a .tflite before this process hands it to LiteRT, so that no file, however crafted, crashes it.

LiteRT trusts the files it loads: a crafted file that passes its flatbuffer verifier can still crash the
process in `allocate_tensors` or `invoke` (a segfault: no exception, no message). So `check_tflite(content)`
first checks the structure in Python (`tflite_info.check_structure`: indices and sizes in range), then, for a
file this process did not write itself, loads it, allocates its tensors and runs it once on zeros in a child
process (the same Python, importing only ai_edge_litert and numpy). A child killed by a signal becomes
InvalidInputError("LiteRT crashed on F: the file is damaged or crafted ..."), and the caller goes on.

"Written by this process": bytes that nin-keras' own converter returned here (`remember_own_tflite`, called by
`to_tflite` and `with_metadata`). A file's own claims (a manifest.json beside it listing its hash) are not
trusted: whoever crafts a file can write its manifest too. Verdicts are kept per (sha256 of the bytes, thread
count) for the life of the process, so evaluating, benchmarking and cloning a runner check a file once.

What the child run proves is that LiteRT survives loading the file, allocating it, and running it on a zero
input at batch 1 and 2; not that every input is safe. See README.md for what is and is not safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading

from nin_keras.errors import InvalidInputError, one_line

# Seconds the child may take to load, allocate and run a model twice: far more than any image classifier
# needs (a 224x224 NIN runs in well under a second), so only a file that hangs LiteRT meets it.
CHILD_TIMEOUT_S = 120
# The child exits with this code when LiteRT raised (refused the file) rather than crashed.
_REFUSED = 3

# Runs in the child: only LiteRT and numpy are imported (no TensorFlow), so a check costs a fraction of a second.
# It does what TFLiteRunner does with an interpreter: details, signatures, allocation, an invoke at batch 1,
# a resize to batch 2 (when the batch is free) and another invoke.
_CHILD = r"""
import json, sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter

def run(content, threads):
    interpreter = Interpreter(model_content=content, num_threads=threads)
    interpreter.allocate_tensors()
    interpreter.get_tensor_details()
    for key in interpreter.get_signature_list():
        interpreter.get_signature_runner(key).get_output_details()
    inputs = interpreter.get_input_details()
    for batch in (None, 2):
        if batch is not None:
            free = [d for d in inputs if len(d["shape_signature"]) and d["shape_signature"][0] == -1]
            if not free:
                break
            for detail in free:
                interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]], strict=True)
            interpreter.allocate_tensors()
            inputs = interpreter.get_input_details()
        for detail in inputs:
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()
        for detail in interpreter.get_output_details():
            interpreter.get_tensor(detail["index"])

threads = None if sys.argv[1] == "None" else int(sys.argv[1])
content = sys.stdin.buffer.read()
try:
    run(content, threads)
except Exception as error:
    sys.stdout.write(json.dumps({"refused": f"{type(error).__name__}: {error}"}))
    sys.stdout.flush()
    sys.exit(%d)
sys.stdout.write(json.dumps({"ran": True}))
""" % _REFUSED

_OWN: set[str] = set()  # sha256 of .tflite bytes nin-keras' converter returned in this process
_VERDICTS: dict[tuple, str | None] = {}  # (sha256, threads) -> None (safe) or the refusal's message
_LOCK = threading.Lock()


def remember_own_tflite(content: bytes) -> bytes:
    """Marks `content` as written by nin-keras' own converter in this process (not checked in a child)."""
    with _LOCK:
        _OWN.add(hashlib.sha256(content).hexdigest())
    return content


def is_own_tflite(content: bytes) -> bool:
    """Whether nin-keras' own converter returned `content` in this process (`remember_own_tflite`)."""
    digest = hashlib.sha256(content).hexdigest()
    with _LOCK:
        return digest in _OWN


def check_tflite(content: bytes, label: str, *, num_threads: int | None = None, model=None) -> None:
    """Raises InvalidInputError when `content` (a .tflite's bytes) must not be loaded by LiteRT here.

    Args:
        content: the file's bytes: exactly what will be given to LiteRT afterwards.
        label: the file's name, for messages.
        num_threads: the interpreter threads the caller will use (the child uses the same).
        model: the file's unpacked flatbuffer when the caller has it (else it is read and checked here).

    Raises:
        InvalidInputError: the structure is damaged (see `tflite_info.check_structure`), LiteRT crashed,
            hung or refused the file in the child process. The message names the file.
    """
    digest = hashlib.sha256(content).hexdigest()
    key = (digest, num_threads)
    with _LOCK:
        known, verdict, own = key in _VERDICTS, _VERDICTS.get(key), digest in _OWN
    if not known:
        verdict = _verdict(content, label, num_threads, model, own)
        with _LOCK:
            _VERDICTS[key] = verdict
    if verdict is not None:
        raise InvalidInputError(verdict.replace(_LABEL, label))


_LABEL = "\x00file\x00"  # stands for the file's name in a cached verdict (the same bytes may have other names)


def _verdict(content: bytes, label: str, num_threads, model, own: bool) -> str | None:
    """None when `content` may be loaded; else the refusal, with `_LABEL` for the file's name."""
    if model is None:
        from nin_keras.exporting.tflite_info import read_model  # lazy: tflite_info is the heavier module

        try:
            read_model(content, label=_LABEL)
        except InvalidInputError as error:
            return str(error)
    return None if own else _run_in_child(content, num_threads)


def _run_in_child(content: bytes, num_threads) -> str | None:
    """Loads and runs `content` in a child process: None when LiteRT survived and ran it, else why not."""
    command = [sys.executable, "-c", _CHILD, str(num_threads)]
    again = "Export the model again, or get the file again from where it came from."
    try:
        child = subprocess.run(command, input=content, capture_output=True, timeout=CHILD_TIMEOUT_S,
                               env=_child_env(), check=False)
    except subprocess.TimeoutExpired:
        return (f"LiteRT did not finish loading and running {_LABEL} on one zero image in {CHILD_TIMEOUT_S} s (in "
                f"a child process): the file is damaged or crafted. {again}")
    except OSError as error:  # no Python to start (an embedded interpreter): the structural check must do
        logging.getLogger(__name__).warning("Could not start a child process to check a .tflite (%s); "
                                            "loading it after the structural check only.", error)
        return None
    if child.returncode == 0:
        return None
    if child.returncode == _REFUSED:
        try:
            reason = json.loads(child.stdout.decode("utf-8", "replace"))["refused"]
        except (ValueError, KeyError, TypeError):
            reason = "no reason given"
        reason = one_line(Exception(reason), 300).rstrip(".")
        return (f"LiteRT cannot run {_LABEL}: {reason}. The file is damaged, crafted, or uses operations this "
                f"runtime lacks. {again}")
    return (f"LiteRT crashed on {_LABEL}: the file is damaged or crafted ({_how_it_ended(child)}; it ran in a "
            f"child process, so nothing else was affected). {again}")


def _how_it_ended(child) -> str:
    code = child.returncode
    if code < 0:
        try:
            return f"signal {-code}, {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    last = [line for line in child.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return f"exit code {code}" + (f": {one_line(Exception(last[-1]), 200)}" if last else "")


def _child_env() -> dict:
    # No GPU probing and no TensorFlow logging in the child; the rest of the environment as it is.
    return dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")


__all__ = ["CHILD_TIMEOUT_S", "check_tflite", "is_own_tflite", "remember_own_tflite"]
