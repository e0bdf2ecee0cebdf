#!/usr/bin/env bash
# The writing issue's GPU run on the DougDoug development corpus (docs/results.md, "What the bot
# writes"): LoRA adapters trained on the prompt form the bot serves (`log`, the default), their
# validation variants, and the paired ranking check against v4's recipe (`chat` form).
#   scripts/writing_real_run.sh [BASE_MODEL_DIR] [OUT_DIR]
# Needs data/runs/dougdoug-val, dougdoug-train (scripts/dougdoug_real_run.sh makes them),
# data/runs/dougdoug-pairs and data/runs/default-pairs (the packaged default's data: the MIT
# Northernlion log's first 80% and the project's own demo chat; README "The default adapter").
# What it writes is then scored on a CPU with `chatling generate` + `chatling eval --generated`.
#
# On the lent GPU (tried 2026-12-06; the device image has torch, transformers, peft, accelerate,
# pyarrow, numpy, tqdm, psutil, yaml but not pydantic, pydantic-settings, trl or datasets):
#   call 1, carry wheels/small wheels/pyd wheels/g1 wheels/snap (trl datasets dill multiprocess
#     xxhash fsspec pydantic-settings python-dotenv aiosqlite rich gguf; pydantic pydantic-core
#     typing-inspection annotated-types typing-extensions; the GGUF's first half; the old
#     chatling/safety.py, whose imports the image has): pip install --target /tmp/site, copy to /tmp.
#   call 2 at once (the machine stays warm 30 s), carry the GGUF's second half and data/runs/*:
#     join it, `provision_llm(Path('/tmp/w/base'), gguf_dir=...)`, then start this script with
#     setsid in the background and wait on its pid (not `pgrep -f`, which matches the call's own
#     command line) and tar the finished adapters into $OUT (about 10 MB each; 6 a call).
#   `python` must be a wrapper script that execs python3 (a symlink to it loses the image's
#   site-packages).
set -euo pipefail
BASE=${1:-data/models/smollm2-135m-instruct}
OUT=${2:-data/runs/writing-real-run}
mkdir -p "$OUT"
sft() {  # data out lr epochs [form]
  [ -f "$2/adapter_config.json" ] && return 0  # done on an earlier call
  CHATLING_REPLY__PROMPT_FORM=${5:-log} python -m chatling.cli.train --data "$1" --out "$2" \
    --preset gpu-24gb --base "$BASE" --split none --batch-size 8 --grad-accum 1 --lr "$3" \
    --epochs "$4" --save-steps 100000
}
contrast() {  # sft_adapter data out [form]
  [ -f "$3/adapter_config.json" ] && return 0
  CHATLING_REPLY__PROMPT_FORM=${4:-log} python -m chatling.cli.main contrast --adapter "$1" --data "$2" \
    --out "$3" --split none --preset gpu-24gb --grad-accum 1 --epochs 1 --lr 1e-4 --beta 0.1 \
    --negatives 3 --batch-size 64
}
step() { "$@" || echo "FAILED: $*" >&2; }  # one failed step does not stop the rest
# In order of need, so that a lease cut short still brings back the most useful adapters.
# Validation: recipe a (v3's SFT) and a longer, hotter variant b.
step sft data/runs/dougdoug-val "$OUT/val-sft-a" 1e-4 1
step sft data/runs/dougdoug-val "$OUT/val-sft-b" 2e-4 2
# The packaged default (no DougDoug data): the same two recipes, chosen on DougDoug validation.
step sft data/runs/default-pairs "$OUT/default-a" 2e-4 2
step sft data/runs/default-pairs "$OUT/default-b" 1e-4 1
# The contrast step on a (validation), then all three on the whole training part (0-80%), for
# the one test run of the chosen one.
step contrast "$OUT/val-sft-a" data/runs/dougdoug-val "$OUT/val-contrast-a"
step sft data/runs/dougdoug-train "$OUT/final-sft-a" 1e-4 1
step sft data/runs/dougdoug-train "$OUT/final-sft-b" 2e-4 2
step contrast "$OUT/final-sft-a" data/runs/dougdoug-train "$OUT/final-contrast-a"
# v4's recipe (chat form, SFT a + contrast c5) for the paired ranking comparison.
step sft data/runs/dougdoug-train "$OUT/v4-sft" 1e-4 1 chat
step contrast "$OUT/v4-sft" data/runs/dougdoug-train "$OUT/v4-contrast" chat
