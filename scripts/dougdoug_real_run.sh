#!/usr/bin/env bash
# The training issue's real run on the DougDoug development corpus (docs/results.md), on a GPU.
# Validation sweep on the train part, a recipe chosen by a fixed rule, then one test evaluation.
#   scripts/dougdoug_real_run.sh [BASE_MODEL_DIR] [OUT_DIR]
# Needs data/runs/dougdoug-pairs (scripts/dougdoug_dataset.py); writes the train and
# validation parts next to it (time splits, copies of held-out targets dropped from training).
set -euo pipefail
BASE=${1:-data/models/smollm2-135m-instruct}
OUT=${2:-data/runs/dougdoug-real-run}
mkdir -p "$OUT"
python - <<'PY'
from pathlib import Path
from training.dataset import load_pairs, split_pairs
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
train() {  # data lr epochs out
  python -m training.train_cli --data "$1" --out "$4" --preset gpu-24gb --base "$BASE" --split none \
    --batch-size 8 --grad-accum 1 --lr "$2" --epochs "$3" --save-steps 100000
}
evaluate() {  # data adapter report [extra args]
  local data=$1 adapter=$2 report=$3
  shift 3
  python -m bot.cli eval --data "$data" --adapter "$adapter" --report "$report" --points 500 "$@"
}
for cfg in "a 1e-4 1" "b 2e-4 2" "c 5e-5 2"; do
  set -- $cfg
  train data/runs/dougdoug-val "$2" "$3" "$OUT/adapter-val-$1"
  evaluate data/runs/dougdoug-val "$OUT/adapter-val-$1" "$OUT/val-$1"
done
# The rule: the recipe with the largest fine-tuning gain in MRR under any scoring.
read -r LR EPOCHS < <(python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
recipes = {"a": ("1e-4", "1"), "b": ("2e-4", "2"), "c": ("5e-5", "2")}
best = max(
    recipes,
    key=lambda r: max(
        row["mrr"]["value"]
        for row in json.loads((Path(sys.argv[1]) / f"val-{r}" / "report.json").read_text())["paired"]
        if row["what"] == "fine-tuning"
    ),
)
print(*recipes[best])
PY
)
train data/runs/dougdoug-train "$LR" "$EPOCHS" "$OUT/adapter-final"
evaluate data/runs/dougdoug-pairs "$OUT/adapter-final" "$OUT/final" --split time --test-fraction 0.2
