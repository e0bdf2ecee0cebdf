"""Pick the candidate that talks about what the chat is talking about right now.

Why: a 135M model follows the chat log's *form* better than its *topic* (it
writes `STITCHLANDISM` while chat names countries), and what gives a bot away
is mostly the topic. Among the allowed candidates, the one sharing the most
words with the recent chat lines is the likeliest to read like the moment.

Deliberately simple and not learned: word overlap, case and punctuation
aside, with common function words ignored, weighted by how many recent lines
use the word and normalised by the candidate's length so a long line does not
win by size. Ties keep the model's own order, so with no overlap anywhere
this is the ``first`` chooser. It shares no parameters with the evaluation's
classifier (character n-grams, trained on posted against real lines); it only
reads the prompt's recent chat, which the live bot has.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# The most common English function words: shared by every line, they say nothing of the topic.
_STOP = frozenset(
    "a an and are as at be but by do for from he i if in is it its me my no not of on or so "
    "that the this to was we what with you your yes im its dont thats just".split()
)


def content_words(text: str) -> list[str]:
    """Case-folded words of ``text`` minus function words (a speaker's ``name:`` included)."""
    return [w for w in _WORD.findall(text.casefold()) if w not in _STOP]


def _line_text(line: str) -> str:
    """A recent chat line as the prompt shows it (``name: text``) without the name."""
    name, sep, text = line.partition(": ")
    return text if sep and " " not in name else line


def topical_scores(candidates: Sequence[str], recent_chat: Sequence[str]) -> list[float]:
    """For each candidate: the recent lines its words appear in, summed, over sqrt(its words)."""
    line_counts: Counter[str] = Counter()
    for line in recent_chat:
        line_counts.update(set(content_words(_line_text(line))))
    scores = []
    for text in candidates:
        words = set(content_words(text))
        if not words:
            scores.append(0.0)
            continue
        scores.append(sum(line_counts[w] for w in words) / math.sqrt(len(words)))
    return scores


def topical_choice(candidates: Sequence[str], recent_chat: Sequence[str]) -> int:
    """Index of the most topical candidate; the first one on a tie. ``candidates`` is non-empty."""
    if not candidates:
        raise ValueError("topical_choice needs at least one candidate")
    scores = topical_scores(candidates, recent_chat)
    best = max(scores)
    return scores.index(best)
