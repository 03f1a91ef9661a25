#!/usr/bin/env bash
# Issue 22, fourth kernel round, one device call: the GPU tests of the decode kernels (launch counts,
# one-launch and three-launch paths, the cache step), then bench_decode_v3's check (correctness),
# tune (launch parameters and split counts of the one-launch kernel with rank selection, the
# per-head rank/sort ablation, since moved to the headrank mode) and targets modes. Writes at most 7 files under $OUT.
#
#   bash validation/run_h200_kernels_v4.sh            (repository root)
#   TESTS_S=0 MODES=check,targets,tables,longctx BENCH_S=420 bash validation/run_h200_kernels_v4.sh   (the final tables)
set -uo pipefail
OUT=${OUT:-validation/results/h200/kernels-v4}
TESTS_S=${TESTS_S:-150}
BENCH_S=${BENCH_S:-330}
MODES=${MODES:-check,tune,targets}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
} > "$OUT/env.txt" 2>&1
if [ "$TESTS_S" -gt 0 ]; then
timeout "$TESTS_S" python3 -m pytest -q -m gpu -rfE -p no:cacheprovider -n 8 --timeout 120 \
  tests/test_launch_counts.py tests/test_kernels_triton_decode.py tests/test_kv_cache.py > "$OUT/gpu_tests.log" 2>&1
echo "pytest exit: $?" >> "$OUT/gpu_tests.log"
tail -4 "$OUT/gpu_tests.log"
fi
timeout $(( BENCH_S + 60 )) python3 validation/bench_decode_v3.py "$OUT" --modes "$MODES" --budget-s "$BENCH_S" \
  --warm-workers 12 > "$OUT/bench.log" 2>&1
echo "bench exit: $?" | tee -a "$OUT/bench.log"
grep -E "check:|tune |target " "$OUT/bench.log" | tail -40
