#!/usr/bin/env bash
# Nsight Compute run of the second decode kernel (issue 15 item 5), one command for the H200.
# Run from the repository root: OUT=dir bash validation/run_ncu_decode_v2.sh
# Writes under $OUT: env.txt, ncu_run.log, decode_v2.ncu-rep, ncu.csv (ncu's raw page, base units),
# ncu_details.csv (its details page), manifest.jsonl (the cases in launch order), and the digest (decode_v2_ncu.csv, digest.md).
# Profiles only the launches inside the NVTX range "aqua_ncu" (validation/ncu_decode_v2.py); if
# that run leaves no report, retries once with a kernel-name filter and no warm-up calls.
set -uo pipefail
OUT=${OUT:-/tmp/ncu_decode_v2}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "no ncu found" >&2; exit 3; }
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv; "$NCU" --version;
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"; } \
  > "$OUT/env.txt" 2>&1
METRICS=$(python3 analysis/ncu_decode_v2_digest.py --print-metrics)
timeout "${NCU_TIMEOUT_S:-210}" "$NCU" --target-processes all --clock-control none --nvtx --nvtx-include "aqua_ncu/" \
  --metrics "$METRICS" --export "$OUT/decode_v2" -f \
  python3 validation/ncu_decode_v2.py --launches 3 --shapes v2 --manifest "$OUT/manifest.jsonl" > "$OUT/ncu_run.log" 2>&1
echo "ncu (nvtx) exit: $?" | tee -a "$OUT/ncu_run.log"
if [ ! -s "$OUT/decode_v2.ncu-rep" ]; then
  timeout "${NCU_RETRY_TIMEOUT_S:-70}" "$NCU" --target-processes all --clock-control none \
    --kernel-name "regex:_prologue_kernel|_split_kernel|_combine_kernel|sdpa|cudnn|fmha|flash" \
    --metrics "$METRICS" --export "$OUT/decode_v2" -f \
    python3 validation/ncu_decode_v2.py --launches 3 --shapes v2 --no-warmup --manifest "$OUT/manifest.jsonl" >> "$OUT/ncu_run.log" 2>&1
  echo "ncu (kernel-name filter, no warm-up) exit: $?" | tee -a "$OUT/ncu_run.log"
fi
"$NCU" --import "$OUT/decode_v2.ncu-rep" --csv --page raw --print-units base > "$OUT/ncu.csv" 2>> "$OUT/ncu_run.log"
"$NCU" --import "$OUT/decode_v2.ncu-rep" --csv --page details --print-units base > "$OUT/ncu_details.csv" 2>> "$OUT/ncu_run.log"
python3 analysis/ncu_decode_v2_digest.py --ncu "$OUT/ncu.csv" --manifest "$OUT/manifest.jsonl" \
  --out-csv "$OUT/decode_v2_ncu.csv" --out-md "$OUT/digest.md"
