#!/usr/bin/env bash
# The one device call of the held-out validation (issue 12), in the order validation/README.md gives:
# the GPU tests, the calibration (with the implementation micro-benchmarks), the reduced in-sample
# grid, the frozen intervals, the held-out cases, the report. Every stage writes under $OUT as it goes
# (rows are streamed), and each is budgeted so that the whole command ends inside BUDGET_S seconds.
#
#   bash validation/run_h200_heldout.sh CASES.jsonl          (from the repository root)
#
# $OUT holds at most 8 files at any time (what comes back from the device): h200-heldout.toml (the
# calibrated profile, with its frozen intervals), insample.jsonl, heldout-<seed>.jsonl,
# insample_summary.md, heldout_summary.md, plan_status.toml, gpu_tests.log, and logs.txt (the
# environment, the warm-up, calibration, run and report output, appended as each stage goes).
set -uo pipefail
CASES=${1:?usage: run_h200_heldout.sh CASES.jsonl}
OUT=${OUT:-validation/results/h200/heldout-run}
PY=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-555}
TESTS_S=${TESTS_S:-100}          # the GPU tests (each test capped at TEST_CAP_S); 0 skips them
TEST_CAP_S=${TEST_CAP_S:-60}
CALIBRATE_S=${CALIBRATE_S:-150}  # no implementation micro-benchmark starts after this (the prologue/combine table adds ~40 s)
INSAMPLE_S=${INSAMPLE_S:-95}     # no in-sample case starts after this
REPORT_S=${REPORT_S:-25}         # kept for the report at the end
RUN_TIMING=${RUN_TIMING:-"--rep-ms 25 --warmup-ms 5"}
DEVICE=${DEVICE:-cuda}           # cpu: a dry run of the plumbing (with GRID=cpu and a --scale cpu case file)
GRID=${GRID:-reduced}
WARM_WORKERS=${WARM_WORKERS:-10}
PYTEST_EXTRA=${PYTEST_EXTRA:-"-n 4 --timeout $TEST_CAP_S"}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
LOGS="$OUT/logs.txt"
log() { echo "== [$(elapsed) s] $*" | tee -a "$LOGS"; }
CLI="$PY -m aqua_model.commands.validate_cmd"
PROFILE="$OUT/h200-heldout.toml"
SEED=$($PY -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['seed'])" "$CASES")
COMMIT=$($PY -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['model_commit'])" "$CASES")
HELDOUT="$OUT/heldout-$SEED.jsonl"

log "environment (seed $SEED, model frozen at $COMMIT)"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv >> "$LOGS" 2>&1
$PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, torch.cuda.get_device_name())" >> "$LOGS" 2>&1

# the Triton variants of every case, compiled by a worker pool while the GPU tests run (no timing then)
WARM_LOG=$(mktemp)
$PY -m aqua_model.validate.warmup "$CASES" --grid "$GRID" --workers "$WARM_WORKERS" > "$WARM_LOG" 2>&1 &
WARM_PID=$!

if [ "$TESTS_S" -gt 0 ]; then
  log "GPU tests"
  timeout "$TESTS_S" $PY -m pytest -q -m gpu -rA -p no:cacheprovider $PYTEST_EXTRA \
    tests/test_launch_counts.py tests/test_kernels_triton_decode.py tests/test_kernels_triton_prefill.py tests/test_kv_cache.py \
    > "$OUT/gpu_tests.log" 2>&1
  echo "pytest exit: $?" >> "$OUT/gpu_tests.log"
  grep -E "passed|failed|error|exit" "$OUT/gpu_tests.log" | tail -3 | tee -a "$LOGS"
else
  log "GPU tests skipped (TESTS_S=0)"
fi

log "calibration"
timeout $(( CALIBRATE_S + 60 )) $CLI calibrate --out "$PROFILE" --device "$DEVICE" --deadline-s "$CALIBRATE_S" >> "$LOGS" 2>&1
echo "calibrate exit: $?" | tee -a "$LOGS"
wait "$WARM_PID"
log "warm-up"
cat "$WARM_LOG" >> "$LOGS"; tail -1 "$WARM_LOG"; rm -f "$WARM_LOG"

log "in-sample (the reduced grid)"
$CLI run --profile "$PROFILE" --grid "$GRID" --out "$OUT/insample.jsonl" --device "$DEVICE" --deadline-s "$INSAMPLE_S" \
  --model-commit "$COMMIT" --no-progress $RUN_TIMING 2>&1 | tee -a "$LOGS" | tail -1

log "intervals, frozen into the profile before the held-out run"
$CLI intervals --profile "$PROFILE" --results "$OUT/insample.jsonl" --out "$PROFILE" 2>&1 | tee -a "$LOGS"

LEFT=$(( BUDGET_S - REPORT_S - $(elapsed) ))
log "held-out cases ($LEFT s)"
$CLI run --profile "$PROFILE" --cases "$CASES" --out "$HELDOUT" --device "$DEVICE" --deadline-s "$LEFT" --no-progress $RUN_TIMING \
  2>&1 | tee -a "$LOGS" | tail -1

log "report"
$CLI report "$OUT/insample.jsonl" --repredict "$PROFILE" --markdown "$OUT/insample_summary.md" --no-cases \
  --heldout "$HELDOUT" --heldout-markdown "$OUT/heldout_summary.md" --status-out "$OUT/plan_status.toml" >> "$LOGS" 2>&1
echo "report exit: $?" | tee -a "$LOGS"
sed -n '/## The issue/,/## Host/p' "$OUT/heldout_summary.md" 2>/dev/null
log "done"
