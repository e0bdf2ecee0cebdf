"""The classifier AUC of a setting, averaged over every draw its generate files hold.

Why: one generation of 195 validation moments gives one AUC, and its sampling
noise is as large as the differences between settings: SFT b's posts scored 0.722
with seed 0 and 0.682 with seed 1, and a *random* allowed candidate of the seed-0
file (a draw from the same distribution as the first allowed one) 0.772
(2026-12-06). Each moment of a ``chatling generate`` file holds several candidates,
all sampled from the same model at the same moment; the k-th allowed candidate of
every moment is one more full set of posts from the served setting (first allowed =
k 0). Scoring every k of every seed's file and averaging gives the setting's
expected AUC with a spread that says how far one run can stray, at no extra
generation cost. Choose settings on this mean; report the served pick (k 0) too.

Run: .venv/bin/python scripts/writing_draws.py --data DIR [--test-fraction 0.1] \
         [--chant-min 0] [--json FILE] NAME=FILE.jsonl[,FILE.jsonl ...] ...
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chatling.training.data.splits import load_split
from chatling.training.eval.writing import Moment, classifier_auc, read_moments
from scripts.writing_choosers import allowed_candidates


def draw(moments: list[Moment], k: int, chant_min: int) -> list[Moment]:
    """The moments with the k-th allowed candidate posted (cycling where fewer are allowed)."""
    out = []
    for m in moments:
        allowed = allowed_candidates(m.candidates, m.recent_chat, chant_min)
        chosen = allowed[k % len(allowed)]["text"] if allowed else None
        out.append(dataclasses.replace(m, chosen=chosen))
    return out


def draw_aucs(paths: list[Path], chant_min: int, repeats: int = 4) -> list[float]:
    """One AUC (posted vs one real message per moment) per (file, candidate slot)."""
    aucs = []
    for path in paths:
        moments = [m for m in read_moments(path) if m.real]
        slots = max(len(m.candidates) for m in moments)
        for k in range(slots):
            posted = [m for m in draw(moments, k, chant_min) if m.chosen]
            rng_real = [m.real[(k + i) % len(m.real)] for i, m in enumerate(posted)]
            auc = classifier_auc(rng_real, [m.chosen for m in posted], repeats=repeats, seed=k)
            aucs.append(auc["mean"])
    return aucs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the pairs (for the split)")
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument(
        "--chant-min", type=int, default=0, help="re-apply the chant rule offline (0: as filed)"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("settings", nargs="+", help="NAME=FILE.jsonl[,FILE.jsonl ...]")
    args = parser.parse_args(argv)
    load_split(args.data, "time", args.test_fraction)  # fails early, naming a bad dataset
    results = {}
    print("| setting | files | draws | mean AUC | s.d. over draws | min .. max |")
    print("| --- | --- | --- | --- | --- | --- |")
    for spec in args.settings:
        name, _, files = spec.partition("=")
        paths = [Path(f) for f in files.split(",") if f]
        if not name or not paths:
            parser.error(f"{spec!r}: expected NAME=FILE.jsonl[,FILE.jsonl ...]")
        aucs = draw_aucs(paths, args.chant_min)
        results[name] = {
            "files": len(paths),
            "aucs": aucs,
            "mean": statistics.mean(aucs),
            "sd": statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
        }
        r = results[name]
        print(
            f"| {name} | {len(paths)} | {len(aucs)} | {r['mean']:.3f} | {r['sd']:.3f} | "
            f"{min(aucs):.3f} .. {max(aucs):.3f} |",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
