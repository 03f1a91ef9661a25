#!/usr/bin/env bash
# The one command for the GPU machine: calibrate the roofline, run the validation cases, report.
# Run from the repository root:  bash validation/run_h200.sh
# Writes under $OUT (default validation/results/h200): the calibrated profile, validation.jsonl,
# summary.md and the logs. A rerun with the same $OUT resumes the case run where it stopped.
set -uo pipefail
OUT=${OUT:-validation/results/h200}
PY=${PYTHON:-python3}
# Seconds after which the runner starts no new case; leaves room for calibration and the report
# inside one 10-minute command.
DEADLINE_S=${DEADLINE_S:-420}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
CLI="$PY -m aqua_model.commands.validate_cmd"
PROFILE="$OUT/h200-calibrated.toml"

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv 2>&1 | tee "$OUT/env.txt"
$PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, torch.cuda.get_device_name())" 2>&1 | tee -a "$OUT/env.txt"

if [ ! -s "$PROFILE" ]; then
  $CLI calibrate --out "$PROFILE" --device cuda 2>&1 | tee "$OUT/calibrate.log"
  [ -s "$PROFILE" ] || { echo "calibration failed: no profile" >&2; exit 1; }
fi
$CLI run --profile "$PROFILE" --out "$OUT/validation.jsonl" --device cuda --deadline-s "$DEADLINE_S" 2>&1 \
  | tr "\r" "\n" > "$OUT/run.log"
echo "run exit: ${PIPESTATUS[0]}" | tee -a "$OUT/run.log"
$CLI report "$OUT/validation.jsonl" --markdown "$OUT/summary.md" --no-cases 2>&1 | tee "$OUT/report.txt"
