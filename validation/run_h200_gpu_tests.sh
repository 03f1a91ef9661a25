#!/usr/bin/env bash
# The GPU tests of the shipped decode (issue 22 item 3: every plan's launches match its kernels on the
# H200) after the given-indices fix of 4035ad6, which call (c) could not re-run. One device call:
#
#   bash validation/run_h200_gpu_tests.sh            (from the repository root; writes under $OUT)
#
# Kernels are compiled by pytest-xdist workers in parallel (the serial run of call (c) spent its 100 s
# cap compiling); each test is capped at TEST_CAP_S; the whole run at TESTS_S.
set -uo pipefail
OUT=${OUT:-validation/results/h200/gpu-tests}
TESTS_S=${TESTS_S:-240}
TEST_CAP_S=${TEST_CAP_S:-120}
WORKERS=${WORKERS:-8}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,driver_version --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  git rev-parse HEAD 2>/dev/null || true
} > "$OUT/gpu_tests_env.txt" 2>&1
timeout "$TESTS_S" python3 -m pytest -q -m gpu -rfE -p no:cacheprovider -n "$WORKERS" --timeout "$TEST_CAP_S" \
  tests/test_launch_counts.py tests/test_kernels_triton_decode.py tests/test_kv_cache.py tests/test_kernels_triton_prefill.py \
  > "$OUT/gpu_tests.log" 2>&1
echo "pytest exit: $?" >> "$OUT/gpu_tests.log"
tail -25 "$OUT/gpu_tests.log"
