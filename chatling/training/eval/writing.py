"""What the bot writes, against the real chat of the same moments.

``../shared/docs/evaluation-protocol.md``, "What the bot writes": ranking asks
whether a model recognises the real message; viewers see what it posts. From
a ``chatling generate`` file (one line per held-out moment: the candidates,
the one posted, the real messages) this computes:

- **a classifier's AUC** telling posted replies from real messages of the same
  moments (character 1-4-gram TF-IDF + logistic regression, repeated
  stratified cross-validation; 0.5 = indistinguishable), with two controls
  that are real chat by construction: another real message of the same moment
  (the floor) and a random training message per moment (topic drift alone);
- **shape**: length in characters (mean, median, Wasserstein-1 to real), the
  shares of one-word, all-caps and emote-only messages;
- **distinct-1/2**, **copies** of the prompt's recent chat and of the training set;
- **junk**: echoes of the prompt's fixed text (persona, templates), a copied
  ``name:`` prefix, assistant talk, a reply cut off at the token limit, markup;
- the share of candidates the filter blocked and of moments with nothing postable;
- twenty moments side by side.

scikit-learn does the classifier and the folds (a well-kept library, the
protocol's recipe); the rest is counting.
"""

from __future__ import annotations

import dataclasses
import json
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chatling.core.errors import InputFileError
from chatling.safety import dedupe_key
from chatling.training.eval.metrics import EMOTES, distinct_n, wasserstein_1d


@dataclass(frozen=True, slots=True)
class Moment:
    """One line of a ``chatling generate`` file."""

    time: float
    prompt: str
    candidates: tuple[dict[str, Any], ...]
    chosen: str | None
    real: tuple[str, ...]
    recent_chat: tuple[str, ...]


def read_moments(path: Path) -> list[Moment]:
    """The moments of a ``chatling generate`` JSONL file; a bad line names its number."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(path, None, f"cannot read the generated replies ({exc})") from None
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append(
                Moment(
                    time=float(row["time"]),
                    prompt=str(row.get("prompt") or ""),
                    candidates=tuple(row.get("candidates") or ()),
                    chosen=row["chosen"],
                    real=tuple(str(x) for x in row["real"]),
                    recent_chat=tuple(str(x) for x in row.get("recent_chat") or ()),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InputFileError(
                path, f"line {number}", f"not a `chatling generate` moment ({exc})"
            ) from None
    if not out:
        raise InputFileError(path, None, "holds no moments")
    return out


def is_generate_file(path: Path) -> bool:
    """Whether ``path`` looks like ``chatling generate`` output (JSONL with ``chosen``)."""
    if path.suffix != ".jsonl":
        return False
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    return "chosen" in json.loads(line)
                except ValueError:
                    return False
    return False


# --- the classifier -------------------------------------------------------------------------


def classifier_auc(
    real: Sequence[str], other: Sequence[str], *, folds: int = 5, repeats: int = 10, seed: int = 0
) -> dict[str, float]:
    """Mean ROC AUC (and spread over folds) of telling ``other`` from ``real``.

    Character 1-4-gram TF-IDF (``char_wb``, case kept: all caps is a feature of
    chat) and logistic regression, repeated stratified k-fold. The sets are
    balanced by the caller (one message per moment on each side).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline

    texts = [*real, *other]
    labels = np.asarray([0] * len(real) + [1] * len(other))
    k = min(folds, len(real), len(other))
    if k < 2:
        return {"mean": float("nan"), "std": float("nan"), "n": len(texts)}
    model = make_pipeline(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), lowercase=False, sublinear_tf=True),
        LogisticRegression(max_iter=2000, C=1.0),
    )
    cv = RepeatedStratifiedKFold(n_splits=k, n_repeats=repeats, random_state=seed)
    scores = cross_val_score(model, texts, labels, cv=cv, scoring="roc_auc")
    return {
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores)),
        "p2.5": float(np.percentile(scores, 2.5)),
        "p97.5": float(np.percentile(scores, 97.5)),
        "n": len(texts),
    }


# --- shape and junk ---------------------------------------------------------------------------

_LETTERS = re.compile(r"[^\W\d_]")
_NAME_PREFIX = re.compile(r"^\s*@?[A-Za-z0-9_]{2,25}\s*:\s")
_ASSISTANT = re.compile(
    r"\b(as an ai|language model|i'?m sorry|i apologi[sz]e|i can(?:no|')t (?:help|assist|do)|"
    r"here(?:'s| is) (?:a|my|the|your)|i'?d be happy|sure[,!] here|chat message|"
    r"next message|one short|viewer message|as a viewer|respond(?:ing)? to)\b",
    re.I,
)
_MARKUP = re.compile(r"</?[a-z_]+[^<>]*>|\[/?[a-z_ ]+\]|```|\*\*|^#+ |\{[a-z_]+\}|<\|", re.I)


def is_emote_only(text: str) -> bool:
    words = text.split()
    return bool(words) and all(w in EMOTES or (len(w) > 2 and w[0] == w[-1] == ":") for w in words)


def is_all_caps(text: str) -> bool:
    letters = _LETTERS.findall(text)
    return bool(letters) and all(c.isupper() for c in letters if c.isalpha())


def shingles(text: str, n: int = 4) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", text.casefold())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def fixed_prompt_text(root: Path | None = None) -> str:
    """The prompt's fixed text: persona and templates (what a prompt echo copies)."""
    from chatling.core.paths import PROJECT_ROOT

    folder = (root or PROJECT_ROOT) / "prompts"
    return "\n".join(
        (folder / name).read_text(encoding="utf-8")
        for name in ("persona.txt", "reply.txt", "addressed.txt", "chatlog.txt")
        if (folder / name).exists()
    )


def junk_kind(text: str, *, truncated: bool, fixed: set[tuple[str, ...]]) -> str | None:
    """Why a posted line is junk, or None. Order: the most specific reason first."""
    if fixed and len(shingles(text) & fixed) >= 1:
        return "prompt echo"
    if _NAME_PREFIX.match(text):
        return "name prefix"
    if _ASSISTANT.search(text):
        return "assistant talk"
    if _MARKUP.search(text):
        return "markup"
    if truncated:
        return "cut off"
    return None


def shape(texts: Sequence[str]) -> dict[str, float]:
    lengths = [len(t) for t in texts]
    return {
        "n": len(texts),
        "length_mean": float(np.mean(lengths)) if lengths else float("nan"),
        "length_median": float(statistics.median(lengths)) if lengths else float("nan"),
        "one_word": float(np.mean([len(t.split()) == 1 for t in texts])) if texts else 0.0,
        "all_caps": float(np.mean([is_all_caps(t) for t in texts])) if texts else 0.0,
        "emote_only": float(np.mean([is_emote_only(t) for t in texts])) if texts else 0.0,
    }


# --- the whole evaluation ---------------------------------------------------------------------


def _chat_text(line: str) -> str:
    return line.partition(": ")[2] if ": " in line else line


def writing_metrics(
    moments: Sequence[Moment],
    train_messages: Iterable[str],
    *,
    seed: int = 0,
    repeats: int = 10,
    fixed_text: str | None = None,
    examples: int = 20,
) -> dict[str, Any]:
    """Every figure of the protocol's "What the bot writes" for one generate file."""
    rng = np.random.default_rng(seed)
    train = [m for m in train_messages if m.strip()]
    train_keys = {dedupe_key(m) for m in train}
    fixed = shingles(fixed_text if fixed_text is not None else fixed_prompt_text())
    with_real = [m for m in moments if m.real]
    posted_moments = [m for m in with_real if m.chosen]
    posted = [m.chosen for m in posted_moments if m.chosen]
    one_real = [m.real[int(rng.integers(len(m.real)))] for m in posted_moments]
    all_real = [r for m in with_real for r in m.real]

    two = [m for m in with_real if len(m.real) >= 2]
    pick = [rng.permutation(len(m.real))[:2] for m in two]
    same_a = [m.real[int(i[0])] for m, i in zip(two, pick, strict=True)]
    same_b = [m.real[int(i[1])] for m, i in zip(two, pick, strict=True)]
    random_train = [train[int(rng.integers(len(train)))] for _ in posted_moments] if train else []

    candidates = [c for m in moments for c in m.candidates]
    chosen_cut = []
    for m in posted_moments:
        cut = next((bool(c.get("truncated")) for c in m.candidates if c["text"] == m.chosen), False)
        chosen_cut.append(cut)
    junk = [
        junk_kind(t, truncated=cut, fixed=fixed) for t, cut in zip(posted, chosen_cut, strict=True)
    ]
    recent_copy = [
        dedupe_key(t) in {dedupe_key(_chat_text(x)) for x in m.recent_chat}
        for t, m in zip(posted, posted_moments, strict=True)
    ]
    real_sample = [all_real[i] for i in rng.permutation(len(all_real))[: len(posted)]]
    out: dict[str, Any] = {
        "moments": len(moments),
        "posted": len(posted),
        "postable_share": len(posted_moments) / max(1, len(with_real)),
        "classifier_auc": {
            "posted vs real": classifier_auc(one_real, posted, repeats=repeats, seed=seed),
            "control: another real message of the moment": classifier_auc(
                same_a, same_b, repeats=repeats, seed=seed
            ),
            "control: a random training message": classifier_auc(
                one_real, random_train, repeats=repeats, seed=seed
            ),
        },
        "shape": {"real": shape(all_real), "posted": shape(posted)},
        "length_wasserstein_chars": wasserstein_1d(
            [len(t) for t in posted], [len(t) for t in all_real]
        ),
        "distinct": {
            f"{who}_{n}": distinct_n([t.casefold().split() for t in texts], n)
            for who, texts in (("posted", posted), ("real", real_sample))
            for n in (1, 2)
        },
        "copies": {
            "recent_chat": float(np.mean(recent_copy)) if posted else 0.0,
            "training_set": float(np.mean([dedupe_key(t) in train_keys for t in posted]))
            if posted
            else 0.0,
            "real_training_set": float(np.mean([dedupe_key(t) in train_keys for t in all_real]))
            if all_real
            else 0.0,
        },
        "junk": {
            "share": float(np.mean([j is not None for j in junk])) if junk else 0.0,
            "kinds": {k: junk.count(k) for k in sorted({j for j in junk if j})},
        },
        "candidates": {
            "n": len(candidates),
            "blocked_share": float(np.mean([not c["allowed"] for c in candidates]))
            if candidates
            else 0.0,
            "blocked_reasons": _count(c["reason"] for c in candidates if not c["allowed"]),
            "truncated_share": float(np.mean([bool(c.get("truncated")) for c in candidates]))
            if candidates
            else 0.0,
        },
        "side_by_side": [
            {"time": m.time, "real": list(m.real[:3]), "posted": m.chosen}
            for m in sorted(with_real, key=lambda m: m.time)[:: max(1, len(with_real) // examples)][
                :examples
            ]
        ],
    }
    return out


def _count(items: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def summary_rows(data: dict[str, Any]) -> list[list[str]]:
    """The headline table: real chat against what was posted."""
    real, posted = data["shape"]["real"], data["shape"]["posted"]
    auc = data["classifier_auc"]
    cell = lambda e: f"{e['mean']:.3f} ± {e['std']:.3f}"  # noqa: E731
    return [
        ["classifier AUC (0.5 = cannot tell)", "–", cell(auc["posted vs real"])],
        [
            "control: another real message of the moment (the floor)",
            "–",
            cell(auc["control: another real message of the moment"]),
        ],
        [
            "control: a random training message (topic drift alone)",
            "–",
            cell(auc["control: a random training message"]),
        ],
        [
            "length mean / median (chars)",
            f"{real['length_mean']:.1f} / {real['length_median']:.0f}",
            f"{posted['length_mean']:.1f} / {posted['length_median']:.0f}",
        ],
        ["length Wasserstein-1 (chars)", "–", f"{data['length_wasserstein_chars']:.2f}"],
        [
            "one-word / all-caps / emote-only",
            f"{real['one_word']:.1%} / {real['all_caps']:.1%} / {real['emote_only']:.1%}",
            f"{posted['one_word']:.1%} / {posted['all_caps']:.1%} / {posted['emote_only']:.1%}",
        ],
        [
            "distinct-1 / distinct-2",
            f"{data['distinct']['real_1']:.3f} / {data['distinct']['real_2']:.3f}",
            f"{data['distinct']['posted_1']:.3f} / {data['distinct']['posted_2']:.3f}",
        ],
        [
            "copies of recent chat / of the training set",
            f"– / {data['copies']['real_training_set']:.1%}",
            f"{data['copies']['recent_chat']:.1%} / {data['copies']['training_set']:.1%}",
        ],
        ["junk (share of posts)", "–", f"{data['junk']['share']:.1%} {data['junk']['kinds']}"],
        [
            "candidates blocked / moments with nothing postable",
            "–",
            f"{data['candidates']['blocked_share']:.1%} / {1 - data['postable_share']:.1%}",
        ],
    ]


# --- the mean over draws ---------------------------------------------------------------------


def posted_draw(moments: Sequence[Moment], k: int) -> list[Moment]:
    """The moments with their k-th allowed candidate posted (cycling where fewer are allowed;
    None where none is). ``k = 0`` is what the served ``first`` chooser posts."""
    out = []
    for m in moments:
        allowed = [c for c in m.candidates if c.get("allowed")]
        chosen = str(allowed[k % len(allowed)]["text"]) if allowed else None
        out.append(dataclasses.replace(m, chosen=chosen))
    return out


def draw_aucs(files: Sequence[Sequence[Moment]], *, repeats: int = 4) -> list[float]:
    """One classifier AUC per (generate file, candidate slot): the setting's draws.

    Why: one generation's AUC strays by about 0.04 from the sampling seed alone (SFT b on
    DougDoug validation: 0.722 / 0.682 / 0.716 with seeds 0 / 1 / 2), as much as most
    differences between settings. Every candidate of a moment is an independent sample of
    the served setting there, so the k-th allowed candidate of every moment is one more full
    set of posts; each is scored against its own draw of one real message per moment. The
    mean over files and slots is what settings are compared on (``scripts/writing_draws.py``).
    """
    aucs = []
    for moments in files:
        with_real = [m for m in moments if m.real]
        if not with_real:
            continue
        slots = max(len(m.candidates) for m in with_real)
        for k in range(slots):
            posted = [m for m in posted_draw(with_real, k) if m.chosen]
            real = [m.real[(k + i) % len(m.real)] for i, m in enumerate(posted)]
            chosen = [str(m.chosen) for m in posted]
            aucs.append(classifier_auc(real, chosen, repeats=repeats, seed=k)["mean"])
    return aucs


__all__ = [
    "Moment",
    "classifier_auc",
    "draw_aucs",
    "is_generate_file",
    "junk_kind",
    "posted_draw",
    "read_moments",
    "shape",
    "summary_rows",
    "writing_metrics",
]
