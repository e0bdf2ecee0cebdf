#!/usr/bin/env bash
# The writing issue's fourth round on the lent GPU (docs/results.md, "Round 4"): two hotter SFT
# recipes on the served `log` form (validation and final variants), and v4's full recipe again
# (chat form, SFT a then the contrast step for a whole epoch) for the paired ranking check against
# the served adapter (scripts/rank_paired.py). A 135M model leaves most of one H100 idle, so the
# runs go in parallel, one process each.
#   scripts/writing_gpu_round4.sh [BASE_MODEL_DIR] [OUT_DIR]
# Set-up as scripts/writing_real_run.sh (wheels, the GGUF in two halves, `python` a wrapper).
set -uo pipefail
BASE=${1:-data/models/smollm2-135m-instruct}
OUT=${2:-data/runs/writing-round4}
mkdir -p "$OUT"
sft() {  # data out lr epochs [form]
  [ -f "$2/adapter_config.json" ] && return 0
  CHATLING_REPLY__PROMPT_FORM=${5:-log} python -m chatling.cli.train --data "$1" --out "$2" \
    --preset gpu-24gb --base "$BASE" --split none --batch-size 8 --grad-accum 1 --lr "$3" \
    --epochs "$4" --save-steps 100000 > "$2.log" 2>&1 || echo "FAILED: sft $2" >&2
}
v4() {  # v4's recipe on the whole training part: SFT a (chat form), then a full contrast epoch
  sft data/runs/dougdoug-train "$OUT/v4-sft" 1e-4 1 chat
  [ -f "$OUT/v4-contrast/adapter_config.json" ] && return 0
  CHATLING_REPLY__PROMPT_FORM=chat python -m chatling contrast --adapter "$OUT/v4-sft" \
    --data data/runs/dougdoug-train --out "$OUT/v4-contrast" --split none --preset gpu-24gb \
    --grad-accum 1 --epochs 1 --lr 1e-4 --beta 0.1 --negatives 3 --batch-size 64 \
    > "$OUT/v4-contrast.log" 2>&1 || echo "FAILED: contrast v4" >&2
}
v4 &
sft data/runs/dougdoug-val "$OUT/val-sft-c" 3e-4 3 &
sft data/runs/dougdoug-val "$OUT/val-sft-d" 2e-4 4 &
sft data/runs/dougdoug-train "$OUT/final-sft-c" 3e-4 3 &
sft data/runs/dougdoug-train "$OUT/final-sft-d" 2e-4 4 &
wait
echo "all done"
