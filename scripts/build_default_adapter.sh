#!/usr/bin/env bash
# The default adapter (README "The default adapter"), from data the project may redistribute:
# the MIT-licensed Northernlion chat log in ../shared (its first 80% by time, chat-only: no
# transcript) and the project's own demo stream (data/demo/, all of it). No DougDoug data.
# `make default-adapter` runs this.
#   scripts/build_default_adapter.sh [OUT_DIR]     (default data/runs/default-adapter)
# Serve it with CHATLING_MODEL__ADAPTER=OUT_DIR, or on a CPU merged (3x faster there):
# `chatling models merge --adapter OUT_DIR --out DIR`, then CHATLING_MODEL__NAME=DIR.
# Time: about 2 minutes on one H100 (measured 2026-12-06: 54 s of training); about an hour and a
# half on 2 CPU cores (the recipe's packed batch of 8 rows costs roughly 80 s a step there, 68
# steps). NL_CHAT overrides the Northernlion log's path.
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${1:-data/runs/default-adapter}
WORK=data/runs/default-build
NL_CHAT=${NL_CHAT:-../shared/data/chat/northernlion-1087079172.json}
BASE=data/models/smollm2-135m-instruct  # the plain packaged base (python -m chatling models provision)

[ -f "$NL_CHAT" ] || { echo "error: $NL_CHAT: no such file (set NL_CHAT to the MIT Northernlion log)" >&2; exit 2; }
[ -f "$BASE/config.json" ] || { echo "error: $BASE: not provisioned; run: $PY -m chatling models provision" >&2; exit 2; }
[ -e "$OUT" ] && { echo "error: $OUT exists; remove it or pass another OUT_DIR" >&2; exit 2; }
mkdir -p "$WORK"

# 1. The Northernlion log, chat-only: one transcript segment far past the log's end, so no
#    context holds speech (the packaged default must also serve channels it cannot hear well).
echo '{"start": 999999.0, "end": 1000000.0, "text": "."}' > "$WORK/no-speech.jsonl"
[ -f "$WORK/nl-pairs/manifest.json" ] ||
  $PY -m chatling data ingest --chat "$NL_CHAT" --transcript "$WORK/no-speech.jsonl" \
    --out "$WORK/nl-pairs" --no-progress
# 2. The demo stream, transcribed by the packaged Whisper (cached by content).
[ -f "$WORK/demo-pairs/manifest.json" ] ||
  $PY -m chatling data ingest --vod data/demo/stream.opus --chat data/demo/chat.json \
    --out "$WORK/demo-pairs" --source chatling-demo --no-progress
# 3. Train: Northernlion's first 80% by time + the whole demo; test: Northernlion's last 20%.
$PY - "$WORK" <<'PY'
import sys
from pathlib import Path

from chatling.training.data.dataset import load_pairs, split_pairs

work = Path(sys.argv[1])
nl = split_pairs(load_pairs(work / "nl-pairs"), by="time", test_fraction=0.2)
demo = load_pairs(work / "demo-pairs")
out = work / "default-pairs"
out.mkdir(exist_ok=True)
from datasets import concatenate_datasets

concatenate_datasets([nl["train"], demo]).to_parquet(str(out / "train.parquet"))
nl["test"].to_parquet(str(out / "test.parquet"))
print(f"default-pairs: {len(nl['train']) + len(demo)} train, {len(nl['test'])} test -> {out}")
PY
# 4. Recipe a of the two tried on DougDoug validation moments (docs/results.md).
CHATLING_REPLY__PROMPT_FORM=log $PY -m chatling.cli.train --data "$WORK/default-pairs" \
  --out "$OUT" --preset gpu-24gb --base "$BASE" --split none --batch-size 8 --grad-accum 1 \
  --lr 2e-4 --epochs 2 --save-steps 100000
echo "adapter written to $OUT; serve it with CHATLING_MODEL__ADAPTER=$OUT"
