#!/usr/bin/env bash
# The one device call of the fit protocol (issue 21; validation/README.md "Fit protocol"): the
# micro-benchmarks (the fitted forms' starting values), the test sample, the training sample, the
# calibration sample, and the measured time break-even, each stage budgeted so that the command
# ends inside BUDGET_S. Rows are streamed (a stage cut by its deadline leaves the rows it measured).
# The test sample runs first, right after the micro-benchmarks, so that it is whole whatever else the
# deadline cuts. Nothing is fitted here: the fit, the intervals and the scoring run on a CPU
# afterwards (python analysis/fit_summary.py --run OUT --seed SEED), by the frozen procedure.
#
#   bash validation/run_h200_fit.sh TRAIN.jsonl CALIBRATION.jsonl TEST.jsonl     (repository root)
#
# $OUT gets at most 8 files: h200-fit-base.toml (the micro-benchmark profile), train.jsonl,
# calibration.jsonl, test-<seed>.jsonl, breakeven.jsonl, logs.txt.
set -uo pipefail
TRAIN=${1:?usage: run_h200_fit.sh TRAIN.jsonl CALIBRATION.jsonl TEST.jsonl}
CALIB=${2:?}
TEST=${3:?}
OUT=${OUT:-validation/results/h200/fit-run}
PY=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-555}
CALIBRATE_S=${CALIBRATE_S:-100}   # no implementation micro-benchmark starts after this
TEST_S=${TEST_S:-120}             # no test case starts after this many seconds of its stage
TRAIN_S=${TRAIN_S:-120}
CALIB_S=${CALIB_S:-100}
BREAKEVEN_S=${BREAKEVEN_S:-90}    # no break-even setting starts after this
RUN_TIMING=${RUN_TIMING:-"--rep-ms 25 --warmup-ms 5"}
DEVICE=${DEVICE:-cuda}
BE_SETTINGS=${BE_SETTINGS:-issue}  # smoke: the two tiny settings of a CPU dry run
WARM_WORKERS=${WARM_WORKERS:-12}
FALLBACK_PROFILE=validation/results/h200/h200-heldout-898775459.toml
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
LOGS="$OUT/logs.txt"
log() { echo "== [$(elapsed) s] $*" | tee -a "$LOGS"; }
CLI="$PY -m aqua_model.commands.validate_cmd"
PROFILE="$OUT/h200-fit-base.toml"
SEED=$($PY -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['seed'])" "$TEST")
COMMIT=$($PY -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['model_commit'])" "$TEST")

log "environment (test seed $SEED, model frozen at $COMMIT)"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv >> "$LOGS" 2>&1
$PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, torch.cuda.get_device_name())" >> "$LOGS" 2>&1

# the Triton variants of every case, compiled by a worker pool while the micro-benchmarks run
WARM_LOG=$(mktemp)
$PY -m aqua_model.validate.warmup "$TEST" "$TRAIN" "$CALIB" --workers "$WARM_WORKERS" > "$WARM_LOG" 2>&1 &
WARM_PID=$!

log "micro-benchmarks (starting values)"
timeout $(( CALIBRATE_S + 60 )) $CLI calibrate --out "$PROFILE" --device "$DEVICE" --deadline-s "$CALIBRATE_S" >> "$LOGS" 2>&1
echo "calibrate exit: $?" | tee -a "$LOGS"
if ! $PY -c "from aqua_model.hardware import load; import sys; p = load(sys.argv[1]); assert p.terms.graph_timing" "$PROFILE" >> "$LOGS" 2>&1; then
  log "calibration unusable: the committed $FALLBACK_PROFILE stands in (its graph terms and tables are the starting values)"
  cp "$FALLBACK_PROFILE" "$PROFILE"
fi
wait "$WARM_PID"
log "warm-up"
cat "$WARM_LOG" >> "$LOGS"; tail -1 "$WARM_LOG"; rm -f "$WARM_LOG"

for stage in "test:$TEST:$OUT/test-$SEED.jsonl:$TEST_S" "train:$TRAIN:$OUT/train.jsonl:$TRAIN_S" "calibration:$CALIB:$OUT/calibration.jsonl:$CALIB_S"; do
  IFS=: read -r name cases rows budget <<< "$stage"
  LEFT=$(( BUDGET_S - BREAKEVEN_S - 15 - $(elapsed) ))
  [ "$budget" -gt "$LEFT" ] && budget=$LEFT
  if [ "$budget" -le 5 ]; then log "$name sample skipped: no time left"; continue; fi
  log "$name sample ($budget s)"
  $CLI run --profile "$PROFILE" --cases "$cases" --out "$rows" --device "$DEVICE" --deadline-s "$budget" --no-progress $RUN_TIMING \
    2>&1 | tee -a "$LOGS" | tail -1
done

LEFT=$(( BUDGET_S - 10 - $(elapsed) ))
[ "$BREAKEVEN_S" -gt "$LEFT" ] && BREAKEVEN_S=$LEFT
log "time break-even ($BREAKEVEN_S s)"
$PY validation/breakeven_time.py --out "$OUT/breakeven.jsonl" --device "$DEVICE" --settings "$BE_SETTINGS" --deadline-s "$BREAKEVEN_S" >> "$LOGS" 2>&1
echo "breakeven exit: $?" | tee -a "$LOGS"
grep '"kind": "result"' "$OUT/breakeven.jsonl" 2>/dev/null | $PY -c "
import json, sys
for line in sys.stdin:
    r = json.loads(line); print(r['model'], 'B', r['batch'], 'k', r['k'], '->', r['breakeven_context'], r['bracket'])"
log "done"
