"""Pick one reply among the candidates that passed the safety filter.

A deliberately simple, pure scorer: chat messages are short, so candidates
far from chat's usual length lose points; a candidate that picks up words the
streamer or chat just used gains (chat echoes the stream); one that only
repeats itself loses. Ties keep the engine's order.
"""

from __future__ import annotations

import re

from chatling.context import ContextSnapshot

_WORD = re.compile(r"[a-z0-9']+")
_STOPWORDS = frozenset(
    "a an the and or but to of in on at for is are was were be it this that i you he she we they "
    "me my your so just like im its do does did not no yes oh".split()
)


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS and len(w) > 2}


def score_candidate(text: str, snapshot: ContextSnapshot, target_text: str | None = None) -> float:
    """Higher is better. Pure: depends only on the text and the context shown."""
    words = _WORD.findall(text.lower())
    if not words:
        return -10.0
    n = len(words)
    length_score = 1.0 if 2 <= n <= 14 else -0.15 * abs(n - (2 if n < 2 else 14))
    context_words: set[str] = set()
    for utterance in snapshot.utterances[-3:]:
        context_words |= _content_words(utterance.text)
    for message in snapshot.chat[-8:]:
        context_words |= _content_words(message.text)
    if target_text:
        context_words |= _content_words(target_text)
    mine = _content_words(text)
    relevance = len(mine & context_words) / (len(mine) or 1)
    repetition = 1.0 - len(set(words)) / n
    return length_score + 1.5 * relevance - 2.0 * repetition
