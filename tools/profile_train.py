#!/usr/bin/env python
"""Training-step profile: where a step's time goes, op by op, against a bare-convolution ceiling and the MAC peak.

Run from the repository root, on a quiet machine for the published numbers:

    .venv/bin/python tools/profile_train.py                  # docs/benchmarks/training_profile.md and .json,
                                                             # and the profile section of docs/benchmarks/training.md
    .venv/bin/python tools/profile_train.py --precisions float32 --profile-steps 1 --rounds 1 --candidate-steps 1 \
        --candidates spe --no-onednn --out /tmp/p.md         # smoke
    .venv/bin/python tools/profile_train.py --render docs/benchmarks/training_profile.json  # re-render only

What it measures, for the step `nin_keras.training.benchmark_training` times (NIN with BN, SGD momentum 0.9,
one synthetic batch held in memory):

1. An op-by-op breakdown per precision from TensorFlow's profiler (`tf.profiler.experimental` over a few steps
   after warm-up; the XSpace it writes is parsed with TensorFlow's own xplane proto). Op executions are grouped
   into categories (conv forward, conv backward-input, conv backward-filter, batch norm, casts, pooling, ...).
   Ops on TensorFlow's two inter-op threads may overlap: overlapping time is split evenly between the ops that
   share it, so the categories add up to the time any op ran; "framework time between ops" is the profiled
   window minus that union.
2. oneDNN's verbose log of one training step in a child process (ONEDNN_VERBOSE=1): which implementation and
   ISA each primitive kind took (e.g. brg_conv_fwd:avx2 against avx512_core_bf16) and the share of reorders.
3. A ceiling: a bare `tf.function` loop of the same convolutions (same shapes, forward + backward-input +
   backward-filter, same precision), and the MAC-count peak (cores x clock x MACs per cycle for the ISA, an
   estimate).
4. Candidates, interleaved with the default in one process, several rounds, medians: steps_per_execution,
   XLA (jit_compile), batch size.

`--section-into FILE` (default: docs/benchmarks/training.md when --out is the default) replaces the text between
`<!-- profile:start -->` and `<!-- profile:end -->` there with a summary, leaving the rest byte-identical.
The last stdout line is `profile_step_ms=<float32 step, ms>`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench import ROOT, add_report_arguments, header_lines, log, name_list, run

# After _bench, which puts the checkout on sys.path (nin_keras.machine loads no TensorFlow):
from nin_keras.machine import cpu_info

TOOL = "tools/profile_train.py"
DEFAULT_OUT = ROOT / "docs" / "benchmarks" / "training_profile.md"
TRAINING_MD = ROOT / "docs" / "benchmarks" / "training.md"
SECTION_START, SECTION_END = "<!-- profile:start -->", "<!-- profile:end -->"
FRAMEWORK = "framework time between ops"
CATEGORIES = ("conv forward", "conv backward-input", "conv backward-filter", "bias add (fwd/grad)",
              "batch norm forward", "batch norm gradient", "casts", "pooling forward", "pooling gradient",
              "activations (ReLU fwd/grad)", "dropout (mask + scale, fwd/grad)", "optimizer update",
              "loss / softmax / metrics", "input (iterator)", "other ops", FRAMEWORK)
# Multiply-accumulates per cycle per core, by ISA and data type: an estimate from the vector width and two FMA
# pipes (AVX2: 2 x 8 fp32; AVX-512: 2 x 16 fp32; AVX512_BF16 / AMX dot products: twice the fp32 rate).
MACS_PER_CYCLE = {("avx2", "float32"): 16, ("avx512f", "float32"): 32, ("avx512_bf16", "bfloat16"): 64}
CANDIDATES = ("onednn", "spe", "jit", "batch")
LOCK_FILE = None  # --lock

# ---------------------------------------------------------------------------------------------------- parsing
def categorize(op_name: str, op_type: str) -> str:
    """The category of one TensorFlow op execution, from its type and its name scope."""
    grad = "gradient_tape" in op_name
    scope = op_name.lower()
    if "BackpropInput" in op_type:  # Conv2DBackpropInput, _MklNativeConv2DBackpropInput, depthwise
        return "conv backward-input"
    if "BackpropFilter" in op_type:
        return "conv backward-filter"
    if "Conv2D" in op_type or "Conv2d" in op_type:  # Conv2D, _FusedConv2D, _MklNative(Fused)Conv2D
        return "conv forward"
    if op_type == "Cast":
        return "casts"
    if op_type in ("IteratorGetNext", "IteratorGetNextAsOptional", "OptionalGetValue", "OptionalHasValue"):
        return "input (iterator)"
    if op_type.startswith("BiasAdd"):
        return "bias add (fwd/grad)"
    if "FusedBatchNorm" in op_type or "batch_norm" in scope or re.search(r"_bn(_\d+)?/", scope):
        return "batch norm gradient" if grad or "Grad" in op_type else "batch norm forward"
    if "Pool" in op_type or "pool" in scope or "/gap" in scope:
        return "pooling gradient" if grad or "Grad" in op_type else "pooling forward"
    if "dropout" in scope:
        return "dropout (mask + scale, fwd/grad)"
    if op_type in ("Relu", "ReluGrad", "Relu6", "Relu6Grad", "LeakyRelu", "LeakyReluGrad") or "relu" in scope:
        return "activations (ReLU fwd/grad)"
    if ("/sgd/" in scope or "optimizer" in scope or op_type.startswith("ResourceApply")
            or op_type in ("AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp")):
        return "optimizer update"
    if "softmax" in scope or "loss" in scope or "crossentropy" in scope or op_type in (
            "ArgMax", "Equal", "Sum", "DivNoNan", "Mean", "Softmax"):
        return "loss / softmax / metrics"
    return "other ops"


def _split_op_event(name: str):
    """(op name, op type) of a TensorFlow op event ("scope/name:Type"), or None for a runtime event."""
    if ":" not in name:
        return None
    op_name, op_type = name.rsplit(":", 1)
    if not op_name or ":" in op_name or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", op_type):
        return None  # "ExecutorState::Process" and other runtime events
    return op_name, op_type


def op_events(xspace, step_event="multi_step_on_iterator"):
    """Op executions and train-step calls of the host plane of an XSpace.

    Returns:
        (ops, steps): ops as (start_ps, end_ps, op_name, op_type), steps as (start_ps, end_ps) of each call
        into the compiled train function.
    """
    ops, steps = [], []
    for plane in xspace.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            base = line.timestamp_ns * 1000
            executor = line.name.startswith("tf_Compute") or line.name.startswith("tf_inter_op")
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                start = base + event.offset_ps
                if name == step_event:
                    steps.append((start, start + event.duration_ps))
                elif executor:
                    split = _split_op_event(name)
                    if split:
                        ops.append((start, start + event.duration_ps, *split))
    return ops, sorted(steps)


def breakdown(ops, window) -> dict:
    """Milliseconds per category inside `window` (start_ps, end_ps), overlap split evenly, plus FRAMEWORK.

    Sweeps the op intervals: in each stretch where k ops run at once, each op's category gets 1/k of it.
    """
    start, end = window
    edges = []
    for index, (a, b, _name, _type) in enumerate(ops):
        a, b = max(a, start), min(b, end)
        if b > a:
            edges += [(a, 1, index), (b, -1, index)]
    edges.sort(key=lambda edge: (edge[0], edge[1]))
    totals = dict.fromkeys(CATEGORIES, 0.0)
    category = {}
    running, last = set(), start
    for time_ps, kind, index in edges:
        if running and time_ps > last:
            share = (time_ps - last) / len(running)
            for other in running:
                if other not in category:
                    category[other] = categorize(ops[other][2], ops[other][3])
                totals[category[other]] += share
        last = time_ps
        (running.add if kind == 1 else running.discard)(index)
    busy = sum(totals.values())
    totals[FRAMEWORK] = max((end - start) - busy, 0.0)
    return {name: value / 1e9 for name, value in totals.items()}  # ps -> ms


def parse_onednn_verbose(text: str) -> dict:
    """Totals of oneDNN's verbose exec lines: {(primitive kind, implementation): [count, ms]} and the reorder share.

    A line reads `onednn_verbose,[timestamp,]v1?,primitive,exec,cpu,<kind>,<impl>,<prop>,...,<ms>`; older
    releases leave out "primitive" and the version field.
    """
    table = {}
    for line in text.splitlines():
        if not line.startswith(("onednn_verbose,", "dnnl_verbose,")):
            continue
        fields = line.strip().split(",")
        try:
            position = fields.index("exec")
        except ValueError:
            continue
        if len(fields) < position + 5:
            continue
        kind, impl = fields[position + 2], fields[position + 3]
        try:
            ms = float(fields[-1])
        except ValueError:
            continue
        entry = table.setdefault(f"{kind} | {impl}", [0, 0.0])
        entry[0] += 1
        entry[1] += ms
    total = sum(ms for _, ms in table.values())
    reorder = sum(ms for key, (_, ms) in table.items() if key.startswith("reorder"))
    return {"primitives": table, "total_ms": total, "reorder_ms": reorder,
            "reorder_share": reorder / total if total else 0.0}


def replace_section(text: str, section: str) -> str:
    """`text` with the part between the profile markers replaced by `section` (appended, with markers, if absent);
    everything outside the markers is kept byte for byte."""
    block = f"{SECTION_START}\n{section.strip()}\n{SECTION_END}"
    begin, finish = text.find(SECTION_START), text.find(SECTION_END)
    if begin == -1 or finish == -1 or finish < begin:
        return text + ("" if text.endswith("\n") else "\n") + "\n" + block + "\n"
    return text[:begin] + block + text[finish + len(SECTION_END):]


def keep_section(old_text: str | None, new_text: str) -> str:
    """`new_text` (a freshly rendered training.md) with the profile section of `old_text` carried over."""
    if not old_text:
        return new_text
    begin, finish = old_text.find(SECTION_START), old_text.find(SECTION_END)
    if begin == -1 or finish == -1 or finish < begin:
        return new_text
    return replace_section(new_text, old_text[begin + len(SECTION_START):finish])


# ---------------------------------------------------------------------------------------------------- measuring
def parse_args(argv=None):
    from nin_keras.choices import VARIANT_NAMES
    from nin_keras.cli.options import non_negative_int, positive_int

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="cifar", choices=VARIANT_NAMES)
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--precisions", default="float32,mixed_bfloat16",
                        help="comma-separated precisions to profile (default float32,mixed_bfloat16; auto allowed)")
    parser.add_argument("--warmup-steps", type=non_negative_int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--profile-steps", type=positive_int, default=3, help="profiled steps (default 3)")
    parser.add_argument("--ceiling-steps", type=positive_int, default=3, help="timed bare-conv loops (default 3)")
    parser.add_argument("--candidates", default=",".join(CANDIDATES),
                        help=f"comma-separated candidates to time against the default: {', '.join(CANDIDATES)} "
                             "or none (default all)")
    parser.add_argument("--candidate-steps", type=positive_int, default=8,
                        help="timed steps per candidate measurement (default 8)")
    parser.add_argument("--steps-per-execution", type=positive_int, default=8,
                        help="the steps_per_execution candidate (default 8)")
    parser.add_argument("--rounds", type=positive_int, default=3, help="interleaved candidate rounds (default 3)")
    parser.add_argument("--onednn", default="default,on",
                        help="comma-separated TF_ENABLE_ONEDNN_OPTS settings to profile float32 under: default (as "
                             "set when the tool starts), on, off (default: default,on)")
    parser.add_argument("--no-onednn", action="store_true", help="skip the oneDNN verbose child processes")
    parser.add_argument("--lock", default=None, metavar="FILE",
                        help="hold an exclusive flock on FILE during each measuring child process")
    parser.add_argument("--section-into", default=None, metavar="FILE.md",
                        help="replace the profile section of this file (default: docs/benchmarks/training.md "
                             "when --out is the default, else none)")
    add_report_arguments(parser, DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    args.candidates = [c.strip() for c in args.candidates.split(",") if c.strip() and c.strip() != "none"]
    args.onednn = name_list(parser, "--onednn", args.onednn, ONEDNN_SETTINGS)
    unknown = sorted(set(args.candidates) - set(CANDIDATES))
    if unknown:
        parser.error(f"unknown candidates {unknown}; choose from {', '.join(CANDIDATES)} or none")
    global LOCK_FILE
    LOCK_FILE = vars(args).pop("lock")  # how this machine serialises benchmarks, not a setting of the method
    if args.section_into is None and Path(args.out).resolve() == DEFAULT_OUT.resolve():
        args.section_into = str(TRAINING_MD.relative_to(ROOT))  # relative: the JSON names no machine path
    return args


def profile_precision(job) -> dict:
    """(Child process) The op breakdown of `job["profile_steps"]` training steps under the profiler."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from nin_keras.training.benchmark import benchmark_setup

    batch_size = job["batch_size"]
    model, dataset, choice = benchmark_setup(variant=job["variant"], batch_size=batch_size,
                                             precision=job["precision"])
    model.fit(dataset, epochs=1, steps_per_epoch=max(job["warmup_steps"], 1), verbose=0)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        began = time.perf_counter()
        model.fit(dataset, epochs=1, steps_per_epoch=job["profile_steps"], verbose=0)
        wall = time.perf_counter() - began
        tf.profiler.experimental.stop()
        files = sorted(Path(logdir).rglob("*.xplane.pb"))
        xspace = xplane_pb2.XSpace()
        xspace.ParseFromString(files[-1].read_bytes())
    ops, steps = op_events(xspace)
    if not steps:
        raise RuntimeError("the profile holds no train-step calls (multi_step_on_iterator)")
    window = (steps[0][0], steps[-1][1])
    count = len(steps)
    per_step = {name: ms / count for name, ms in breakdown(ops, window).items()}
    step_ms = (window[1] - window[0]) / 1e9 / count
    inside_calls = sum(b - a for a, b in steps) / 1e9 / count
    top = {}
    for a, b, op_name, op_type in ops:
        if a >= window[0] and b <= window[1]:
            parts = [part for part in op_name.split("/") if part not in ("StatefulPartitionedCall", "gradient_tape")]
            layer = parts[1] if len(parts) > 2 else parts[-1]
            top[f"{op_type} {layer}"] = top.get(f"{op_type} {layer}", 0.0) + (b - a) / 1e9 / count
    top_ops = sorted(top.items(), key=lambda item: -item[1])[:12]
    return {"precision": choice.policy, "precision_reason": choice.reason, "steps": count, "step_ms": step_ms,
            "images_per_s": batch_size * 1000 / step_ms, "wall_s": wall, "categories_ms": per_step,
            "outside_train_function_ms": step_ms - inside_calls, "top_ops_ms": top_ops,
            "op_types": sorted({op[3] for op in ops}),
            "params": int(model.count_params()), "conv_shapes": conv_shapes(model, batch_size)}


def conv_shapes(model, batch_size) -> list[dict]:
    """Every convolution of the model: input shape, kernel, strides, padding, forward MACs per image."""
    import keras

    shapes = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c = layer.input.shape
            _, oh, ow, oc = layer.output.shape
            kh, kw = layer.kernel_size
            shapes.append({"name": layer.name, "input": [batch_size, h, w, c], "kernel": [kh, kw, c, oc],
                           "strides": list(layer.strides), "padding": layer.padding.upper(),
                           "macs": int(oh * ow * kh * kw * c * oc)})
    return shapes


def measure_ceiling(job, shapes, precision) -> dict:
    """Bare TF convolutions of the model's shapes: forward, backward-input (not for the first) and backward-filter."""
    import tensorflow as tf

    dtype = tf.bfloat16 if "bfloat16" in precision else tf.float16 if "float16" in precision else tf.float32
    rng = tf.random.Generator.from_seed(0)
    tensors = []
    for shape in shapes:
        x = tf.cast(rng.normal(shape["input"]), dtype)
        kernel = tf.cast(rng.normal(shape["kernel"]) * 0.05, dtype)
        strides = [1, *shape["strides"], 1]
        out_shape = tf.nn.conv2d(x, kernel, strides, shape["padding"]).shape
        tensors.append((x, kernel, tf.cast(rng.normal(out_shape), dtype), strides, shape["padding"]))

    @tf.function
    def step():
        results = []
        for index, (x, kernel, grad, strides, padding) in enumerate(tensors):
            results.append(tf.nn.conv2d(x, kernel, strides, padding))
            if index:
                results.append(tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=kernel,
                                                              out_backprop=grad, strides=strides, padding=padding))
            results.append(tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(kernel),
                                                           out_backprop=grad, strides=strides, padding=padding))
        return [tf.reduce_sum(tf.cast(r[..., :1], tf.float32)) for r in results]

    [value.numpy() for value in step()]  # trace and warm up
    times = []
    for _ in range(job["ceiling_steps"]):
        began = time.perf_counter()
        [value.numpy() for value in step()]
        times.append(time.perf_counter() - began)
    ms = 1000 * statistics.median(times)
    batch_size = job["batch_size"]
    return {"precision": precision, "dtype": dtype.name, "step_ms": ms, "images_per_s": batch_size * 1000 / ms,
            "rounds_ms": [1000 * t for t in times]}


def mac_peak(machine, shapes, batch_size) -> dict:
    """The MAC-count peak for float32 and, where the CPU has it, bfloat16: an estimate, see MACS_PER_CYCLE."""
    forward = sum(s["macs"] for s in shapes)
    # forward + backward-filter for every convolution, backward-input for all but the first (input needs no grad)
    training = forward * 3 - (shapes[0]["macs"] if shapes else 0)
    ghz = clock_ghz()
    cores = machine.get("cores") or os.cpu_count() or 1
    simd = set(machine.get("simd") or [])
    peaks = {}
    for (isa, dtype), per_cycle in MACS_PER_CYCLE.items():  # ordered narrow to wide: the widest ISA wins
        if isa in simd:
            peaks[dtype] = {"isa": isa, "macs_per_cycle_per_core": per_cycle,
                            "gmacs_per_s": cores * ghz * per_cycle,
                            "images_per_s": cores * ghz * 1e9 * per_cycle / training}
    return {"forward_macs_per_image": forward, "training_macs_per_image": training, "clock_ghz": ghz,
            "cores": cores, "peaks": peaks, "batch_size": batch_size}


def clock_ghz() -> float:
    """The CPU clock from /proc/cpuinfo ("cpu MHz", the first core), else 2.0 GHz; an estimate either way."""
    try:
        return round(float(cpu_info()["cpu mhz"]) / 1000, 3)
    except (KeyError, ValueError):
        return 2.0


ONEDNN_SETTINGS = {"default": None, "on": "1", "off": "0"}


def child_env(onednn: str, verbose: bool = False) -> dict:
    """The environment of a measuring child: TF_ENABLE_ONEDNN_OPTS as asked ("default": as this process has it)."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    value = ONEDNN_SETTINGS[onednn]
    if value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = value
    if verbose:
        env["ONEDNN_VERBOSE"] = "1"
    return env


def run_child(args, job: dict, *, verbose: bool = False) -> tuple[dict, str]:
    """Runs one measurement in a fresh process (TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, at import), holding
    `--lock` while it runs so that measurements of several tools on one machine never overlap."""
    import fcntl

    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job)]
    lock = open(LOCK_FILE, "a") if LOCK_FILE else None  # noqa: SIM115 - held for the child's lifetime
    try:
        if lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
        completed = subprocess.run(command, capture_output=True, text=True, env=child_env(job["onednn"], verbose),
                                   cwd=ROOT, timeout=3600, check=False)
    finally:
        if lock:
            lock.close()
    if completed.returncode != 0:
        raise RuntimeError(f"measurement {job} failed: {completed.stderr[-3000:]}")
    line = next(l for l in reversed(completed.stdout.splitlines()) if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), completed.stdout + completed.stderr


def child_main(job: dict) -> int:
    """The child's side: one profile, one verbose run or one `benchmark_training` call; prints RESULT <json>."""
    from nin_keras.process_state import quiet_tensorflow

    quiet_tensorflow()
    if job["kind"] == "profile":
        result = profile_precision(job)
        result["ceiling"] = measure_ceiling(job, result["conv_shapes"], result["precision"])
    else:  # "bench" and "verbose"
        from nin_keras.training import benchmark_training

        result = benchmark_training(**job["kwargs"])
    result["onednn_opts_env"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def profile_jobs(args) -> list[dict]:
    base = {"kind": "profile", "variant": args.variant, "batch_size": args.batch_size,
            "warmup_steps": args.warmup_steps, "profile_steps": args.profile_steps, "ceiling_steps": args.ceiling_steps}
    jobs = []
    for precision in args.precisions:
        for onednn in args.onednn:
            if "bfloat16" in precision and onednn != args.onednn[0]:
                continue  # without AVX512_BF16 oneDNN refuses bf16 convolutions: the same Eigen path either way
            jobs.append(dict(base, precision=precision, onednn=onednn))
    return jobs


def label(precision: str, onednn: str) -> str:
    return precision if onednn == "default" else f"{precision}, TF_ENABLE_ONEDNN_OPTS={ONEDNN_SETTINGS[onednn]}"


def measure_candidates(args) -> dict:
    base = dict(variant=args.variant, batch_size=args.batch_size, steps=args.candidate_steps, warmup_steps=2,
                precision="auto")
    configs = {"default (steps_per_execution 1, no XLA)": ("default", base)}
    if "onednn" in args.candidates:
        configs["TF_ENABLE_ONEDNN_OPTS=1"] = ("on", base)
    if "spe" in args.candidates:
        configs[f"steps_per_execution {args.steps_per_execution}"] = ("default", dict(
            base, steps_per_execution=args.steps_per_execution, warmup_steps=args.steps_per_execution))
    if "jit" in args.candidates:
        configs["jit_compile (XLA)"] = ("default", dict(base, jit_compile=True))
    if "batch" in args.candidates:
        for size in (args.batch_size // 2, args.batch_size * 2):
            configs[f"batch {size}"] = ("default", dict(base, batch_size=size))
    names = list(configs)
    rounds = []
    for index in range(args.rounds):
        order = names if index % 2 == 0 else names[::-1]
        row = {}
        for name in order:
            onednn, kwargs = configs[name]
            result, _ = run_child(args, {"kind": "bench", "onednn": onednn, "kwargs": kwargs})
            row[name] = result
            log(f"round {index + 1}/{args.rounds}: {name}: {result['train_images_per_s']:.1f} img/s")
        rounds.append(row)
    medians = {name: statistics.median(r[name]["train_images_per_s"] for r in rounds) for name in names}
    return {"names": names, "rounds": rounds, "medians": medians}


def measure(args) -> dict:
    from _bench import machine_record

    profiles, ceilings, onednn = {}, {}, {}
    machine = machine_record()
    for job in profile_jobs(args):
        profile, _ = run_child(args, job)
        name = label(profile["precision"], job["onednn"])
        ceilings[name] = profile.pop("ceiling")
        profiles[name] = profile
        log(f"profile {name}: {profile['step_ms']:.0f} ms a step ({profile['images_per_s']:.1f} img/s under the "
            f"profiler); bare convolutions {ceilings[name]['step_ms']:.0f} ms")
        if not args.no_onednn:
            kwargs = dict(variant=args.variant, batch_size=args.batch_size, precision=profile["precision"],
                          steps=1, warmup_steps=1)
            _, output = run_child(args, {"kind": "verbose", "onednn": job["onednn"], "kwargs": kwargs}, verbose=True)
            onednn[name] = parse_onednn_verbose(output)
            onednn[name]["note"] = "2 training steps (1 warm-up, which includes kernel creation, + 1 timed)"
            log(f"oneDNN {name}: {sum(c for c, _ in onednn[name]['primitives'].values())} primitive executions, "
                f"reorders {100 * onednn[name]['reorder_share']:.1f}%")
    first = next(iter(profiles.values()))
    peak = mac_peak(machine, first["conv_shapes"], args.batch_size)
    candidates = measure_candidates(args) if args.candidates else None
    return {"profiles": profiles, "ceilings": ceilings, "onednn": onednn, "peak": peak, "candidates": candidates}


# ---------------------------------------------------------------------------------------------------- report
def breakdown_table(profiles) -> list[str]:
    names = list(profiles)
    lines = ["| category | " + " | ".join(f"{n}: ms / step | share" for n in names) + " |",
             "|---|" + "---:|---:|" * len(names)]
    for category in CATEGORIES:
        cells = []
        for name in names:
            ms, total = profiles[name]["categories_ms"][category], profiles[name]["step_ms"]
            cells.append(f"{ms:.1f} | {100 * ms / total:.1f}%")
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    lines.append("| **step (profiled window / steps)** | "
                 + " | ".join(f"**{profiles[n]['step_ms']:.1f}** | 100%" for n in names) + " |")
    return lines


def shares(results) -> dict:
    """Per precision: the profiled step as a share of the bare-conv ceiling and of the MAC peak."""
    out = {}
    peaks = results["peak"]["peaks"]
    for name, profile in results["profiles"].items():
        ceiling = results["ceilings"].get(name)
        dtype = "bfloat16" if "bfloat16" in name else "float32"
        peak = peaks.get(dtype)
        out[name] = {"of_ceiling": ceiling["step_ms"] / profile["step_ms"] if ceiling else None,
                     "of_peak": profile["images_per_s"] / peak["images_per_s"] if peak else None,
                     "ceiling_of_peak": ceiling["images_per_s"] / peak["images_per_s"] if ceiling and peak else None}
    return out


def summary_lines(results) -> list[str]:
    """The short breakdown placed in training.md (and at the top of the profile report)."""
    machine = results["machine"]
    simd = ", ".join(machine.get("simd") or []) or "no AVX2"
    lines = [f"Profiled by `{results['command']}` on {machine['date']}, {machine.get('cpu', 'CPU')} "
             f"(CPU features: {simd}; load average at start "
             f"{' / '.join(str(x) for x in machine.get('load_average') or [])}). "
             f"Full report: [training_profile.md](training_profile.md).", ""]
    ratio = shares(results)
    for name, profile in results["profiles"].items():
        cats = profile["categories_ms"]
        conv = sum(cats[c] for c in ("conv forward", "conv backward-input", "conv backward-filter"))
        step = profile["step_ms"]
        ranked = sorted(((ms, c) for c, ms in cats.items() if not c.startswith("conv")), reverse=True)[:4]
        share = ratio[name]
        text = (f"- **{name}** ({profile['precision_reason'].split(':')[0]}): {step:.0f} ms a step of "
                f"{results['settings']['batch_size']} under the profiler; convolutions {conv:.0f} ms "
                f"({100 * conv / step:.0f}%: forward {cats['conv forward']:.0f}, backward-input "
                f"{cats['conv backward-input']:.0f}, backward-filter {cats['conv backward-filter']:.0f}); then "
                + ", ".join(f"{c} {ms:.0f} ms ({100 * ms / step:.0f}%)" for ms, c in ranked) + ".")
        if share["of_ceiling"]:
            text += (f" The bare convolutions of the same shapes take {results['ceilings'][name]['step_ms']:.0f} ms: "
                     f"the step reaches **{100 * share['of_ceiling']:.0f}%** of that ceiling")
            if share["of_peak"]:
                text += f" and {100 * share['of_peak']:.0f}% of the MAC-count peak (estimate)"
            text += "."
            if share["of_ceiling"] > 1:
                text += (" (Above 100%: the bare loop, whose convolutions are all independent and contend for the "
                         "cores, ran slower than the step's own; it bounds nothing here, the MAC peak does.)")
        onednn = results["onednn"].get(name)
        if onednn and onednn["primitives"]:
            convs = sorted({k.split(" | ")[1] for k in onednn["primitives"] if k.startswith("convolution")})
            if convs:
                text += (f" oneDNN convolution kernels: {', '.join(f'`{c}`' for c in convs)}; reorders "
                         f"{100 * onednn['reorder_share']:.1f}% of oneDNN time.")
            else:
                kinds = sorted({k.split(" | ")[0] for k in onednn["primitives"]})
                text += (" No oneDNN convolution primitives: TensorFlow's own (Eigen) convolutions, oneDNN only as "
                         f"{', '.join(f'`{k}`' for k in kinds)}.")
        lines.append(text)
    candidates = results.get("candidates")
    if candidates:
        medians, default = candidates["medians"], candidates["names"][0]
        lines.append("- Candidates (auto precision, medians of interleaved rounds, img/s): "
                     + "; ".join(f"{n} {medians[n]:.1f} ({medians[n] / medians[default]:.2f}x)"
                                 for n in candidates["names"]) + ".")
    return lines


def render(results) -> str:
    s = results["settings"]
    lines = header_lines("Training-step profile", results) + [
        f"- Model: NIN `{s['variant']}` variant with BN, batch {s['batch_size']}, SGD momentum 0.9, one synthetic "
        f"batch held in memory (the step `nin_keras.training.benchmark_training` times); {s['warmup_steps']} "
        f"warm-up steps, then {s['profile_steps']} steps under `tf.profiler.experimental`.",
        "", "## Summary", ""] + summary_lines(results) + ["", "## Op breakdown (ms per step)", "",
        "Op executions from TensorFlow's profiler trace, grouped by op type and name scope; where ops on the two "
        "inter-op threads overlap, the overlap is split evenly between them, so the rows add up to the step. "
        f"'{FRAMEWORK}' is the profiled window minus the time any op ran (executor scheduling, the Python loop "
        "and callbacks between calls). The profiler itself slows the step a little.", ""]
    lines += breakdown_table(results["profiles"])
    for name, profile in results["profiles"].items():
        lines += ["", f"Heaviest ops, {name} (ms per step, summed over both threads, overlap not split):", "",
                  "| op (type, layer) | ms |", "|---|---:|"]
        lines += [f"| {op} | {ms:.1f} |" for op, ms in profile["top_ops_ms"]]
    peak, ratio = results["peak"], shares(results)
    lines += ["", "## Ceilings", "",
              f"Forward pass: {peak['forward_macs_per_image'] / 1e6:.1f} M MACs a {s['variant']} image; a training "
              f"step does about {peak['training_macs_per_image'] / 1e6:.1f} M (forward, backward-filter, and "
              f"backward-input for every convolution but the first). MAC-count peak = {peak['cores']} cores x "
              f"{peak['clock_ghz']:.2f} GHz (`cpu MHz` in /proc/cpuinfo, an estimate: turbo and AVX clocks differ) x "
              "MACs per cycle per core for the ISA. 'step / bare convs' above 100% means the bare loop ran "
              "slower than the step: it is then no ceiling.", "",
              "| precision | step (profiled) | bare convolutions (same shapes, tf.function) "
              "| MAC peak (ISA, MACs/cycle/core) | step / bare convs | step / peak | bare convs / peak |",
              "|---|---:|---:|---|---:|---:|---:|"]
    for name, profile in results["profiles"].items():
        ceiling = results["ceilings"].get(name)
        dtype = "bfloat16" if "bfloat16" in name else "float32"
        p = peak["peaks"].get(dtype)
        share = ratio[name]
        lines.append(
            f"| {name} | {profile['images_per_s']:.1f} img/s ({profile['step_ms']:.0f} ms) | "
            + (f"{ceiling['images_per_s']:.1f} img/s ({ceiling['step_ms']:.0f} ms) | " if ceiling else "- | ")
            + (f"{p['images_per_s']:.1f} img/s ({p['isa']}, {p['macs_per_cycle_per_core']}) | " if p
               else "no native support on this CPU | ")
            + " | ".join(f"{100 * v:.0f}%" if v else "-" for v in (share["of_ceiling"], share["of_peak"],
                                                                    share["ceiling_of_peak"])) + " |")
    if results["onednn"]:
        lines += ["", "## oneDNN primitives (ONEDNN_VERBOSE=1, child process)", ""]
        for name, onednn in results["onednn"].items():
            lines += [f"{name}: {onednn['note']}; oneDNN time {onednn['total_ms']:.0f} ms, reorders "
                      f"{onednn['reorder_ms']:.0f} ms (**{100 * onednn['reorder_share']:.1f}%**).", "",
                      "| primitive kind | implementation | executions | ms |", "|---|---|---:|---:|"]
            for key, (count, ms) in sorted(onednn["primitives"].items(), key=lambda item: -item[1][1]):
                kind, impl = key.split(" | ")
                lines.append(f"| {kind} | `{impl}` | {count} | {ms:.1f} |")
            lines.append("")
    candidates = results.get("candidates")
    if candidates:
        names, medians = candidates["names"], candidates["medians"]
        lines += ["", "## Candidates (img/s, auto precision, interleaved rounds, order alternates)", "",
                  "| round | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for index, row in enumerate(candidates["rounds"], start=1):
            lines.append(f"| {index} | " + " | ".join(f"{row[n]['train_images_per_s']:.1f}" for n in names) + " |")
        lines.append("| **median** | " + " | ".join(f"**{medians[n]:.1f}**" for n in names) + " |")
        lines.append("| vs default | " + " | ".join(f"{medians[n] / medians[names[0]]:.2f}x" for n in names) + " |")
    lines += ["", "## Notes", "",
              "Without AVX512_BF16, TensorFlow runs mixed_bfloat16 without native bfloat16 math: its figures here "
              "show what bfloat16 costs on such a CPU, not what it gains on one with the instructions. "
              "`nin-keras train --precision auto` picks float32 there.", ""]
    return "\n".join(lines)


def write_section(path, results) -> None:
    from nin_keras._atomic import write_text

    target = Path(path)
    old = target.read_text(encoding="utf-8") if target.exists() else ""
    section = "## Where a training step's time goes (tools/profile_train.py)\n\n" + "\n".join(summary_lines(results))
    write_text(target, replace_section(old, section))
    log(f"replaced the profile section of {target}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:
        return child_main(json.loads(argv[1]))
    args = parse_args(argv)
    results = run(TOOL, args, argv, measure, render)
    if args.section_into:
        write_section(ROOT / args.section_into, results)  # a relative path is under the checkout
    first = next(iter(results["profiles"].values()))
    print(f"profile_step_ms={first['step_ms']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
