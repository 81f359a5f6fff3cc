#!/usr/bin/env python
"""Op-by-op profile of the exported .tflite graphs: where int8 wins or loses against float32 on this CPU.

Run from the repository root, on a quiet machine for the published numbers:

    .venv/bin/python tools/profile_tflite.py                        # docs/benchmarks/int8_avx2.md and .json
    .venv/bin/python tools/profile_tflite.py --quick --out /tmp/p.md  # smoke check (a minute)
    .venv/bin/python tools/profile_tflite.py --render docs/benchmarks/int8_avx2.json  # re-render, no measuring

The Python LiteRT interpreter has no per-op profiler, so each operator is timed as a model of its own
(`single_op_model`): the graph read with the flatbuffer object API, operator i kept with its tensors (same
shapes, same quantization, same constant buffers), its non-constant inputs made the subgraph's inputs and its
outputs the subgraph's outputs. Every single-op model is timed with XNNPACK (LiteRT's default) and without
(`OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`); whether XNNPACK took the op is read from the
interpreter's node list after `allocate_tensors()` (a delegated op leaves a DELEGATE node). The per-op sum is
set against the whole graph's time: the gap is the cost between ops (and partitions between XNNPACK and
builtin kernels).

Whole-graph variants, timed interleaved in one process: the int8 file nin-keras exports (per-channel weights,
int8 input and output), uint8 I/O, float32 I/O, per-tensor weights, dynamic-range, float16, float32; 1 and 2
threads; `experimental_default_delegate_latest_features`; without XNNPACK; batch 8. The variants are converted
with `nin_keras.exporting.converter` (the exporter's own settings), from one seeded untrained model per paper
variant, calibrated on the same random raw-pixel images.

Timing: `interpreter.invoke()` only (what LiteRT's benchmark_model measures), `--runs` calls per model and
round after warm-up calls, rounds in alternating order; a model's time is the median over rounds of its
per-round medians.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

from _bench import ROOT, add_report_arguments, fill_defaults, header_lines, log, name_list, run

# After _bench, which puts the checkout on sys.path:
from nin_keras.cli.options import non_negative_int, positive_int
from nin_keras.verification.latency import SETTLE_SECONDS  # the pause benchmark_interleaved makes too

TOOL = "tools/profile_tflite.py"
PAPER_VARIANTS = ("cifar", "mnist")
# The ops after the last convolution: small, but each costs a call and, off XNNPACK, a partition.
TAIL_OPS = ("MEAN", "SOFTMAX", "QUANTIZE", "DEQUANTIZE")
# Files profiled op by op (the converted variants of the same name).
OP_FILES = ("float32", "int8", "dynamic", "int8_per_tensor")
# quick smoke run, full run
DEFAULTS = {"rounds": (2, 5), "runs": (5, 40), "calibration_images": (16, 200)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer rounds, runs and calibration "
                                                             "images; the numbers are NOT representative")
    parser.add_argument("--variants", default=",".join(PAPER_VARIANTS),
                        help="comma-separated paper variants to profile (default cifar,mnist)")
    parser.add_argument("--threads", type=positive_int, default=2,
                        help="interpreter threads of the per-op profile and the main variants (default 2)")
    parser.add_argument("--rounds", type=positive_int, default=None, help="interleaved rounds (default 5; quick 2)")
    parser.add_argument("--runs", type=positive_int, default=None,
                        help="timed invoke() calls per model and round (default 40; quick 5)")
    parser.add_argument("--calibration-images", type=positive_int, default=None,
                        help="random raw-pixel calibration images (default 200, as the exporter; quick 16)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of weights and images (default 0)")
    add_report_arguments(parser, ROOT / "docs" / "benchmarks" / "int8_avx2.md")
    args = parser.parse_args(argv)
    fill_defaults(args, DEFAULTS)
    args.warmup = max(2, args.runs // 10)
    args.variants = name_list(parser, "--variants", args.variants, PAPER_VARIANTS)
    return args


# ------------------------------------------------------------------------------------- single-op models


def single_op_model(model_bytes: bytes, op_index: int) -> bytes:
    """A .tflite holding operator `op_index` of `model_bytes`' first subgraph alone.

    The operator keeps its tensors (shapes, types, quantization) and its constant buffers; its non-constant
    inputs become the subgraph's inputs and its outputs the subgraph's outputs. Signatures and metadata are
    dropped (they name tensors of the whole graph).
    """
    from ai_edge_litert import schema_py_generated as schema  # lazy: the tool's argument parsing stays fast
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    graph = model.subgraphs[0]
    operator = copy.deepcopy(graph.operators[op_index])
    used = [int(i) for i in (*operator.inputs, *operator.outputs, *(operator.intermediates or [])) if i >= 0]
    new_index = {old: new for new, old in enumerate(dict.fromkeys(used))}
    buffers, tensors = [schema.BufferT()], []
    for old in new_index:
        tensor = copy.deepcopy(graph.tensors[old])
        data = model.buffers[tensor.buffer].data if tensor.buffer else None
        if data is not None and len(data):
            buffers.append(copy.deepcopy(model.buffers[tensor.buffer]))
            tensor.buffer = len(buffers) - 1
        else:
            tensor.buffer = 0
        tensors.append(tensor)

    def remap(indices):
        return [new_index[int(i)] if i >= 0 else -1 for i in indices]

    operator.inputs, operator.outputs = remap(operator.inputs), remap(operator.outputs)
    if operator.intermediates is not None:
        operator.intermediates = remap(operator.intermediates)
    single = schema.SubGraphT()
    single.tensors, single.operators, single.name = tensors, [operator], f"op{op_index}"
    single.inputs = [new_index[int(i)] for i in dict.fromkeys(graph.operators[op_index].inputs)
                     if i >= 0 and tensors[new_index[int(i)]].buffer == 0]
    single.outputs = list(operator.outputs)
    out = schema.ModelT()
    out.version, out.description = model.version, b"single op"
    out.operatorCodes, out.subgraphs, out.buffers = model.operatorCodes, [single], buffers
    return bytes(flatbuffer_utils.convert_object_to_bytearray(out))


def describe_ops(model_bytes: bytes) -> list[dict]:
    """One dict per operator of the first subgraph: index, op, a short description, MACs (batch 1)."""
    from ai_edge_litert.tools import flatbuffer_utils  # lazy: the tool's argument parsing stays fast

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    graph = model.subgraphs[0]
    rows = []
    for index, operator in enumerate(graph.operators):
        name = flatbuffer_utils.opcode_to_name(model, operator.opcodeIndex)
        shapes = [[int(d) for d in graph.tensors[i].shape] if i >= 0 else None for i in operator.inputs]
        out_shape = [int(d) for d in graph.tensors[operator.outputs[0]].shape]
        types = flatbuffer_utils.type_to_name(graph.tensors[operator.outputs[0]].type)
        detail, macs = _shape_text(shapes[0]) + " -> " + _shape_text(out_shape), 0
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(shapes) > 1:
            out_channels, kh, kw, in_channels = shapes[1]
            detail = f"{kh}x{kw} {shapes[0][-1]}->{out_shape[-1]} at {out_shape[1]}x{out_shape[2]}"
            macs = _product(out_shape[1:]) * kh * kw * (in_channels if name == "CONV_2D" else 1)
        elif name == "FULLY_CONNECTED" and len(shapes) > 1:
            macs = _product(shapes[1])
        rows.append({"index": index, "op": name, "detail": detail, "macs": macs, "output_type": types,
                     "per_channel": _per_channel(graph, operator, name)})
    return rows


def _per_channel(graph, operator, name):
    if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") or len(operator.inputs) < 2:
        return None
    quantization = graph.tensors[operator.inputs[1]].quantization
    scales = None if quantization is None else quantization.scale
    return None if scales is None or len(scales) == 0 else len(scales) > 1


def _product(values) -> int:
    result = 1
    for value in values:
        result *= int(value)
    return result


def _shape_text(shape) -> str:
    return "x".join(str(d) for d in shape[1:]) if shape else "-"


# ----------------------------------------------------------------------------------------------- timing


def make_interpreter(model_bytes: bytes, *, threads: int, xnnpack: bool = True, latest: bool = False,
                     batch: int = 1):
    """A LiteRT interpreter, allocated, inputs filled with random values of their dtype."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType  # lazy: the tool's parsing stays fast

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_content=model_bytes, num_threads=threads, experimental_op_resolver_type=resolver,
                              experimental_default_delegate_latest_features=latest)
    if batch != 1:
        for detail in interpreter.get_input_details():
            interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]])
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        dtype = np.dtype(detail["dtype"])
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            values = rng.integers(info.min, info.max, detail["shape"], endpoint=True).astype(dtype)
        else:
            values = rng.uniform(0, 255, detail["shape"]).astype(dtype)
        interpreter.set_tensor(detail["index"], values)
    return interpreter


def delegated_nodes(interpreter) -> int:
    """DELEGATE nodes in the execution plan: 0 when XNNPACK took nothing, else its partitions."""
    return sum(1 for op in interpreter._get_ops_details() if op["op_name"] == "DELEGATE")


def time_interleaved(interpreters: dict, *, rounds: int, runs: int, warmup: int) -> dict:
    """name -> {ms: median over rounds of per-round median invoke() ms, per_round: [...]}.

    Each round times every interpreter once, in the given order on even rounds and reversed on odd ones, after a
    pause (SETTLE_SECONDS) and `warmup` untimed calls.
    """
    names, per_round = list(interpreters), {name: [] for name in interpreters}
    for index in range(rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            interpreter = interpreters[name]
            time.sleep(SETTLE_SECONDS)
            for _ in range(warmup):
                interpreter.invoke()
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                interpreter.invoke()
                times.append(1000 * (time.perf_counter() - started))
            per_round[name].append(statistics.median(times))
    return {name: {"ms": statistics.median(values), "per_round": values} for name, values in per_round.items()}


# -------------------------------------------------------------------------------------------- measuring


def convert_variants(variant: str, args) -> dict:
    """name -> .tflite bytes of one seeded, untrained paper model in every setting compared."""
    import keras
    import numpy as np
    import tensorflow as tf

    import nin_keras
    from nin_keras.exporting.converter import configure_converter, convert, keras_converter, to_tflite
    from nin_keras.exporting.int8_layers import mixed_int8_tflite

    keras.utils.set_random_seed(args.seed)
    model = nin_keras.build_nin(10, variant=variant, name=f"nin_{variant}")
    shape = tuple(model.input_shape[1:])
    images = np.random.default_rng(args.seed).uniform(0, 255, (args.calibration_images, *shape)).astype("float32")
    files = {mode: to_tflite(model, mode, representative_images=images)
             for mode in ("float32", "float16", "dynamic", "int8", "uint8")}

    def int8_with(setting: str, change) -> bytes:
        with keras_converter(model) as converter:
            configure_converter(converter, "int8", representative_images=images)
            change(converter)
            return convert(converter, what=f"{model.name} (int8, {setting})")

    def float_io(converter):
        converter.inference_input_type = converter.inference_output_type = tf.float32

    def per_tensor(converter):
        converter._experimental_disable_per_channel = True  # the converter's only switch for per-tensor weights

    files["int8_float_io"] = int8_with("float32 I/O", float_io)
    files["int8_per_tensor"] = int8_with("per-tensor weights", per_tensor)
    first_conv = next(layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    files["int8_first_conv_float"] = mixed_int8_tflite(model, images, [first_conv])[0]
    log(f"{variant}: converted " + ", ".join(f"{k} {len(v):,} B" for k, v in files.items()))
    return {"model": model, "files": files}


# name -> (file, interpreter settings); float32 and int8 first and next to each other.
WHOLE_MODEL_RUNS = {
    "float32": ("float32", {}), "int8": ("int8", {}), "int8_uint8_io": ("uint8", {}),
    "int8_float_io": ("int8_float_io", {}), "int8_per_tensor": ("int8_per_tensor", {}),
    "int8_first_conv_float": ("int8_first_conv_float", {}),
    "dynamic": ("dynamic", {}), "float16": ("float16", {}),
    "float32_1_thread": ("float32", {"threads": 1}), "int8_1_thread": ("int8", {"threads": 1}),
    "dynamic_1_thread": ("dynamic", {"threads": 1}),
    "float32_latest_features": ("float32", {"latest": True}), "int8_latest_features": ("int8", {"latest": True}),
    "float32_no_xnnpack": ("float32", {"xnnpack": False}), "int8_no_xnnpack": ("int8", {"xnnpack": False}),
    "dynamic_no_xnnpack": ("dynamic", {"xnnpack": False}),
    "float32_batch8": ("float32", {"batch": 8}), "int8_batch8": ("int8", {"batch": 8}),
}


def whole_models(files: dict, args) -> dict:
    interpreters, settings = {}, {}
    for name, (file, options) in WHOLE_MODEL_RUNS.items():
        options = {"threads": args.threads, **options}
        interpreters[name] = make_interpreter(files[file], **options)
        settings[name] = {"file": file, **options,
                          "xnnpack_partitions": delegated_nodes(interpreters[name])}
    timed = time_interleaved(interpreters, rounds=args.rounds, runs=args.runs, warmup=args.warmup)
    return {name: {**settings[name], **timed[name]} for name in interpreters}


def per_op(files: dict, args) -> dict:
    """file name -> op rows: ms_1_thread and xnnpack_ms (XNNPACK, 1 and `--threads` threads), builtin_ms
    (without XNNPACK, `--threads` threads) and whether XNNPACK took the op."""
    settings = {"ms_1_thread": {"threads": 1}, "xnnpack_ms": {"threads": args.threads},
                "builtin_ms": {"threads": args.threads, "xnnpack": False}}
    result = {}
    for file in OP_FILES:
        rows = describe_ops(files[file])
        interpreters = {}
        for row in rows:
            single = single_op_model(files[file], row["index"])
            for key, options in settings.items():
                interpreters[(row["index"], key)] = make_interpreter(single, **options)
            row["xnnpack"] = delegated_nodes(interpreters[(row["index"], "xnnpack_ms")]) > 0
        timed = time_interleaved(interpreters, rounds=args.rounds, runs=args.runs, warmup=args.warmup)
        for row in rows:
            row.update({key: timed[(row["index"], key)]["ms"] for key in settings})
        result[file] = rows
        log(f"  per-op {file}: sums " + ", ".join(f"{key} {sum(r[key] for r in rows):.3f}" for key in settings))
    return result


def profile_variant(variant: str, args) -> dict:
    converted = convert_variants(variant, args)
    files = converted["files"]
    log(f"{variant}: whole models, {len(WHOLE_MODEL_RUNS)} settings, {args.rounds} interleaved rounds")
    whole = whole_models(files, args)
    log(f"{variant}: " + ", ".join(f"{k} {v['ms']:.3f} ms" for k, v in whole.items()))
    log(f"{variant}: per-op models of {', '.join(OP_FILES)}")
    ops = per_op(files, args)
    return {"input_shape": [int(d) for d in converted["model"].input_shape[1:]],
            "parameters": int(converted["model"].count_params()),
            "sizes": {name: len(data) for name, data in files.items()}, "whole": whole, "ops": ops}


# The cifar variant's first convolution (5x5, 192 filters at 32x32) with these input channel counts.
SWEEP_CHANNELS = (1, 2, 3, 4, 8, 16)


def input_channel_sweep(args) -> list[dict]:
    """One 5x5 convolution, 192 filters at 32x32, float32 against int8, as the input channels grow.

    A kernel that pads each filter tap's input channels to its block costs the same from 1 channel to the block
    size; one that does not grows with the channels.
    """
    import keras
    import numpy as np

    from nin_keras.exporting.converter import to_tflite

    interpreters, macs = {}, {}
    for channels in SWEEP_CHANNELS:
        keras.utils.set_random_seed(args.seed)
        inputs = keras.Input((32, 32, channels))
        model = keras.Model(inputs, keras.layers.Conv2D(192, 5, padding="same", activation="relu")(inputs))
        images = np.random.default_rng(args.seed).uniform(0, 255, (16, 32, 32, channels)).astype("float32")
        for mode in ("float32", "int8"):
            interpreters[(channels, mode)] = make_interpreter(to_tflite(model, mode, representative_images=images),
                                                              threads=args.threads)
        macs[channels] = 32 * 32 * 192 * 25 * channels
    timed = time_interleaved(interpreters, rounds=args.rounds, runs=args.runs, warmup=args.warmup)
    rows = [{"channels": c, "macs": macs[c], "float32_ms": timed[(c, "float32")]["ms"],
             "int8_ms": timed[(c, "int8")]["ms"]} for c in SWEEP_CHANNELS]
    log("input-channel sweep: " + ", ".join(f"{r['channels']} ch {r['float32_ms']:.3f} / {r['int8_ms']:.3f} ms"
                                            for r in rows))
    return rows


def measure(args) -> dict:
    started = time.perf_counter()
    variants = {variant: profile_variant(variant, args) for variant in args.variants}
    sweep = input_channel_sweep(args)
    return {"variants": variants, "input_channel_sweep": sweep, "settle_seconds": SETTLE_SECONDS,
            "seconds": time.perf_counter() - started}


# ------------------------------------------------------------------------------------------------ report


def render(results) -> str:
    s = results["settings"]
    lines = header_lines("int8 against float32 on this CPU, op by op", results) + [
        f"- Timing: `interpreter.invoke()` only, {s['runs']} calls per model and round after a "
        f"{1000 * results['settle_seconds']:.0f} ms pause and {s['warmup']} warm-up calls, {s['rounds']} rounds in "
        "alternating order, median over rounds of per-round medians; "
        f"{s['threads']} threads unless a row says otherwise; batch 1 unless it says batch 8",
        f"- Models: `build_nin(10, variant=...)`, seeded (seed {s['seed']}) untrained weights, converted with "
        f"`nin_keras.exporting.converter` and calibrated on {s['calibration_images']} random raw-pixel images",
        f"- {results['seconds']:.0f} s in all", ""] + findings(results)
    for variant, r in results["variants"].items():
        lines += variant_section(variant, r)
    lines += sweep_section(results.get("input_channel_sweep") or [])
    lines += ["Reproduce: `" + results["command"] + "`", ""]
    return "\n".join(lines)


# The batch-1 files a user could pick, at the default thread count.
CANDIDATE_FILES = ("float32", "float16", "dynamic", "int8", "int8_uint8_io", "int8_float_io", "int8_per_tensor",
                   "int8_first_conv_float")


TIE = 1.03  # files within 3% of the fastest count as equally fast: rounds vary by about that much


def findings(results) -> list[str]:
    """What the tables below say, variant by variant, computed from the measurements."""
    lines = ["## Summary", ""]
    for variant, r in results["variants"].items():
        whole, f32, i8 = r["whole"], r["ops"]["float32"], r["ops"]["int8"]
        best = min(whole[name]["ms"] for name in CANDIDATE_FILES)
        fastest = sorted((n for n in CANDIDATE_FILES if whole[n]["ms"] <= TIE * best), key=lambda n: whole[n]["ms"])
        loss_1t = whole["int8_1_thread"]["ms"] - whole["float32_1_thread"]["ms"]
        first_1t = i8[0]["ms_1_thread"] - f32[0]["ms_1_thread"]
        best_int8 = min((n for n in CANDIDATE_FILES if n.startswith("int8") and n != "int8_first_conv_float"),
                        key=lambda name: whole[name]["ms"])
        lines.append(
            f"- {variant}: int8 / float32 = **{whole['int8']['ms'] / whole['float32']['ms']:.2f}x** "
            f"({whole['int8']['ms']:.3f} / {whole['float32']['ms']:.3f} ms, {whole['float32']['threads']} threads), "
            f"{whole['int8_1_thread']['ms'] / whole['float32_1_thread']['ms']:.2f}x at 1 thread, "
            f"{whole['int8_batch8']['ms'] / whole['float32_batch8']['ms']:.2f}x at batch 8. At 1 thread the first "
            f"convolution ({i8[0]['detail']}) costs {first_1t:+.3f} ms in int8 of the whole graph's {loss_1t:+.3f} ms. "
            f"Best full-int8 setting: {best_int8} at {whole[best_int8]['ms'] / whole['float32']['ms']:.2f}x; the first "
            f"convolution kept in float: {whole['int8_first_conv_float']['ms'] / whole['float32']['ms']:.2f}x. "
            f"Fastest here (within {100 * (TIE - 1):.0f}% of the best): "
            + ", ".join(f"**{name}** {whole[name]['ms']:.3f} ms" for name in fastest) + ".")
    return lines + [""]


WHOLE_DESCRIPTIONS = {
    "float32": "model_float32.tflite", "int8": "model_int8.tflite as exported: per-channel weights, int8 I/O",
    "int8_uint8_io": "full int8, uint8 I/O", "int8_float_io": "full int8, float32 I/O (QUANTIZE/DEQUANTIZE ops)",
    "int8_per_tensor": "full int8, per-tensor weights",
    "int8_first_conv_float": "int8, first convolution kept in float (model_int8_mixed.tflite)",
    "dynamic": "model_dynamic.tflite (dynamic range)",
    "float16": "model_float16.tflite",
}


def whole_table(variant: str, r: dict) -> list[str]:
    whole, base = r["whole"], r["whole"]["float32"]["ms"]
    lines = [f"### {variant}: whole graph", "",
             "| setting | file | threads | XNNPACK partitions | size | invoke ms | vs float32 (2 threads) | "
             "per-round ms |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for name, w in whole.items():
        what = WHOLE_DESCRIPTIONS.get(name, name.replace("_", " "))
        extra = (", batch 8" if w.get("batch", 1) != 1 else "") + (", latest features" if w.get("latest") else "")
        partitions = w["xnnpack_partitions"] if w.get("xnnpack", True) else "off"
        lines.append(f"| {what}{extra} | {w['file']} | {w['threads']} | {partitions} | {r['sizes'][w['file']]:,} B "
                     f"| **{w['ms']:.3f}** | {w['ms'] / base:.2f}x | "
                     + " / ".join(f"{x:.3f}" for x in w["per_round"]) + " |")
    f8, i8 = whole["float32_batch8"]["ms"], whole["int8_batch8"]["ms"]
    lines += ["", f"int8 / float32: batch 1 **{whole['int8']['ms'] / base:.2f}x**, batch 8 **{i8 / f8:.2f}x** "
              f"({i8 / 8:.3f} / {f8 / 8:.3f} ms an image); 1 thread "
              f"**{whole['int8_1_thread']['ms'] / whole['float32_1_thread']['ms']:.2f}x**; without XNNPACK "
              f"**{whole['int8_no_xnnpack']['ms'] / whole['float32_no_xnnpack']['ms']:.2f}x**.", ""]
    return lines


def op_table(variant: str, r: dict) -> list[str]:
    f32, i8, dyn, pt = (r["ops"][name] for name in OP_FILES)
    aligned = [row["op"] for row in f32] == [row["op"] for row in i8] == [row["op"] for row in dyn]
    lines = [f"### {variant}: op by op (each op as a single-op model, {len(i8)} ops)", ""]
    if not aligned:
        return lines + ["The float32, int8 and dynamic graphs have different ops; see the JSON.", ""]
    threads = r["whole"]["float32"]["threads"]
    lines += [f"ms: `invoke()` of the single-op model with XNNPACK at 1 thread, and at {threads} threads (t{threads}); "
              "GMAC/s at 1 thread; the last column without XNNPACK.", "",
              f"| # | op | shape | MMAC | float32 ms | int8 ms | int8 / float32 | float32 GMAC/s | int8 GMAC/s | "
              f"int8 per-tensor ms | dynamic ms | float32 ms t{threads} | int8 ms t{threads} | "
              f"XNNPACK f32 / i8 / dyn | int8 ms without XNNPACK t{threads} |",
              "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for a, b, c, d in zip(f32, i8, dyn, pt):
        lines.append(f"| {b['index']} | {b['op']} | {b['detail']} | {_mmac(b['macs'])} | {a['ms_1_thread']:.3f} | "
                     f"{b['ms_1_thread']:.3f} | {b['ms_1_thread'] / a['ms_1_thread']:.2f}x | {_gmacs(a)} | "
                     f"{_gmacs(b)} | {d['ms_1_thread']:.3f} | {c['ms_1_thread']:.3f} | {a['xnnpack_ms']:.3f} | "
                     f"{b['xnnpack_ms']:.3f} | {_yes(a)} / {_yes(b)} / {_yes(c)} | {b['builtin_ms']:.3f} |")
    return lines + [""] + op_summary(r, f32, i8, dyn, pt)


def op_summary(r: dict, f32, i8, dyn, pt) -> list[str]:
    def total(rows, ops, key):
        return sum(row[key] for row in rows if ops is None or row["op"] in ops)

    groups = (("first convolution", None), ("other convolutions", ("CONV_2D",)),
              ("pooling", ("MAX_POOL_2D", "AVERAGE_POOL_2D")), ("tail: " + ", ".join(TAIL_OPS), TAIL_OPS),
              ("sum of ops", None))
    threads = r["whole"]["float32"]["threads"]
    lines = []
    for key, whole_names in (("ms_1_thread", ("float32_1_thread", "int8_1_thread", None, "dynamic_1_thread")),
                             ("xnnpack_ms", ("float32", "int8", "int8_per_tensor", "dynamic"))):
        lines += [f"Groups, {1 if key == 'ms_1_thread' else threads} thread(s), XNNPACK (ms):", "",
                  "| group | float32 | int8 | int8 per-tensor | dynamic | int8 - float32 | int8 / float32 |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for label, ops in groups:
            if label == "first convolution":
                values = [rows[0][key] for rows in (f32, i8, pt, dyn)]
            elif label == "other convolutions":
                values = [total(rows, ops, key) - rows[0][key] for rows in (f32, i8, pt, dyn)]
            else:
                values = [total(rows, ops, key) for rows in (f32, i8, pt, dyn)]
            lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in values)
                         + f" | {values[1] - values[0]:+.3f} | {_ratio(values[1], values[0])} |")
        wholes = [r["whole"][name]["ms"] if name else None for name in whole_names]
        sums = [total(rows, None, key) for rows in (f32, i8, pt, dyn)]
        lines.append("| whole graph | " + " | ".join("-" if w is None else f"{w:.3f}" for w in wholes)
                     + f" | {wholes[1] - wholes[0]:+.3f} | {_ratio(wholes[1], wholes[0])} |")
        lines.append("| gap: whole minus sum of ops | " + " | ".join(
            "-" if w is None else f"{w - t:+.3f}" for w, t in zip(wholes, sums)) + " | | |")
        lines.append("")
    return lines


def _ratio(numerator, denominator) -> str:
    return f"{numerator / denominator:.2f}x" if denominator else "-"


def variant_section(variant: str, r: dict) -> list[str]:
    shape = "x".join(str(d) for d in r["input_shape"])
    return ([f"## {variant} variant, input {shape}, {r['parameters']:,} parameters", ""]
            + whole_table(variant, r) + op_table(variant, r))


def sweep_section(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["## One 5x5 convolution, 192 filters at 32x32, by input channels", "",
             "A Keras model of this one layer, converted like the models above (int8: per-channel weights, int8 I/O).",
             "", "| input channels | MMAC | float32 ms | int8 ms | int8 / float32 | float32 GMAC/s | int8 GMAC/s |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['channels']} | {r['macs'] / 1e6:.1f} | {r['float32_ms']:.3f} | {r['int8_ms']:.3f} | "
                     f"{r['int8_ms'] / r['float32_ms']:.2f}x | {r['macs'] / r['float32_ms'] / 1e6:.1f} | "
                     f"{r['macs'] / r['int8_ms'] / 1e6:.1f} |")
    return lines + [""]


def _yes(row) -> str:
    return "yes" if row.get("xnnpack") else "**no**"


def _mmac(macs) -> str:
    return f"{macs / 1e6:.1f}" if macs else "-"


def _gmacs(row) -> str:
    return f"{row['macs'] / row['ms_1_thread'] / 1e6:.1f}" if row["macs"] else "-"


def main(argv=None) -> int:
    args = parse_args(argv)
    run(TOOL, args, argv, measure, render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
