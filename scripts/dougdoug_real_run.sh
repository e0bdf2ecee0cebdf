#!/usr/bin/env bash
# The training issue's real run on the DougDoug development corpus (docs/results.md), on a GPU.
# SFT (recipe a, chosen on validation in v3), then the contrast step: its variants scored on
# validation, one chosen by a fixed rule, then one test evaluation (docs/results.md, v4).
#   scripts/dougdoug_real_run.sh [BASE_MODEL_DIR] [OUT_DIR]
# Needs data/runs/dougdoug-pairs (scripts/dougdoug_dataset.py); writes the train and
# validation parts next to it (time splits, copies of held-out targets dropped from training).
set -euo pipefail
BASE=${1:-data/models/smollm2-135m-instruct}
OUT=${2:-data/runs/dougdoug-real-run}
mkdir -p "$OUT"
python - <<'PY'
from pathlib import Path
from chatling.training.data.dataset import load_pairs, split_pairs
runs = Path("data/runs")
train = split_pairs(load_pairs(runs / "dougdoug-pairs"), by="time", test_fraction=0.2)["train"]
(runs / "dougdoug-train" / "data").mkdir(parents=True, exist_ok=True)
train.to_parquet(str(runs / "dougdoug-train" / "data" / "train.parquet"))
val = split_pairs(train, by="time", test_fraction=0.2)
(runs / "dougdoug-val").mkdir(parents=True, exist_ok=True)
val["train"].to_parquet(str(runs / "dougdoug-val" / "train.parquet"))
val["test"].to_parquet(str(runs / "dougdoug-val" / "val.parquet"))
print(f"train {len(train)}, validation split {len(val['train'])} / {len(val['test'])} pairs")
PY
sft() {  # data out
  python -m chatling.cli.train --data "$1" --out "$2" --preset gpu-24gb --base "$BASE" --split none \
    --batch-size 8 --grad-accum 1 --lr 1e-4 --epochs 1 --save-steps 100000
}
declare -A VARIANT=(
  [c4]="--negatives 1 --batch-size 32"  # one rejected message per real one (the frequent kind)
  [c5]="--negatives 3 --batch-size 64"  # frequent, similar and random, in turn
)
contrast() {  # sft_adapter data out variant
  python -m chatling contrast --adapter "$1" --data "$2" --out "$3" --split none --preset gpu-24gb \
    --grad-accum 1 --epochs 1 --lr 1e-4 --beta 0.1 ${VARIANT[$4]}
}
evaluate() {  # data adapter report [extra args]
  local data=$1 adapter=$2 report=$3
  shift 3
  python -m chatling eval --data "$data" --adapter "$adapter" --report "$report" --points 500 "$@"
}
sft data/runs/dougdoug-val "$OUT/sft-val"
for v in c4 c5; do
  contrast "$OUT/sft-val" data/runs/dougdoug-val "$OUT/adapter-val-$v" "$v"
  evaluate data/runs/dougdoug-val "$OUT/adapter-val-$v" "$OUT/val-$v"
done
# The rule: the variant with the largest fine-tuning gain in validation MRR under any scoring.
CHOSEN=$(python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
gain = {
    v: max(
        row["mrr"]["value"]
        for row in json.loads((Path(sys.argv[1]) / f"val-{v}" / "report.json").read_text())["paired"]
        if row["what"] == "fine-tuning"
    )
    for v in ("c4", "c5")
}
print(max(gain, key=gain.get))
PY
)
sft data/runs/dougdoug-train "$OUT/sft-final"
contrast "$OUT/sft-final" data/runs/dougdoug-train "$OUT/adapter-final" "$CHOSEN"
evaluate data/runs/dougdoug-pairs "$OUT/adapter-final" "$OUT/final" --split time --test-fraction 0.2
evaluate data/runs/dougdoug-pairs "$OUT/sft-final" "$OUT/final-sft-only" --split time --test-fraction 0.2
