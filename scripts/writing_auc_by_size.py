"""How the writing classifier's AUC moves with the number of posts it is given.

The nightly gate scores a few dozen sampled replies (``CHATLING_SCHEDULE__GATE_GENERATIONS``,
default 32); this says how far one such AUC strays and how it is biased, from a
``chatling generate`` file of the served setting: random subsets of its posted moments
(each with one real message of the moment, picked at random), one AUC each.

Run: .venv/bin/python scripts/writing_auc_by_size.py FILE.jsonl [--sizes 32 64 128]
         [--subsets 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chatling.training.eval.writing import classifier_auc, posted_draw, read_moments

log = logging.getLogger("writing_auc_by_size")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("generated", type=Path, help="a `chatling generate` file")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--subsets", type=int, default=20, help="random subsets per size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    moments = [m for m in read_moments(args.generated) if m.real]
    posted = [m for m in posted_draw(moments, 0) if m.chosen]
    rng = np.random.default_rng(args.seed)
    rows = []
    for size in [*args.sizes, len(posted)]:
        if size > len(posted):
            log.warning("skipping %d: the file has %d posted moments", size, len(posted))
            continue
        aucs = []
        for subset in range(args.subsets if size < len(posted) else 1):
            picked = rng.choice(len(posted), size, replace=False)
            real = [posted[i].real[rng.integers(len(posted[i].real))] for i in picked]
            chosen = [str(posted[i].chosen) for i in picked]
            aucs.append(classifier_auc(real, chosen, repeats=3, seed=subset)["mean"])
        rows.append(
            {
                "posts": size,
                "subsets": len(aucs),
                "mean": float(np.mean(aucs)),
                "sd": float(np.std(aucs)),
                "min": float(min(aucs)),
                "max": float(max(aucs)),
            }
        )
        log.info(
            "%4d posts: AUC %.3f (s.d. %.3f, %.3f .. %.3f, %d subsets)",
            size,
            rows[-1]["mean"],
            rows[-1]["sd"],
            rows[-1]["min"],
            rows[-1]["max"],
            len(aucs),
        )
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
