"""A learned second opinion for the safety filter: an offensive-language classifier.

``alt-profanity-check`` ships a linear SVM over a TF-IDF of words (trained on
labelled tweets and Wikipedia talk comments) inside its wheel: it runs
locally, in about 0.1 ms a line, with our scikit-learn. On its own it reads
every swear as offensive: chat's own ``what the fuck`` scores 1.0, and the
classifier at 0.5 would block 4.5% of real chat. So it decides only lines
aimed at someone (``you``, ``your``, ``ur``, an ``@name``), and reads the
text with lookalike letters and leetspeak undone (``y0u 1d10t``). The
threshold is ``OFFENSIVE_THRESHOLD``, chosen on the validation half of
``tests/data/safety_corpus.jsonl`` and on real chat (see docs/reliability.md);
a block is logged as its own reason, ``offensive``.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from dataclasses import dataclass

OFFENSIVE_THRESHOLD = 0.95
_AIMED = re.compile(
    r"\b(?:you|u|ur|your|youre|you're|yours|yourself|urself|yourselves|ya|yall|y'all|thou)\b"
    r"|@\w"
)


_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # the vectorizer's own token_pattern


@dataclass(frozen=True, slots=True)
class _Linear:
    """The packaged model as plain numbers: per word its idf and its weight in each
    of the calibrated SVMs; per SVM its intercept and sigmoid (a, b)."""

    words: dict[str, tuple[float, tuple[float, ...]]]
    intercepts: tuple[float, ...]
    sigmoids: tuple[tuple[float, float], ...]


def load_model() -> None:
    """Unpack the classifier now rather than on the first candidate."""
    _model()


@functools.cache
def _model() -> _Linear:
    """The packaged TF-IDF + calibrated LinearSVC, unpacked on first use (0.5 s).

    scikit-learn's ``predict_proba`` spends ~16 ms a call validating its input;
    the same arithmetic in Python takes ~20 us for a chat line
    (tests/test_safety_new.py checks both agree).
    """
    from profanity_check import profanity_check

    vectorizer, model = profanity_check.vectorizer, profanity_check.model
    calibrated = model.calibrated_classifiers_
    coefs = [c.estimator.coef_[0] for c in calibrated]
    idf = vectorizer.idf_
    words = {
        word: (float(idf[i]), tuple(float(c[i]) for c in coefs))
        for word, i in vectorizer.vocabulary_.items()
    }
    return _Linear(
        words,
        tuple(float(c.estimator.intercept_[0]) for c in calibrated),
        tuple((float(c.calibrators[0].a_), float(c.calibrators[0].b_)) for c in calibrated),
    )


def offensive_score(text: str) -> float:
    """The classifier's probability that ``text`` is offensive (0 to 1)."""
    model = _model()
    counts = Counter(t for t in _TOKEN.findall(text.lower()) if t in model.words)
    if not counts:
        weighted: list[tuple[float, tuple[float, ...]]] = []
        norm = 1.0
    else:
        weighted = [(n * model.words[w][0], model.words[w][1]) for w, n in counts.items()]
        norm = math.sqrt(sum(x * x for x, _ in weighted))
    total = 0.0
    for k, (intercept, (a, b)) in enumerate(zip(model.intercepts, model.sigmoids, strict=True)):
        decision = intercept + sum(x * coefs[k] for x, coefs in weighted) / norm
        total += 1.0 / (1.0 + math.exp(a * decision + b))
    return total / len(model.intercepts)


def is_aimed(text: str) -> bool:
    """Whether ``text`` (folded) addresses someone: only then may it insult them."""
    return _AIMED.search(text) is not None


def offensive(text: str, threshold: float = OFFENSIVE_THRESHOLD) -> bool:
    """Whether the folded, de-leeted ``text`` insults someone by the classifier's reading."""
    return is_aimed(text) and offensive_score(text) >= threshold
