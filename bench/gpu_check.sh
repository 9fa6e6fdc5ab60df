#!/usr/bin/env bash
# One call on the GPU machine: the CUDA tests (compiled kernels, no interpreter) and
# every benchmark; a tarball of logs and results, the summary and the results table go
# to "$OUT" (default bench/results/gpu_check).
# Run from the repository root: `bash bench/gpu_check.sh`.
# Each step has its own time limit (seconds, overridable by env) so that one slow step
# (torch.compile baselines) cannot eat the others; the whole run is sized to fit ~10 min.
# Steps run in order of importance; a failing step is recorded and the next one runs.
set -u
cd "$(dirname "$0")/.."
# Logs and results go to $WORK; the device tool returns at most 8 files from $OUT, so
# $OUT gets one tarball of $WORK plus the summary and the results table.
OUT="${OUT:-bench/results/gpu_check}"
WORK="$(mktemp -d)"
RESULTS="$WORK/results"
mkdir -p "$OUT" "$RESULTS"
PYTHON="${PYTHON:-python3}"
unset TRITON_INTERPRET  # the kernels must run compiled on the GPU
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # import xlm_fast / triton_kernels even if pip fails
SUMMARY="$WORK/summary.txt"
: > "$SUMMARY"

step() {  # step NAME LIMIT_S COMMAND...: runs COMMAND with a time limit, log in $WORK/NAME.log
    local name="$1" limit="$2"
    shift 2
    local start=$SECONDS
    timeout --signal=INT --kill-after=20 "$limit" "$@" > "$WORK/$name.log" 2>&1
    local rc=$?
    echo "$name: rc=$rc ($((SECONDS - start)) s, limit $limit s)" | tee -a "$SUMMARY"
}

{
    nvidia-smi || true
    "$PYTHON" -c "import sys, torch, triton, transformers; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name()); print('triton', triton.__version__, 'transformers', transformers.__version__)"
} > "$WORK/environment.txt" 2>&1

step install 120 "$PYTHON" -m pip install -e . --no-deps --no-build-isolation
# The GPU image has no sacremoses/subword-nmt: the tokenizer's tests (CPU-only, run by CI)
# are left out there rather than failing at collection.
TOKENIZER_TESTS=()
"$PYTHON" -c "import sacremoses, subword_nmt" 2>/dev/null || \
    TOKENIZER_TESTS=(--ignore=tests/test_tokenization_xlm.py --ignore=tests/test_demo.py)
step tests "${TESTS_LIMIT:-150}" "$PYTHON" -m pytest -q -ra tests/ "${TOKENIZER_TESTS[@]}" --junitxml="$WORK/tests.xml"
step bench_attention "${ATTENTION_LIMIT:-60}" "$PYTHON" bench/bench_attention.py --out-dir "$RESULTS"
step bench_layer_norm "${LAYER_NORM_LIMIT:-30}" "$PYTHON" bench/bench_layer_norm.py --out-dir "$RESULTS"
# compiled baselines only where DESIGN.md has reference numbers (en-2048, bf16): compiling
# every model, dtype and shape would take far longer than the rest together
step bench_model_en2048_bf16 "${MODEL_COMPILED_LIMIT:-210}" "$PYTHON" bench/bench_xlm_model.py --out-dir "$RESULTS" \
    --configs en-2048 --dtypes bf16 --stem xlm_model_en-2048_bf16
step bench_model_100-1280_bf16 "${MODEL_LIMIT:-60}" "$PYTHON" bench/bench_xlm_model.py --out-dir "$RESULTS" \
    --configs 100-1280 --dtypes bf16 --no-compile --stem xlm_model_100-1280_bf16
step bench_model_fp16 "${MODEL_LIMIT:-60}" "$PYTHON" bench/bench_xlm_model.py --out-dir "$RESULTS" \
    --dtypes fp16 --no-compile --stem xlm_model_fp16
step pytest_benchmark "${PYTEST_BENCH_LIMIT:-90}" "$PYTHON" -m pytest -q bench/bench_attention.py \
    bench/bench_layer_norm.py bench/bench_xlm_model.py --benchmark-only --benchmark-json="$WORK/pytest_benchmark.json"

cat "$RESULTS"/*.md > "$WORK/results.md" 2>/dev/null || true
cp "$SUMMARY" "$WORK/results.md" "$OUT/" 2>/dev/null || true
tar czf "$OUT/gpu_check.tar.gz" -C "$WORK" .
cat "$SUMMARY"
tail -n 3 "$WORK/tests.log" 2>/dev/null || true
