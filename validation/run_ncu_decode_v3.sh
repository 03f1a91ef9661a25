#!/usr/bin/env bash
# Nsight Compute run of the one-launch decode kernel (td.FUSED_KERNELS = _fused_kernel), one command
# for the H200. Run from the repository root: OUT=dir bash validation/run_ncu_decode_v3.sh
# Profiles validation/ncu_decode_v2.py --launches 1 --shapes v3 (the v2 cases plus batch-1 GQA cases).
# Writes exactly these 6 files under $OUT (the device returns at most 8): env.txt, ncu_run.log,
# ncu.csv (ncu's raw page, base units), manifest.jsonl (the cases in launch order), and the digest
# (decode_v3_ncu.csv, digest.md). The .ncu-rep goes to $NCU_REP_DIR (default /tmp), outside $OUT.
# Profiles only the launches inside the NVTX range "aqua_ncu"; if that run leaves no report, retries
# once with a kernel-name filter and no warm-up calls.
# Env: NCU_TIMEOUT_S (default 200) and NCU_RETRY_TIMEOUT_S (default 90), seconds for the two ncu runs.
set -uo pipefail
OUT=${OUT:-/tmp/ncu_decode_v3}
REP_DIR=${NCU_REP_DIR:-/tmp}
REP="$REP_DIR/decode_v3_$$"
mkdir -p "$OUT" "$REP_DIR"
rm -f "$REP.ncu-rep"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "no ncu found" >&2; exit 3; }
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv; "$NCU" --version;
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)";
  git rev-parse HEAD 2>/dev/null; } > "$OUT/env.txt" 2>&1
ARGS=(--launches 1 --shapes v3 --manifest "$OUT/manifest.jsonl")
METRICS=$(python3 analysis/ncu_decode_v2_digest.py --print-metrics)
timeout "${NCU_TIMEOUT_S:-200}" "$NCU" --target-processes all --clock-control none --nvtx --nvtx-include "aqua_ncu/" \
  --metrics "$METRICS" --export "$REP" -f \
  python3 validation/ncu_decode_v2.py "${ARGS[@]}" > "$OUT/ncu_run.log" 2>&1
echo "ncu (nvtx) exit: $?" | tee -a "$OUT/ncu_run.log"
if [ ! -s "$REP.ncu-rep" ]; then
  timeout "${NCU_RETRY_TIMEOUT_S:-90}" "$NCU" --target-processes all --clock-control none \
    --kernel-name "regex:_fused_kernel|_prologue_kernel|_split_kernel|_combine_kernel|sdpa|cudnn|fmha|flash" \
    --metrics "$METRICS" --export "$REP" -f \
    python3 validation/ncu_decode_v2.py --no-warmup "${ARGS[@]}" >> "$OUT/ncu_run.log" 2>&1
  echo "ncu (kernel-name filter, no warm-up) exit: $?" | tee -a "$OUT/ncu_run.log"
fi
[ -s "$REP.ncu-rep" ] || { echo "no ncu report at $REP.ncu-rep" | tee -a "$OUT/ncu_run.log"; exit 4; }
"$NCU" --import "$REP.ncu-rep" --csv --page raw --print-units base > "$OUT/ncu.csv" 2>> "$OUT/ncu_run.log"
rm -f "$REP.ncu-rep"
python3 analysis/ncu_decode_v2_digest.py --ncu "$OUT/ncu.csv" --manifest "$OUT/manifest.jsonl" \
  --out-csv "$OUT/decode_v3_ncu.csv" --out-md "$OUT/digest.md" 2>&1 | tee -a "$OUT/ncu_run.log"
exit "${PIPESTATUS[0]}"
