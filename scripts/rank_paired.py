"""Paired ranking comparison of two adapters, each on its own prompt form, same candidate sets.

``chatling eval`` pairs an adapter with its base model; the writing issue also
needs "the new adapter ranks no worse than v4", and v4 was trained on the
``chat`` prompt form while the new one serves the ``log`` form. This scores
both on the frozen candidate sets ``chatling eval`` builds (same split, seed
and points) and prints R@10 and MRR of each with the paired moving-block
interval of their difference (new minus reference).

Run (a GPU makes it minutes):
  python scripts/rank_paired.py --data data/runs/dougdoug-pairs --test-fraction 0.2 \
      --new ADAPTER --new-form log --ref ADAPTER --ref-form chat --out FILE.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chatling.core.settings import ReplySettings
from chatling.prompt import PromptBuilder
from chatling.training.data.splits import load_split
from chatling.training.eval.evaluate import (
    BootstrapConfig,
    CandidateConfig,
    _estimate,
    build_candidates,
    evaluate,
)
from chatling.training.eval.rankers import ModelRanker, load_model
from chatling.training.sft.collate import token_counter

log = logging.getLogger("rank_paired")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--points", type=int, default=500)
    parser.add_argument("--base", default="data/models/smollm2-135m-instruct")
    parser.add_argument("--new", required=True)
    parser.add_argument("--new-form", choices=("log", "chat"), default="log")
    parser.add_argument("--ref", required=True)
    parser.add_argument("--ref-form", choices=("log", "chat"), default="chat")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    train, test = load_split(args.data, "time", args.test_fraction)
    points = build_candidates(test, train, CandidateConfig(n_points=args.points, seed=0)).points
    boot = BootstrapConfig(n_boot=1000, block_s=60.0, seed=0)
    rankers = []
    for name, adapter, form in (
        ("new", args.new, args.new_form),
        ("reference", args.ref, args.ref_form),
    ):
        model, tokenizer = load_model(args.base, adapter)
        builder = PromptBuilder(ReplySettings(prompt_form=form), token_counter(tokenizer))
        rankers.append(ModelRanker(model, tokenizer, builder, name=name, batch_size=128))
    results = evaluate(points, rankers, boot)
    times, sources = [p.t for p in points], [p.source for p in points]
    out: dict[str, object] = {"points": len(points), "systems": {}, "paired": {}}
    for name, res in results.items():
        out["systems"][name] = res.to_json()  # type: ignore[index]
    for variant in ("summed", "per token"):
        new, ref = results[f"new · {variant}"], results[f"reference · {variant}"]
        row = {}
        for metric in ("recall@10", "mrr"):
            diff = new.per_point[metric] - ref.per_point[metric]
            est = _estimate(
                lambda idx, d=diff: float(d[idx].mean()), len(diff), times, sources, boot
            )
            row[metric] = est.to_json()
        out["paired"][variant] = row  # type: ignore[index]
        log.info("%s: new - reference %s", variant, row)
    args.out.write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
