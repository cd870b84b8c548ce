#!/usr/bin/env bash
# The paper study and the throughput measurements on the GPU machine: one command there.
#
# The device machines run Keras on JAX (no TensorFlow), have no network and no keras, pydantic or
# pydicom, and get only this checkout (64 MiB a call, ../shared stays behind). So:
#
#   1. here, with network:      scripts/gpu-reproduce.sh stage [--ham]
#      downloads the missing wheels (CPython 3.12) and copies the anchor figures and the data into
#      .gpu-stage/ (git-ignored through .git/info/exclude). HAM10000 (62 MB) does not fit in one
#      call beside the rest: --ham splits it into .gpu-ham-1/ and .gpu-ham-2/.
#   2. there, through the device tool's run:
#        without HAM:  command "scripts/gpu-reproduce.sh run", carry [".gpu-stage"]
#        with HAM:     command "scripts/gpu-reproduce.sh receive", carry [".gpu-ham-1"], then at
#                      once (the machine stays warm 30 s) command "scripts/gpu-reproduce.sh run",
#                      carry [".gpu-stage", ".gpu-ham-2"]
#
# run: installs the wheels into /tmp/site (no index), sets KERAS_BACKEND=jax, checks TensorFlow is
# never imported, measures throughput against the anchor (bench/gpu_throughput.py), then runs
# `medrobust reproduce --config configs/reproduce-paper.yaml` from scratch weights (ImageNet
# weights cannot be downloaded there). Results come back in $OUT: gpu_throughput.json, logs, and
# the results folder as results.tar.gz.
#
# Settings (environment): TASKS="retinamnist pneumoniamnist" (default: every staged task),
# BENCH_POLICIES=mixed_bfloat16,float32 (default mixed_bfloat16, the anchor's goal row),
# SKIP_BENCH=1, SKIP_REPRODUCE=1, REPRODUCE_SET="seeds=[0] train.epochs=50" (extra --set),
# STUDY=configs/reproduce-paper.yaml, SMALL=1 with PYTHON=.venv/bin/python (CPU dry run here: no
# wheel install, the bench at tiny sizes; give a tiny STUDY).
set -euo pipefail
cd "$(dirname "$0")/.."

STAGE=.gpu-stage
DATA=${SHARED_DATA:-../shared/data}
ANCHOR=${ANCHOR:-../shared/bench/gpu_anchor-h100-result.json}
# What the device image lacks (its pip list: KINDS.md); versions as in this checkout's .venv.
WHEELS="keras==3.15.1 namex optree pydantic==2.14.4 pydantic-core==2.50.5 annotated-types
typing-inspection pydicom"
SMALL_DATA="retinamnist pneumoniamnist nih_chestxray14_1000_64"

stage() {
    grep -qxF "/$STAGE/" .git/info/exclude 2>/dev/null || printf '/%s/\n/.gpu-ham-*/\n/.gpu-data/\n/.gpu-cache/\n' "$STAGE" >>.git/info/exclude
    rm -rf "$STAGE" .gpu-ham-1 .gpu-ham-2
    mkdir -p "$STAGE/wheels" "$STAGE/data"
    # shellcheck disable=SC2086
    "${PIP_PYTHON:-.venv/bin/python}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d "$STAGE/wheels" $WHEELS
    cp "$ANCHOR" "$STAGE/"
    for name in $SMALL_DATA; do cp -r "$DATA/$name" "$STAGE/data/"; done
    if [[ "${1:-}" == "--ham" ]]; then
        mkdir -p .gpu-ham-1 .gpu-ham-2
        tar -C "$DATA" -cf - ham10000_200x150 | split -b 34m - .gpu-ham-1/ham.tar.part-
        mv .gpu-ham-1/ham.tar.part-a[b-z] .gpu-ham-2/
    fi
    du -sh "$STAGE" .gpu-ham-* 2>/dev/null
}

receive() {
    # Keep carried HAM parts in .gpu-data/ (ignored, so it stays while the machine is warm).
    mkdir -p .gpu-data/ham-parts
    for dir in .gpu-ham-1 .gpu-ham-2; do
        if [[ -d "$dir" ]]; then cp "$dir"/ham.tar.part-* .gpu-data/ham-parts/; fi
    done
    ls -l .gpu-data/ham-parts
}

run() {
    local out=${OUT:-var/gpu-out}
    mkdir -p "$out"
    if [[ -z "${SMALL:-}" ]]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site "$STAGE"/wheels/*.whl
        export PYTHONPATH="/tmp/site:$PWD"
    fi
    export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 JAX_COMPILATION_CACHE_DIR="$PWD/.gpu-cache"
    export MEDROBUST_DATA_DIR="$PWD/$STAGE/data"
    local python=${PYTHON:-python3}
    receive >/dev/null
    if ls .gpu-data/ham-parts/ham.tar.part-* >/dev/null 2>&1 && [[ ! -d "$MEDROBUST_DATA_DIR/ham10000_200x150" ]]; then
        cat .gpu-data/ham-parts/ham.tar.part-* | tar -C "$MEDROBUST_DATA_DIR" -xf -
    fi
    "$python" - <<'EOF' 2>&1 | tee "$out/devices.log"
import sys
import training.cli, training.reproduce, training.workflow, training.evaluation  # noqa: F401
from training.devices import describe_devices
assert "tensorflow" not in sys.modules, "TensorFlow was imported on the JAX path"
print(describe_devices())
EOF
    if [[ -z "${SKIP_BENCH:-}" ]]; then
        local bench_args=(--anchor "$STAGE/$(basename "$ANCHOR")" --out "$out/gpu_throughput.json")
        bench_args+=(--policies "${BENCH_POLICIES:-mixed_bfloat16}")
        if [[ -n "${SMALL:-}" ]]; then bench_args+=(--small); fi
        "$python" bench/gpu_throughput.py "${bench_args[@]}" 2>&1 | tee "$out/bench.log"
    fi
    if [[ -z "${SKIP_REPRODUCE:-}" ]]; then
        local study=${STUDY:-configs/reproduce-paper.yaml}
        local args=(--config "$study" --set weights=null --out var/gpu-results --work var/gpu-work)
        local tasks=${TASKS:-}
        if [[ -z "$tasks" ]]; then  # every task whose data was staged
            tasks="retinamnist nih-pneumothorax pneumoniamnist"
            [[ -d "$MEDROBUST_DATA_DIR/ham10000_200x150" ]] && tasks="ham10000 $tasks"
        fi
        local settings
        read -ra settings <<<"${REPRODUCE_SET:-}"  # words, never globbed ("seeds=[0]")
        for task in $tasks; do args+=(--task "$task"); done
        for setting in "${settings[@]}"; do args+=(--set "$setting"); done
        "$python" -m training.cli reproduce "${args[@]}" 2>&1 | tee "$out/reproduce.log"
        tar -C var -czf "$out/results.tar.gz" gpu-results
    fi
}

case "${1:-run}" in
    stage) shift; stage "$@" ;;
    receive) receive ;;
    run) run ;;
    *) echo "usage: $0 stage [--ham] | receive | run" >&2; exit 2 ;;
esac
