"""A PMI chooser, offline: does picking the candidate the moment explains best read more like chat?

The issue's lever "the adapter's own likelihood or PMI of each candidate given the moment".
Likelihood was tried in round 1 (it narrows the posts to the likeliest short lines); PMI
(the log-probability after the moment's prompt minus the one after a prompt with no
context, as ``chatling eval`` ranks) rewards what *this* moment makes likely, which is what
still gives the posts away (docs/results.md: the posts sit at the topic-drift control).

The candidates are those already in ``chatling generate`` files of one setting (several
seeds of the same moments: their allowed candidates are pooled, up to 4 per file), scored
by the same model with ``ModelRanker(pmi=True)`` on the moments' own pairs (rebuilt from
``--data`` as ``chatling generate`` chose them). Choosers compared, each as draws (one AUC
per file or per draw, against its own draw of the real messages):

- ``first``: the served chooser (first allowed of the file's 4);
- ``pmi@4``: the highest PMI among the file's own allowed candidates;
- ``pmi@all``: the highest PMI among every pooled candidate;
- ``pmi-softmax``: a draw in proportion to exp(PMI) among the pooled ones (keeps variety).

Validation only. Run:
  .venv/bin/python scripts/writing_pmi.py --data data/runs/dougdoug-val --test-fraction 0.2 \\
      --model /tmp/merged/val-sft-b --chant-min 2 data/runs/gen3/b-s0.jsonl b-s1.jsonl ...
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chatling.core.settings import Settings
from chatling.training.eval.generate import GenerateRequest, moments
from chatling.training.eval.writing import classifier_auc, read_moments
from scripts.writing_choosers import allowed_candidates

log = logging.getLogger("writing_pmi")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", type=Path, nargs="+", help="`chatling generate` files")
    parser.add_argument("--data", type=Path, required=True, help="the pairs they were made from")
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--model", required=True, help="the (merged) model that generated them")
    parser.add_argument("--chant-min", type=int, default=2)
    parser.add_argument("--draws", type=int, default=4, help="real-message draws per chooser")
    parser.add_argument("--json", type=Path, help="write the AUCs here")
    parser.add_argument("--limit", type=int, help="only the first N moments (a smoke run)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    from tqdm import tqdm

    from chatling.prompt import PromptBuilder
    from chatling.training.eval.rankers import ModelRanker, load_model

    files = [read_moments(f) for f in args.files]
    request = GenerateRequest(
        data=args.data, out=Path("-"), test_fraction=args.test_fraction, points=args.points
    )
    anchors = {round(a.offset, 3): (a, real) for a, real in moments(request)}
    by_time: dict[float, list[list[str]]] = {}
    for ms in files:
        for m in ms:
            ok = allowed_candidates(m.candidates, m.recent_chat, args.chant_min)
            by_time.setdefault(round(m.time, 3), []).append([str(c["text"]) for c in ok])
    times = [t for t in sorted(by_time) if t in anchors and anchors[t][1]][: args.limit]
    log.info("%d moments with real messages, %d files", len(times), len(files))

    model, tokenizer = load_model(args.model, dtype="float32")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    builder = PromptBuilder(
        settings.reply, lambda s: len(tokenizer.encode(s, add_special_tokens=False))
    )
    ranker = ModelRanker(model, tokenizer, builder, pmi=True)
    pmi: dict[float, dict[str, float]] = {}
    for t in tqdm(times, desc="scoring", unit="moment"):
        texts = list(dict.fromkeys(x for per_file in by_time[t] for x in per_file))
        if not texts:
            continue
        scores = ranker.score(SimpleNamespace(pair=anchors[t][0], candidates=tuple(texts)))
        pmi[t] = dict(zip(texts, map(float, scores.scores["pmi"]), strict=True))

    rng = np.random.default_rng(0)
    results: dict[str, list[float]] = {}

    def auc_of(name: str, chosen: dict[float, str], draw: int) -> None:
        ts = [t for t in times if chosen.get(t)]
        real = [anchors[t][1][(draw + i) % len(anchors[t][1])] for i, t in enumerate(ts)]
        auc = classifier_auc(real, [chosen[t] for t in ts], repeats=4, seed=draw)["mean"]
        results.setdefault(name, []).append(auc)

    for k in range(len(files)):
        first = {t: by_time[t][k][0] for t in times if len(by_time[t]) > k and by_time[t][k]}
        best4 = {
            t: max(by_time[t][k], key=lambda x, t=t: pmi[t][x])
            for t in times
            if len(by_time[t]) > k and by_time[t][k]
        }
        auc_of("first (served)", first, k)
        auc_of("pmi@4", best4, k)
    best_all = {t: max(pmi[t], key=pmi[t].get) for t in pmi}
    for draw in range(args.draws):
        auc_of("pmi@all", best_all, draw)
        soft = {}
        for t, scores in pmi.items():
            texts = list(scores)
            weights = np.exp(np.asarray([scores[x] for x in texts]) - max(scores.values()))
            soft[t] = texts[rng.choice(len(texts), p=weights / weights.sum())]
        auc_of("pmi-softmax", soft, draw)
        lengths = [len(x) for x in soft.values()]
        log.info("pmi-softmax draw %d: mean length %.1f", draw, statistics.mean(lengths))

    for name, aucs in results.items():
        sd = statistics.pstdev(aucs) if len(aucs) > 1 else 0.0
        log.info("%-16s AUC %.3f (s.d. %.3f; %d draws)", name, statistics.mean(aucs), sd, len(aucs))
    examples = sorted(best_all.items())[:: max(1, len(best_all) // 15)]
    for t, text in examples:
        log.info("  %7.1f s  pmi@all: %s", t, text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
