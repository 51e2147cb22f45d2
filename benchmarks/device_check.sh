#!/usr/bin/env bash
# The GPU measurements of issue 12 as one prepared script, for a lent device machine (about 6 minutes on one
# H100; no network there, a stock python3 with torch + CUDA).
#
#   bash benchmarks/device_check.sh --prepare   # here, with the project's .venv: writes .device/ (see below)
#   bash benchmarks/device_check.sh             # there, in the repo root, with .device carried; results in $OUT
#
# --prepare writes what the device machine lacks into .device/ (git-ignored): the production tile window of
# the bundled held-out scene as .npz (so the run needs no GDAL there) and the wheels of the project's imports
# on the model path that the device image does not hold (zarr and its codecs). Then:
#   run(command="bash benchmarks/device_check.sh", carry=[".device"], timeout_s=480)
# What it measures, each step under its own time limit so one slow step still leaves the others' results:
#   1. tiles/s and granules per GPU-hour per batch size (bf16, then fp32) with the shipped weights, and each
#      batch's tile 0 against its batch-1 pixels (are the networks batch-invariant on this device?);
#   2. issue 12's speed ratios on the device: the whole learned method per 480 px output tile, paper and
#      small presets, against the fp32 batch-1 eager run of the same networks at 20 steps.
set -uo pipefail
cd "$(dirname "$0")/.."
WINDOW=120
if [[ "${1:-}" == "--prepare" ]]; then
    set -e
    py=${PYTHON:-.venv/bin/python}
    mkdir -p .device/whl
    "$py" -m benchmarks.model_speed --window "$WINDOW" --save-window .device/window.npz
    # cp312: the device image's python (KINDS.md); versions pinned to what this project's .venv resolves
    pins=$("$py" -m pip list --format=freeze 2>/dev/null | grep -iE '^(zarr|numcodecs|donfig|google-crc32c)==')
    # shellcheck disable=SC2086  # one argument per pin
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .device/whl $pins
    du -sh .device
    exit 0
fi

out=${OUT:-device_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=17179869184
if compgen -G ".device/whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .device/whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
[[ -f .device/window.npz ]] || { echo "no .device/window.npz: run --prepare here and carry .device" >&2; exit 2; }
{ nvidia-smi -L; python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'; } |
    tee "$out/device.txt"

step() {  # step NAME SECONDS CMD...: run with a time limit, keep its log, go on whatever happens
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s)"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
    echo "== $name: exit ${PIPESTATUS[0]}"
}
speed="python3 -m benchmarks.model_speed --device cuda --scene .device/window.npz --window $WINDOW --repeats 3"
step speed_bf16 100 $speed --batches 1,4,16,32 --precision bf16 --json "$out/model_speed_cuda_bf16.json"
step speed_fp32 80 $speed --batches 1,16 --precision fp32 --json "$out/model_speed_cuda_fp32.json"
step compare 200 $speed --compare --presets small,paper --warmup 1 --json "$out/model_speed_compare_cuda.json"
