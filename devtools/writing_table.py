"""One table of what the bot writes, over several `chatling eval --generated` reports.

Why: on 195 validation moments the classifier AUC of one generation moves by
about 0.04 with nothing but the sampling seed (SFT b: 0.722 with seed 0, 0.682
with seed 1, 2026-12-06), as much as most differences between settings. A
setting is therefore chosen on the mean over seeds, and this script prints it:
one row per report, then one per configuration (the report's directory name
without its ``-sN`` seed suffix) with the mean and the spread over its seeds.

Run:
  python -m devtools.writing_table data/runs/gen3/rep-*  [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

_SEED = re.compile(r"-s(\d+)$")


@dataclass(frozen=True, slots=True)
class WritingRow:
    """The protocol's headline figures of one generate file's report."""

    name: str
    auc: float
    auc_fold_sd: float
    same_moment: float
    random_training: float
    w1: float
    one_word: float
    all_caps: float
    recent_copies: float
    junk: float
    postable: float
    blocked: float


def read_row(report_dir: Path) -> WritingRow:
    path = report_dir / "report.json"
    try:
        writing = json.loads(path.read_text(encoding="utf-8"))["writing"]
        auc = writing["classifier_auc"]
        posted = writing["shape"]["posted"]
        return WritingRow(
            name=report_dir.name.removeprefix("rep-"),
            auc=auc["posted vs real"]["mean"],
            auc_fold_sd=auc["posted vs real"]["std"],
            same_moment=auc["control: another real message of the moment"]["mean"],
            random_training=auc["control: a random training message"]["mean"],
            w1=writing["length_wasserstein_chars"],
            one_word=posted["one_word"],
            all_caps=posted["all_caps"],
            recent_copies=writing["copies"]["recent_chat"],
            junk=writing["junk"]["share"],
            postable=writing["postable_share"],
            blocked=writing["candidates"]["blocked_share"],
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(
            f"error: {path}: not a `chatling eval --generated` report ({exc})"
        ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="report directories (--report)")
    parser.add_argument("--json", type=Path, help="also write the rows and means here")
    args = parser.parse_args(argv)
    rows = [read_row(d) for d in args.reports]
    print(
        "| run | AUC ± fold s.d. | same moment / random training | W1 | one-word / all-caps "
        "| recent copies | junk | postable | blocked |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r.name} | {r.auc:.3f} ± {r.auc_fold_sd:.3f} | {r.same_moment:.3f} / "
            f"{r.random_training:.3f} | {r.w1:.2f} | {r.one_word:.1%} / {r.all_caps:.1%} | "
            f"{r.recent_copies:.1%} | {r.junk:.1%} | {r.postable:.1%} | {r.blocked:.1%} |"
        )
    groups: dict[str, list[WritingRow]] = defaultdict(list)
    for r in rows:
        groups[_SEED.sub("", r.name)].append(r)
    means = {}
    print("\n| configuration | seeds | mean AUC | spread over seeds (min .. max) | mean W1 |")
    print("| --- | --- | --- | --- | --- |")
    for name, group in sorted(groups.items(), key=lambda kv: statistics.mean(r.auc for r in kv[1])):
        aucs = [r.auc for r in group]
        means[name] = {
            "seeds": len(group),
            "auc": statistics.mean(aucs),
            "min": min(aucs),
            "max": max(aucs),
            "w1": statistics.mean(r.w1 for r in group),
        }
        m = means[name]
        print(
            f"| {name} | {m['seeds']} | {m['auc']:.3f} | {m['min']:.3f} .. {m['max']:.3f} "
            f"| {m['w1']:.2f} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"rows": [asdict(r) for r in rows], "means": means}, indent=1),
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
