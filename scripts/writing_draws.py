"""The classifier AUC of a setting, averaged over every draw its generate files hold.

One run's AUC strays by about 0.04 with the sampling seed alone; the mean over every
candidate slot of several seeds' files (``chatling.training.eval.writing.draw_aucs``)
is what settings are compared on (docs/results.md, "Round 4").

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
from chatling.training.eval.writing import Moment, draw_aucs, read_moments
from scripts.writing_choosers import allowed_candidates


def with_chant_rule(moments: list[Moment], chant_min: int) -> list[Moment]:
    """Files generated before the chant rule was in the filter: mark as allowed the copies
    it would now allow (``chant_min`` 0: the verdicts as filed)."""
    if not chant_min:
        return moments
    out = []
    for m in moments:
        ok = {id(c) for c in allowed_candidates(m.candidates, m.recent_chat, chant_min)}
        candidates = tuple({**c, "allowed": id(c) in ok} for c in m.candidates)
        out.append(dataclasses.replace(m, candidates=candidates))
    return out


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
        aucs = draw_aucs([with_chant_rule(read_moments(p), args.chant_min) for p in paths])
        sd = statistics.stdev(aucs) if len(aucs) > 1 else 0.0
        results[name] = {"files": len(paths), "aucs": aucs, "mean": statistics.mean(aucs), "sd": sd}
        print(
            f"| {name} | {len(paths)} | {len(aucs)} | {results[name]['mean']:.3f} | {sd:.3f} | "
            f"{min(aucs):.3f} .. {max(aucs):.3f} |",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
