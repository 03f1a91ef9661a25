#!/usr/bin/env bash
# The three case files of the fit protocol (issue 21; validation/README.md "Fit protocol"), drawn
# after the freeze: the test seed is the frozen commit's (aqua_model.validate.sampling.seed_from_commit),
# the training and calibration seeds the test seed plus ROLE_SEED_OFFSETS, so nobody picks them.
# Every file holds the core plans only (decode dense-fused and aqua-fused, prefill dense-fused).
#
#   bash validation/fit_cases.sh            (repository root; aqua_model/ must be committed)
#   SCALE=cpu DIR=/tmp/x N_TEST=8 N_TRAIN=8 N_CALIB=8 bash validation/fit_cases.sh   (a CPU dry run:
#   the distribution's tiny CPU form, aqua_model.validate.sampling.CPU_DISTRIBUTION)
set -euo pipefail
PY=${PYTHON:-python3}
N_TEST=${N_TEST:-420}
N_TRAIN=${N_TRAIN:-460}
N_CALIB=${N_CALIB:-380}
DIR=${DIR:-validation/results/h200}
SCALE=${SCALE:-h200}
if [ -n "$(git status --porcelain -- aqua_model)" ]; then
  echo "aqua_model/ has uncommitted changes: commit the model first (the freeze)" >&2; exit 1
fi
COMMIT=$(git rev-parse HEAD)
read -r TEST TRAIN CALIB < <($PY -c "
from aqua_model.validate.sampling import ROLE_SEED_OFFSETS as o, seed_from_commit
s = seed_from_commit('$COMMIT'); print(s + o['test'], s + o['train'], s + o['calibration'])")
for spec in "test:$TEST:$N_TEST" "train:$TRAIN:$N_TRAIN" "calibration:$CALIB:$N_CALIB"; do
  IFS=: read -r role seed n <<< "$spec"
  $PY -m aqua_model.commands.validate_cmd sample --role "$role" --seed "$seed" --n "$n" --core-only --scale "$SCALE" \
    --model-commit "$COMMIT" --out "$DIR/fit-$TEST-cases-$role.jsonl"
done
echo "test seed $TEST (train $TRAIN, calibration $CALIB), model frozen at $COMMIT"
