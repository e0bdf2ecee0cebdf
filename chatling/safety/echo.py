"""Prompt echo for the safety filter: a candidate that copies the prompt's fixed text.

A small model sometimes writes its instructions back ("You are chatling, a
regular viewer...", "Only the message text, one line."). The fixed text is
what the bot's own files say (persona, chat-log, reply and addressed
templates, with ``{placeholders}`` as gaps) plus, when the caller passes a
rendered prompt that none of those templates made, every part of it outside
the quoted data blocks (``<transcript>``, ``<chat>``, ``<message>``) and the
chat-log lines (``name: text``): so a persona set elsewhere is known too,
while copying words of recent chat is left to the duplicate rule.

A candidate echoes when its words covered by 3-word sequences of the fixed
text reach 5, or 4 making up all of it: "you are chatling, a legend" (4 of 5
covered) passes, "only the message text, one line" (6) does not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from chatling.safety.normalize import fold

_WORD = re.compile(r"[a-z0-9']+")
_DATA_BLOCK = re.compile(r"<(transcript|chat|message)>.*?</\1>", re.DOTALL | re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\{[a-z_]+\}")
N = 3
MIN_COVERED = 5
MIN_COVERED_SHORT = 4


def _words(text: str) -> list[str]:
    return _WORD.findall(fold(text).replace("’", "'"))


def _grams(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + N]) for i in range(len(words) - N + 1)}


def fixed_grams(texts: Iterable[str]) -> frozenset[tuple[str, ...]]:
    """The 3-word sequences of fixed prompt text; placeholders split sequences."""
    grams: set[tuple[str, ...]] = set()
    for text in texts:
        for piece in _PLACEHOLDER.split(_DATA_BLOCK.sub("\n", text)):
            for line in re.split(r"[\n<>]", piece):
                grams |= _grams(_words(line))
    return frozenset(grams)


_CHAT_LINE = re.compile(r"^[^\s:]{1,25}: .*$", re.MULTILINE)


def template_patterns(texts: Iterable[str]) -> list[re.Pattern[str]]:
    """Each known template as a pattern its rendered prompts match (placeholders: any text)."""
    return [
        re.compile(
            r"\A\s*" + "(?:.*?)".join(re.escape(p) for p in _PLACEHOLDER.split(t.strip()))
            + r"\s*\Z", re.DOTALL,
        )
        for t in texts
    ]  # fmt: skip


def prompt_grams(
    prompt: str,
    known: frozenset[tuple[str, ...]],
    templates: list[re.Pattern[str]],
) -> frozenset[tuple[str, ...]]:
    """The fixed text's sequences given a rendered prompt: a prompt made from a known
    template adds nothing (the files' text is ``known``); another one adds its text
    outside data blocks and chat-log lines (``name: text``)."""
    if any(p.match(prompt) for p in templates):
        return known
    return known | fixed_grams([_CHAT_LINE.sub("", prompt)])


def echoes(text: str, grams: frozenset[tuple[str, ...]] | set[tuple[str, ...]]) -> bool:
    """Whether ``text`` copies enough of the fixed prompt text (see the module docstring)."""
    words = _words(text)
    if len(words) < N or not grams:
        return False
    covered = [False] * len(words)
    for i in range(len(words) - N + 1):
        if tuple(words[i : i + N]) in grams:
            for j in range(i, i + N):
                covered[j] = True
    count = sum(covered)
    return count >= MIN_COVERED or MIN_COVERED_SHORT <= count == len(words)
