"""Block-list matching for the safety filter.

Terms match whole words (plus plural ``s``/``es``), so ``class`` never
matches ``ass`` and ``Niger`` never matches a double-g slur; a term written
``term*`` also matches words starting with it, ``*term`` words ending in it.
A candidate is read in several spellings, each after ``normalize.fold``:

- as written, with leetspeak read three ways (``1``/``!``/``|`` as i or l);
- with multi-character leetspeak undone (``|<`` k, ``\\/`` v, ``ph`` f, ``rn`` m)
  and with a capital I after lower case read as l (``kiII``);
- with letters spread out joined (``r e t a r d``, ``n.i.g.g.e.r``) and short
  pieces of a split word joined (``re tard``, ``k ys``);
- reversed, and turned back from upside-down text (terms whose reversal is an
  English word, ``wop`` -> ``pow``, are left out of the reversed reading);
- with one letter dropped or two swapped (``retrd``, ``kil yourself``): terms
  of 6+ letters, or words of 4+ letters in a term of several words, minus
  dropped forms that are English words (``niger``, ``fagot``).

A line starting with ``!`` in the block list is an exception: a phrase that
holds a term but is harmless (``!van dyke``), taken out before matching.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from chatling.core.errors import InputFileError
from chatling.safety.normalize import capital_i_as_l, flipped, fold, multi_leet

_DIGITS = {"0": "o", "3": "e", "4": "a", "5": "s", "6": "g", "7": "t", "8": "b", "9": "g"}
_SYMBOLS = {"@": "a", "$": "s", "+": "t", "(": "c", "€": "e", "¢": "c", "¡": "i", "©": "c",
            "¥": "y"}  # fmt: skip
# "1", "!" and "|" stand for i or l: each variant reads them one way; the last
# variant treats symbols as punctuation ("ass!" is "ass", not "assi").
_VARIANTS = [
    str.maketrans({**_DIGITS, **_SYMBOLS, "1": "i", "!": "i", "|": "l"}),
    str.maketrans({**_DIGITS, **_SYMBOLS, "1": "l", "!": "i", "|": "i"}),
    str.maketrans({**_DIGITS, "1": "i"}),
]
_LEET_CHARS = set(_DIGITS) | set(_SYMBOLS) | {"1", "!", "|"}
_LETTERS = re.compile(r"[a-z]+")
_HAS_LETTER = re.compile(r"[a-z]")
# English words one dropped letter away from a shipped term (checked against
# /usr/share/dict/american-english when the fuzzy reading was added).
FUZZY_EXCEPTIONS = frozenset({"niger", "fagot", "retar", "chin", "bunny"})
# Terms whose reversal is an English word: not matched in the reversed reading.
REVERSE_EXCEPTIONS = frozenset({"wop", "spaz", "yid", "gaf"})

STEPS = frozenset({"leet_multi", "capital_i", "collapse", "reverse", "fuzzy"})
"""The optional readings, named for measurement (``SafetyFilter(steps=...)``)."""


def word_pattern(word: str) -> str:
    """``c+`` for each letter, ``c{k,}`` for a doubled one: repeats collapse,
    but a double letter of the term stays required."""
    parts = []
    for ch, group in itertools.groupby(word):
        n = len(list(group))
        parts.append(f"{ch}+" if n == 1 else f"{ch}{{{n},}}")
    return "".join(parts)


def term_words(term: str) -> list[str] | None:
    """The folded words of a term (digits between letters are words of their own);
    ``None`` if it has no letters."""
    folded = fold(term.strip().strip("*"))
    if not re.search("[a-z]", folded):
        return None  # digits alone ("1488") never match: numbers are not leetspeak
    spaced = re.sub(r"(?<=[a-z])(\d+)(?=[a-z])", r" \1 ", folded)
    return _LETTERS.findall(spaced.translate(_VARIANTS[0]))


def _bounded(words: list[str], prefix: bool, suffix: bool) -> str:
    core = "[ ]?".join(word_pattern(w) for w in words)
    last = words[-1]
    plural = "(?:e?s+|z+)?" if last.endswith(("s", "x", "z", "ch", "sh")) else "(?:s+|z+)?"
    return ("[a-z]*" if prefix else "") + core + ("[a-z]*" if suffix else plural)


def compile_term(term: str) -> tuple[str, str] | None:
    """(bounded, loose) regex sources for one term; ``None`` if it has no letters."""
    body = term.strip()
    words = term_words(body)
    if words is None:
        return None
    bounded = _bounded(words, body.startswith("*"), body.endswith("*"))
    return bounded, "".join(word_pattern(w) for w in words)


def squeeze(word: str) -> str:
    """Repeated letters made one: the key misspellings are looked up by."""
    return "".join(ch for ch, _group in itertools.groupby(word))


def _misspellings(words: list[str]) -> set[str]:
    """Squeezed forms with one letter dropped or two neighbours swapped (see the module
    docstring), words joined by a space."""
    out: set[str] = set()
    single = len(words) == 1
    for wi, word in enumerate(words):
        if (single and len(word) < 6) or (not single and len(word) < 4):
            continue
        forms = {word[:i] + word[i + 1 :] for i in range(len(word))}
        forms |= {word[:i] + word[i + 1] + word[i] + word[i + 2 :] for i in range(len(word) - 1)}
        # A single word with a double letter undone is often a real word ("niger").
        banned = {squeeze(e) for e in FUZZY_EXCEPTIONS} | ({squeeze(word)} if single else set())
        for form in forms:
            if squeeze(form) not in banned:
                out.add(" ".join(squeeze(w) for w in [*words[:wi], form, *words[wi + 1 :]]))
    return out


@dataclass(frozen=True, slots=True)
class _Term:
    term: str
    bounded: re.Pattern[str]
    """Matches the term as whole words of the word/chunk streams."""
    loose: re.Pattern[str]
    """Matches the term anywhere in a run of spread-out letters."""
    reversible: bool


def _any(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns) or "(?!)")


def plain_words(folded: str) -> str:
    """The words of folded text with single-character leetspeak read as letters."""
    return _forms(folded, _VARIANTS[0])[0]


def _forms(folded: str, table: dict[int, str]) -> tuple[str, str, list[str], str]:
    """The text as seen by one leetspeak variant.

    Returns the word stream (words split at any non-letter), the chunk stream
    (each whitespace-separated chunk with its non-letters removed, so
    ``b.a.d`` is ``bad``), the runs of single letters spread over consecutive
    chunks (``b a d``), each joined into one string, and the joins of two or
    three neighbouring short chunks (``re tard`` -> ``retard``).
    """
    words: list[str] = []
    chunks: list[str] = []
    runs: list[str] = []
    run: list[str] = []
    for chunk in folded.split():
        if _HAS_LETTER.search(chunk) or (
            sum(1 for ch in chunk if ch.isalnum() or ch in _LEET_CHARS) == 1
        ):
            chunk = chunk.translate(table)
        parts = _LETTERS.findall(chunk)
        words += parts
        joined = "".join(parts)
        if not joined:
            continue  # pure punctuation or emoji does not break a spread-out word
        chunks.append(joined)
        if len(joined) == 1:
            run.append(joined)
            continue
        if len(run) > 1:
            runs.append("".join(run))
        run = []
    if len(run) > 1:
        runs.append("".join(run))
    joins = [
        a + b for a, b in itertools.pairwise(chunks) if min(len(a), len(b)) <= 3 and len(a + b) >= 3
    ]
    joins += [
        a + b + c for a, b, c in zip(chunks, chunks[1:], chunks[2:], strict=False)
        if max(len(a), len(b), len(c)) <= 3
    ]  # fmt: skip
    return " ".join(words), " ".join(chunks), runs, " ".join(joins)


class TermMatcher:
    """The block list compiled once; ``find(text)`` names the first term ``text`` holds."""

    def __init__(self, terms: Iterable[str], steps: Collection[str] = STEPS) -> None:
        self.steps = frozenset(steps)
        self.terms: list[_Term] = []
        self._fuzzy: dict[str, str] = {}
        seen: set[str] = set()
        terms = list(terms)
        exceptions = [t.strip()[1:] for t in terms if t.strip().startswith("!")]
        compiled_exceptions = [compile_term(t) for t in exceptions]
        self._exceptions = _any(
            rf"(?<![a-z]){c[0]}(?![a-z])" for c in compiled_exceptions if c is not None
        )
        for term in (t for t in terms if not t.strip().startswith("!")):
            compiled = compile_term(term)
            if compiled is None:
                raise ValueError(term)
            if compiled[0] in seen:
                continue
            seen.add(compiled[0])
            words = term_words(term) or []
            if "fuzzy" in self.steps:
                for form in _misspellings(words):
                    self._fuzzy.setdefault(form, term.strip())
            plain = "".join(words)
            self.terms.append(
                _Term(
                    term.strip(),
                    re.compile(rf"(?<![a-z])(?:{compiled[0]})(?![a-z])"),
                    re.compile(compiled[1]),
                    plain[::-1] not in REVERSE_EXCEPTIONS and plain not in REVERSE_EXCEPTIONS,
                )
            )
        self._fuzzy_lengths = sorted({form.count(" ") + 1 for form in self._fuzzy})
        self._fuzzy_first = frozenset(form.split(" ", 1)[0] for form in self._fuzzy)
        self._any_bounded = _any(t.bounded.pattern for t in self.terms)
        self._any_loose = _any(t.loose.pattern for t in self.terms)
        self._any_reversible = _any(t.bounded.pattern for t in self.terms if t.reversible)

    def _readings(self, text: str, folded: str) -> list[tuple[str, bool]]:
        """(folded spelling, reversed?) pairs to match, the text as written first."""
        readings = [(folded, False)]
        if "leet_multi" in self.steps:
            multi = multi_leet(folded)
            if multi != folded:
                readings.append((multi, False))
        if "capital_i" in self.steps and "I" in text:
            cased = fold(capital_i_as_l(text))
            if cased != folded:
                readings.append((cased, False))
        if "reverse" in self.steps:
            readings.append((folded[::-1], True))
            upside = flipped(text)
            if upside is not None:
                readings.append((upside, False))
        return readings

    def _match(self, pattern: re.Pattern[str], stream: str, loose: bool) -> str | None:
        if not stream or not pattern.search(stream):
            return None
        for t in self.terms:
            if (t.loose if loose else t.bounded).search(stream):
                return t.term
        return None

    def _misspelled(self, stream: str) -> str | None:
        """A term misspelled by one letter among the words of ``stream``."""
        words = [squeeze(w) for w in stream.split()]
        starts = [
            i for i, w in enumerate(words) if w in self._fuzzy_first or w[:-1] in self._fuzzy_first
        ]
        for n in self._fuzzy_lengths:
            for i in starts:
                if i + n > len(words):
                    continue
                key = " ".join(words[i : i + n])
                hit = self._fuzzy.get(key) or (
                    self._fuzzy.get(key[:-1]) if key.endswith("s") else None
                )
                if hit:
                    return hit
        return None

    def find(self, text: str, folded: str | None = None) -> str | None:
        """The first block-list term ``text`` contains, or ``None``."""
        folded = fold(text) if folded is None else folded
        collapse = "collapse" in self.steps
        done: set[tuple[str, bool]] = set()  # the three leet readings often agree
        for reading, reversed_ in self._readings(text, folded):
            if not reversed_:
                reading = self._exceptions.sub(" ", reading)
            bounded = self._any_reversible if reversed_ else self._any_bounded
            for table in _VARIANTS:
                words, chunks, runs, joins = _forms(reading, table)
                streams = [words, chunks, *(runs if not reversed_ else ())]
                if collapse:
                    streams.append(joins)
                for stream in streams:
                    loose = stream in runs and stream not in (words, chunks, joins)
                    if (stream, reversed_) in done:
                        continue
                    done.add((stream, reversed_))
                    hit = self._match(self._any_loose if loose else bounded, stream, loose)
                    if hit and (not reversed_ or self._reversible(hit)):
                        return hit
                    if not reversed_ and not loose and self._fuzzy:
                        hit = self._misspelled(stream)
                        if hit:
                            return hit
        return None

    def _reversible(self, term: str) -> bool:
        return next((t.reversible for t in self.terms if t.term == term), False)


def load_blocked_terms(path: str | Path) -> list[str]:
    """Read a block list: one term a line, blank lines and ``#`` comments skipped."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputFileError(
            path, None,
            f"cannot read the blocked terms file ({exc.strerror}): create it or point "
            "CHATLING_REPLY__BLOCKED_TERMS_FILE at one",
        ) from None  # fmt: skip
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputFileError(
            path, f"byte {exc.start}", "not UTF-8 text: save the block list as UTF-8"
        ) from None
    terms: list[str] = []
    for number, line in enumerate(content.splitlines(), start=1):
        term = line.strip()
        if not term or term.startswith("#"):
            continue
        if compile_term(term) is None:
            raise InputFileError(
                path, f"line {number}",
                f"term {term!r} has no letters: write it in letters or delete the line",
            )  # fmt: skip
        terms.append(term)
    return terms
