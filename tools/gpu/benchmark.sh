#!/usr/bin/env bash
# NIN training on a GPU machine without TensorFlow: JAX and PyTorch, bfloat16 and float32, batch 256 to 2048,
# then Fashion-MNIST time to 92%/93% test accuracy, all within NIN_BENCH_BUDGET_S seconds (default 470: under
# 8 minutes). One JSON file a run in OUTDIR, plus OUTDIR/summary.json; a run that fails or is unavailable (no
# PyTorch, say) is recorded and the next one starts.
#
#   tools/gpu/fetch_wheels.sh                # once, on a machine with a package index: fills .whl/
#   tools/gpu/benchmark.sh OUTDIR            # on the GPU machine, from the repository root
#   NIN_BENCH_TINY=1 PYTHON=.venv/bin/python tools/gpu/benchmark.sh /tmp/out   # the same path, tiny, on a CPU
#
# Installs .whl/*.whl into SITE (default /tmp/site) with pip --no-index --no-deps, and puts SITE and the
# repository on PYTHONPATH. Fashion-MNIST: the four IDX .gz files in FASHION_MNIST_DIR (default
# .whl/fashion-mnist); without them that run is skipped.
set -uo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$1"
PYTHON="${PYTHON:-python3}"
SITE="${SITE:-/tmp/site}"
DATA="${FASHION_MNIST_DIR:-$ROOT/.whl/fashion-mnist}"
BUDGET="${NIN_BENCH_BUDGET_S:-470}"
START=$(date +%s)
mkdir -p "$OUT"

if ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$ROOT"/.whl/*.whl \
        || { echo "error: installing the wheels of .whl/ failed" >&2; exit 1; }
else
    echo "no wheels in .whl/ (tools/gpu/fetch_wheels.sh makes them): using the Keras this Python has"
fi
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL=3

if [ "${NIN_BENCH_TINY:-0}" = "1" ]; then  # the same runs at toy sizes, to check the script on a CPU
    BATCHES_BF16="8"; BATCHES_F32="8"; SIZES=(--steps 2 --warmup-steps 1 --width 0.05)
    TTA=(--batch-size 16 --epochs 1 --width 0.05 --limit 64); PER_RUN=300; PER_RUN_TTA=300
else
    BATCHES_BF16="256 1024 2048"; BATCHES_F32="256 2048"; SIZES=(--steps 30 --warmup-steps 5)
    TTA=(--batch-size 256 --epochs 12); PER_RUN=60; PER_RUN_TTA=200
fi

run() {  # run SECONDS NAME ARGS...: one benchmark, at most SECONDS and what is left of the budget
    local most="$1" name="$2"; shift 2
    local left=$((BUDGET - ($(date +%s) - START)))
    if [ "$left" -lt 20 ]; then
        echo "$name: skipped (budget spent)"
        echo "{\"run\": \"$name\", \"skipped\": \"budget spent\"}" > "$OUT/$name.json"
        return
    fi
    local limit=$((left < most ? left : most))
    local began=$(date +%s)
    timeout "$limit" "$PYTHON" "$ROOT/tools/benchmark_backends.py" "$@" --json "$OUT/$name.json" \
        > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name: exit $rc in $(( $(date +%s) - began )) s: $(tail -n 1 "$OUT/$name.log")"
    if [ ! -s "$OUT/$name.json" ]; then
        echo "{\"run\": \"$name\", \"exit\": $rc, \"log_tail\": $("$PYTHON" -c 'import json,sys; print(json.dumps(sys.stdin.read()[-2000:]))' < "$OUT/$name.log")}" > "$OUT/$name.json"
    fi
}

for backend in jax torch; do
    if ! "$PYTHON" -c "import $backend" >/dev/null 2>&1; then
        echo "$backend: unavailable (cannot import $backend): its runs are skipped"
        echo "{\"backend\": \"$backend\", \"available\": false, \"reason\": \"cannot import $backend\"}" \
            > "$OUT/${backend}_unavailable.json"
        continue
    fi
    for batch in $BATCHES_BF16; do run "$PER_RUN" "${backend}_cifar_bfloat16_b$batch" --backend "$backend" --variant cifar \
        --batch-size "$batch" --precision bfloat16 "${SIZES[@]}"; done
    for batch in $BATCHES_F32; do run "$PER_RUN" "${backend}_cifar_float32_b$batch" --backend "$backend" --variant cifar \
        --batch-size "$batch" --precision float32 "${SIZES[@]}"; done
    if [ -f "$DATA/train-images-idx3-ubyte.gz" ]; then
        run "$PER_RUN_TTA" "${backend}_fashion_mnist_bfloat16" --backend "$backend" --precision bfloat16 --data-dir "$DATA" \
            "${TTA[@]}"
    else
        echo "$backend: no Fashion-MNIST in $DATA: time-to-accuracy run skipped"
    fi
done

"$PYTHON" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
runs = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.name != "summary.json"}
(out / "summary.json").write_text(json.dumps(runs, indent=2) + "\n")
for name, r in runs.items():
    figures = {k: r[k] for k in ("train_images_per_s", "peak_memory_bytes", "seconds_to_92", "seconds_to_93",
                                 "final_test_accuracy", "device") if k in r}
    print(f"{name}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
          if figures else f"{name}: {r.get('reason') or r.get('skipped') or 'failed'}")
PY
echo "total $(( $(date +%s) - START )) s; results in $OUT"
