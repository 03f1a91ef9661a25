#!/usr/bin/env bash
# Issue 22, fifth kernel round, one device call: with TESTS_S > 0 the GPU tests of the decode
# kernels (launch counts, the integer-address launches, the prefetches), bench_decode_v3's modes
# (MODES; the default, prefetch, is the ablation of the one-launch kernel's L2 prefetches before
# its selection, outputs compared bit for bit), the host time of one eager call and where it goes (validation/host_overhead.py), and with NCU=1 the
# Nsight Compute digest of the one-launch kernel against SDPA (validation/run_ncu_decode_v3.sh,
# packed into ncu.tar.gz), and with NCU_STALLS=1 the warp-state sections of Nsight Compute for
# three target shapes (validation/ncu_stalls.py; ncu_stalls_details.csv). Writes at most 8 files.
#
#   bash validation/run_h200_kernels_v5.sh                        (repository root)
#   TESTS_S=120 NCU=0 MODES=check,targets,tables BENCH_S=330 bash validation/run_h200_kernels_v5.sh
set -uo pipefail
OUT=${OUT:-validation/results/h200/kernels-v5}
BENCH_S=${BENCH_S:-200}
MODES=${MODES:-prefetch}
HOST=${HOST:-1}
NCU=${NCU:-1}
NCU_STALLS=${NCU_STALLS:-0}
TESTS_S=${TESTS_S:-0}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  echo "working tree at commit ${COMMIT:-unknown} (passed by the caller: the device copy's .git is not the workstation's)"
  echo "MODES=$MODES BENCH_S=$BENCH_S HOST=$HOST NCU=$NCU TESTS_S=$TESTS_S HRMG=${HRMG:-shipped} TABLE_DTYPES=${TABLE_DTYPES:-bfloat16,float16}"
} > "$OUT/env.txt" 2>&1
if [ "$TESTS_S" -gt 0 ]; then
timeout "$TESTS_S" python3 -m pytest -q -m gpu -rfE -p no:cacheprovider -n 8 --timeout 120 \
  tests/test_launch_counts.py tests/test_kernels_triton_decode.py tests/test_kv_cache.py \
  tests/test_decode_launch_path.py tests/test_decode_prefetch.py > "$OUT/gpu_tests.log" 2>&1
echo "pytest exit: $?" >> "$OUT/gpu_tests.log"
tail -4 "$OUT/gpu_tests.log"
fi
timeout $(( BENCH_S + 60 )) python3 validation/bench_decode_v3.py "$OUT" --modes "$MODES" --budget-s "$BENCH_S" \
  --warm-workers "${WARM:-12}" --table-dtypes "${TABLE_DTYPES:-bfloat16,float16}" \
  ${HRMG:+--head-rank-max-group "$HRMG"} > "$OUT/bench.log" 2>&1
echo "bench exit: $?" | tee -a "$OUT/bench.log"
grep -E "check:|prefetch |target |tables" "$OUT/bench.log" | tail -30
rm -f "$OUT/decode_v3_env.json"  # the same facts as env.txt; keeps the file count down
if [ "$HOST" = 1 ]; then
  timeout 120 python3 validation/host_overhead.py "$OUT/host_overhead.json" > "$OUT/host_overhead.log" 2>&1
  echo "host exit: $?" >> "$OUT/host_overhead.log"
  cat "$OUT/host_overhead.log"
  cat "$OUT/host_overhead.log" >> "$OUT/bench.log" && rm -f "$OUT/host_overhead.log"
fi
if [ "$NCU" = 1 ]; then
  NCU_OUT=/tmp/ncu_decode_v3
  OUT=$NCU_OUT bash validation/run_ncu_decode_v3.sh
  echo "ncu script exit: $?"
  tail -30 "$NCU_OUT/digest.md" 2>/dev/null
  tar -czf "$OUT/ncu.tar.gz" -C "$NCU_OUT" .
fi
if [ "$NCU_STALLS" = 1 ]; then
  NCU_BIN=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
  timeout "${NCU_STALLS_TIMEOUT_S:-150}" "$NCU_BIN" --target-processes all --clock-control none --nvtx \
    --nvtx-include "aqua_ncu/" --section SpeedOfLight --section WarpStateStats --section SchedulerStats \
    --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis \
    --export /tmp/ncu_stalls -f python3 validation/ncu_stalls.py > /tmp/ncu_stalls.log 2>&1
  echo "ncu stalls exit: $?" >> /tmp/ncu_stalls.log
  "$NCU_BIN" --import /tmp/ncu_stalls.ncu-rep --page details --csv > "$OUT/ncu_stalls_details.csv" 2>> /tmp/ncu_stalls.log
  tail -5 /tmp/ncu_stalls.log; cat /tmp/ncu_stalls.log >> "$OUT/bench.log"
fi
ls -la "$OUT"
