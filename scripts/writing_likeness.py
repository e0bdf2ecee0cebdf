"""A learned chat-likeness chooser, tried on validation and rejected (the writing issue).

Why it was tried: the issue lists "a small chat-likeness scorer trained on training data
only" among the levers. A logistic regression on TF-IDF features (words and word pairs,
or word-bounded character 2-4-grams; case kept) is fitted on the real chat lines of
*training* moments (label 1) against the candidates the filter allowed there (label 0),
from a `chatling generate` file made at training moments only. It is not the
evaluation's classifier: that one is fitted per fold on the held-out moments; this one
never sees one. Then the validation file's candidates are re-picked offline, as
`scripts/writing_choosers.py` does, by variant: `best` (the likeliest real line),
`dropworst` (drop the least likely, then the first), `sample` (draw in proportion to
the odds), against `first` (the default), all with chant_min=2.

Result (docs/results.md, "A learned chooser"): every variant read *less* like chat than
the first allowed candidate. Kept as a script, out of the product.

Run:
  .venv/bin/python scripts/writing_likeness.py --train-generated TRAIN_MOMENTS.jsonl \
      --not-after 1152 --data data/runs/dougdoug-val --generated VAL.jsonl [--features word]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from writing_choosers import allowed_candidates

from chatling.core.errors import InputFileError
from chatling.training.data.splits import load_split
from chatling.training.eval.writing import (
    read_moments,
    summary_rows,
    writing_metrics,
)

log = logging.getLogger("writing_likeness")

FEATURES = {"word": ("word", (1, 2)), "char": ("char_wb", (2, 4))}
TOKEN = r"[^\W_]+|[^\w\s]+"


def training_texts(path: Path, not_after: float) -> tuple[list[str], list[str]]:
    """(real lines, allowed candidates) of every moment; refuses a held-out moment."""
    moments = read_moments(path)
    late = [m.time for m in moments if m.time > not_after]
    if late:
        raise InputFileError(path, None, f"{len(late)} moment(s) after {not_after:.0f} s")
    real = [t for m in moments for t in m.real if t.strip()]
    generated = [c["text"] for m in moments for c in m.candidates if c["allowed"] and c["text"]]
    return real, generated


def fit(real: list[str], generated: list[str], features: str) -> tuple[Any, float]:
    """The fitted pipeline and its 5-fold AUC on its own (training) data."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline

    analyzer, ngrams = FEATURES[features]

    def pipeline() -> Any:
        return make_pipeline(
            TfidfVectorizer(
                analyzer=analyzer,
                ngram_range=ngrams,
                token_pattern=TOKEN if analyzer == "word" else None,
                lowercase=False,
                sublinear_tf=True,
                min_df=2,
            ),
            LogisticRegression(class_weight="balanced", max_iter=2000, random_state=0),
        )

    texts, labels = real + generated, [1] * len(real) + [0] * len(generated)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    auc = cross_val_score(pipeline(), texts, labels, cv=folds, scoring="roc_auc").mean()
    return pipeline().fit(texts, labels), float(auc)


def pick(allowed: list[dict[str, Any]], scores: list[float], variant: str, rng: random.Random):
    if variant == "first":
        return allowed[0]
    if variant == "best":
        return allowed[scores.index(max(scores))]
    if variant == "dropworst":
        if len(allowed) == 1:
            return allowed[0]
        worst = scores.index(min(scores))
        return next(c for i, c in enumerate(allowed) if i != worst)
    return rng.choices(allowed, weights=[math.exp(s) for s in scores])[0]  # sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-generated", type=Path, required=True)
    parser.add_argument("--not-after", type=float, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--generated", type=Path, required=True)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--features", choices=sorted(FEATURES), default="word")
    parser.add_argument("--chant-min", type=int, default=2)
    args = parser.parse_args()
    real, generated = training_texts(args.train_generated, args.not_after)
    model, auc = fit(real, generated, args.features)
    print(f"chooser: {len(real)} real / {len(generated)} candidates, own 5-fold AUC {auc:.3f}")
    train, _ = load_split(args.data, "time", args.test_fraction)
    for variant in ("first", "best", "dropworst", "sample"):
        rng = random.Random(0)
        moments = []
        for m in read_moments(args.generated):
            allowed = allowed_candidates(m.candidates, m.recent_chat, args.chant_min)
            chosen = None
            if allowed:
                scores = list(model.decision_function([c["text"] for c in allowed]))
                chosen = pick(allowed, scores, variant, rng)["text"]
            moments.append(dataclasses.replace(m, chosen=chosen))
        data = writing_metrics(moments, [p.target for p in train], seed=0)
        rows = {r[0]: r[-1] for r in summary_rows(data)}
        auc_row = next(v for k, v in rows.items() if k.startswith("classifier AUC"))
        w1 = next(v for k, v in rows.items() if "Wasserstein" in k)
        print(f"{variant:10s} AUC {auc_row}  W1 {w1}")


if __name__ == "__main__":
    main()
