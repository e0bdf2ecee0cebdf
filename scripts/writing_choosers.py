"""Compare choosers offline on one `chatling generate` file (validation only).

Every candidate of a moment is in the file with its verdict, heuristic score and, when
generated with `CHATLING_REPLY__CHOOSER=likelihood`, its mean log-probability; so the
posts of other choosers (first allowed, a random allowed one, best score, likeliest) and
of fewer candidates (the first N) can be re-picked from the same generations and scored
with the same metrics (`chatling.training.eval.writing`), without sampling again.

Run: .venv/bin/python scripts/writing_choosers.py --data DIR --generated FILE.jsonl \
         [--test-fraction 0.1] --chooser first|random|score|likelihood --candidates N
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chatling.safety import dedupe_key
from chatling.topical import topical_choice
from chatling.training.data.splits import load_split
from chatling.training.eval.writing import read_moments, summary_rows, writing_metrics


def chant_keys(recent_chat: list[str], min_users: int) -> set[str]:
    """Dedupe keys of the prompt's recent lines (``name: text``) posted by at least
    ``min_users`` viewers: what ``SafetyFilter(chant_min=...)`` lets the bot copy."""
    users: dict[str, set[str]] = {}
    for line in recent_chat:
        name, _, text = line.partition(": ")
        users.setdefault(dedupe_key(text), set()).add(name.casefold())
    return {key for key, names in users.items() if key and len(names) >= min_users}


def allowed_candidates(
    candidates: Sequence[dict[str, Any]], recent_chat: Sequence[str], chant_min: int
) -> list[dict[str, Any]]:
    """The candidates the filter allowed, plus (``chant_min`` > 0) those blocked only as a
    copy of a recent line that ``chant_min`` viewers posted: the chant rule, offline."""
    chants = chant_keys(list(recent_chat), chant_min) if chant_min else set()
    return [
        c
        for c in candidates
        if c["allowed"] or (c["reason"] == "duplicate_of_chat" and dedupe_key(c["text"]) in chants)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--generated", type=Path, required=True)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--chooser", choices=("first", "random", "score", "likelihood", "topical"))
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument(
        "--chant-min",
        type=int,
        default=0,
        help="count a candidate blocked only as a copy of a recent chat line as allowed when "
        "that line is in the recent chat at least this often (0: never)",
    )
    args = parser.parse_args()
    train, _ = load_split(args.data, "time", args.test_fraction)
    rng = random.Random(0)
    keys = {"score": lambda c: c["score"], "likelihood": lambda c: c["logprob"]}
    moments = []
    for m in read_moments(args.generated):
        candidates = m.candidates[: args.candidates]
        allowed = allowed_candidates(candidates, m.recent_chat, args.chant_min)
        pick = None
        if allowed and args.chooser == "first":
            pick = allowed[0]
        elif allowed and args.chooser == "random":
            pick = rng.choice(allowed)
        elif allowed and args.chooser == "topical":
            pick = allowed[topical_choice([c["text"] for c in allowed], m.recent_chat)]
        elif allowed:
            pick = max(allowed, key=keys[args.chooser])
        chosen = pick["text"] if pick else None
        moments.append(dataclasses.replace(m, candidates=candidates, chosen=chosen))
    data = writing_metrics(moments, [p.target for p in train], seed=0)
    print(f"{args.chooser}, {args.candidates} candidates, {len(moments)} moments")
    for row in summary_rows(data):
        print(" | ".join(row))


if __name__ == "__main__":
    main()
