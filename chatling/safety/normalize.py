"""Text normalisation for the safety filter, on Unicode's own data.

``fold(text)`` gives the form the block list is matched on: default-ignorable
and format characters removed, NFKD, casefolded, every non-ASCII letter
mapped to the ASCII letter it looks like, in this order of evidence (after
a short hand-made table of the commonest lookalikes, kept from the first filter):

1. its NFKD decomposition without combining marks (``é`` -> ``e``);
2. the UTS #39 confusables data shipped by ``confusable-homoglyphs``
   (Cherokee ``Ꮶ``, Greek lunate ``ϲ``, Lisu, Coptic: up to two hops in its
   homoglyph graph, so ``ᴋ`` -> ``ĸ`` -> ``k``);
3. its Unicode name without the ``WITH ...`` part (``ҝ`` CYRILLIC SMALL
   LETTER KA WITH VERTICAL STROKE -> ``к`` -> ``k``);
4. ``anyascii``'s transliteration (letters only, at most 2 ASCII letters).

Letters with no Latin reading (Han, kana, Hangul) stay as they are. The map is
built per character once (``functools.cache``), so ``fold`` costs a dict
lookup a character. Also here: the other spellings matched besides the folded
text (multi-character leetspeak, capital ``I`` for ``l``, reversed and
upside-down text), combining-mark density (zalgo) and mixed-script words.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from importlib import resources

from anyascii import anyascii

# Not all of these are Cf: Hangul fillers are letters, U+034F and variation
# selectors are marks. All are default-ignorable (DerivedCoreProperties.txt).
_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160),
    (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)  # fmt: skip
BLANK_LOOKING = frozenset(
    "\u2800\u3000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
)
"""Characters that render as nothing or as space but are not ignorable (Braille blank)."""

_EXTRA = {
    # Lookalikes by hand (the filter's first table): where the confusables data has no
    # ASCII reading and anyascii's would be phonetic (Ukrainian "є" -> "ie").
    "а": "a", "в": "b", "г": "r", "е": "e", "һ": "h", "і": "i", "ј": "j", "к": "k",
    "м": "m", "н": "h", "о": "o", "п": "n", "р": "p", "с": "c", "т": "t", "у": "y",
    "х": "x", "ш": "w", "ь": "b", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w",
    "ү": "y", "ɡ": "g", "є": "e", "օ": "o", "ս": "u", "հ": "h", "ո": "n", "ց": "g",
    "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "μ": "u",
    "ν": "v", "ο": "o", "ρ": "p", "σ": "o", "τ": "t", "υ": "u", "χ": "x", "ω": "w",
    "ı": "i", "ȷ": "j", "ƒ": "f", "ɑ": "a", "ɩ": "i", "ø": "o", "đ": "d", "ł": "l",
    "ħ": "h", "ŧ": "t", "æ": "ae", "œ": "oe", "ð": "d",
    # Full stops NFKD leaves alone: a lookalike dot is a dot for links too.
    "。": ".", "｡": ".", "․": ".", "·": ".", "•": ".", "∙": ".", "⋅": ".", "●": ".",
    # Negative circled and squared letters, regional indicators (🅺, 🆈, 🇸).
    **{chr(base + i): chr(97 + i) for base in (0x1F150, 0x1F170, 0x1F1E6) for i in range(26)},
}  # fmt: skip
_DOTS = frozenset("。｡․·•∙⋅●")
_TURNED = {
    "ɐ": "a", "ɔ": "c", "ǝ": "e", "ɟ": "f", "ƃ": "g", "ɓ": "g", "ɥ": "h", "ᴉ": "i", "ı": "i",
    "ɾ": "j", "ʞ": "k", "ꞁ": "l", "ɯ": "m", "ɹ": "r", "ʇ": "t", "ʌ": "v", "ʍ": "w", "ʎ": "y",
    "∩": "n", "ʁ": "r", "˙": ".", "¿": "?", "¡": "!",
}  # fmt: skip
"""Letters of upside-down text and what they read as turned back."""
_FLIP_SWAP = str.maketrans("bqdpnu69", "qbpdun96")
_TRANSLITERATED = frozenset(
    {"LATIN", "CYRILLIC", "GREEK", "COPTIC", "CHEROKEE", "LISU", "ARMENIAN", "GEORGIAN",
     "MODIFIER", "MATHEMATICAL", "GLAGOLITIC", "OLD", "RUNIC", "CANADIAN", "VAI", "BAMUM"}
)  # fmt: skip
"""Scripts whose letters anyascii may read as Latin (not Han, kana, Hangul, Arabic...)."""
_MULTI_LEET = (
    ("|<", "k"), ("l<", "k"), ("1<", "k"), ("\\/", "v"), ("\\/\\/", "w"), ("vv", "w"),
    ("|)", "d"), ("()", "o"), ("/\\", "a"), ("|_|", "u"), ("><", "x"), ("ph", "f"),
    ("rn", "m"), ("|\\|", "n"), ("|-|", "h"), ("|2", "r"), ("13", "b"),
)  # fmt: skip
_MULTI_LEET_RE = re.compile(
    "|".join(re.escape(a) for a, _ in sorted(_MULTI_LEET, key=lambda p: -len(p[0])))
)
_MULTI_LEET_MAP = dict(_MULTI_LEET)
_CHATSPEAK = {"u": "you", "ur": "your", "urself": "yourself", "urselves": "yourselves",
              "yo": "your", "yoself": "yourself", "ya": "you"}  # fmt: skip
_CHATSPEAK_RE = re.compile(
    rf"(?<![a-z])(?:{'|'.join(sorted(_CHATSPEAK, key=len, reverse=True))})(?![a-z])"
)
_CAPITAL_I_AS_L = re.compile(r"(?<=[a-z])I|(?<=[a-zI])I(?=[a-z]|I|$|\s)|I(?=I)")


@functools.cache
def is_ignorable(ch: str) -> bool:
    """Whether ``ch`` is default-ignorable or a format character: it renders as nothing."""
    code = ord(ch)
    if unicodedata.category(ch) == "Cf":
        return True
    return any(lo <= code <= hi for lo, hi in _IGNORABLE_RANGES)


@functools.cache
def _homoglyphs() -> dict[str, str]:
    """The confusables graph of ``confusable-homoglyphs`` (UTS #39 data), loaded once;
    each character's homoglyphs joined by NUL (few objects: less for the GC to walk)."""
    raw = (resources.files("confusable_homoglyphs") / "confusables.json").read_text("utf-8")
    return {k: "\0".join(h["c"] for h in v) for k, v in json.loads(raw).items()}


def load_data() -> None:
    """Load the confusables data now (0.1 s) rather than on the first non-ASCII letter."""
    _homoglyphs()


def _strip_marks(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if unicodedata.category(ch) not in ("Mn", "Me"))


def _ascii_letter(text: str) -> str | None:
    stripped = _strip_marks(text).casefold()
    if stripped and stripped.isascii() and stripped.isalpha() and len(stripped) <= 2:
        return stripped
    return None


@functools.cache
def fold_char(ch: str) -> str:
    """One character as the block list sees it (see the module docstring).

    A letter that only looks like ``l`` (Coptic ``ⲓ``, Cyrillic ``ӏ``) reads as
    ``|``, which the leetspeak readings take for ``l`` and for ``i`` in turn.
    """
    folded = _fold_char(ch)
    if folded == "l" and not ch.isascii() and " LETTER L" not in unicodedata.name(ch, ""):
        return "|"
    return folded


def _fold_char(ch: str) -> str:
    if ch in _EXTRA or ch.casefold() in _EXTRA:
        return _EXTRA.get(ch) or _EXTRA[ch.casefold()]
    if ch.isascii():
        return ch.casefold()
    if is_ignorable(ch):
        return ""
    category = unicodedata.category(ch)
    if category in ("Mn", "Me"):
        return ""
    decomposed = _strip_marks(ch).casefold()
    if decomposed.isascii():
        return decomposed
    if not category.startswith("L") and category != "So":
        return "".join(fold_char(c) if c != ch else c for c in decomposed)
    graph = _homoglyphs()
    frontier = [ch, ch.casefold(), ch.upper(), decomposed]
    seen = set(frontier)
    for _hop in range(2):
        nxt: list[str] = []
        letters: list[str] = []
        for c in frontier:
            for h in graph[c].split("\0") if c in graph else ():
                if h in ("I", "l", "|", "1"):
                    return "l"  # a vertical stroke: l or I, read both ways (see fold_char)
                letter = _ascii_letter(h)
                if letter is not None:
                    letters.append(letter)
                elif h not in seen:
                    seen.add(h)
                    nxt.append(h)
        if letters:
            return letters[0]
        frontier = nxt
    name = unicodedata.name(ch, "")
    if " WITH " in name:
        try:
            base = unicodedata.lookup(name.split(" WITH ")[0])
        except KeyError:
            base = ""
        if base and base != ch:
            return fold_char(base)
    if category.startswith("L") and name.split(" ", 1)[0] in _TRANSLITERATED:
        translit = anyascii(ch).casefold()
        if translit.isalpha() and len(translit) <= 2:
            return translit
    return decomposed


def fold(text: str) -> str:
    """Unicode-normalise for matching: no ignorable characters or accents,
    casefolded, every lookalike letter turned into the Latin one."""
    return "".join(fold_char(ch) for ch in text)


def light_fold(text: str) -> str:
    """NFKC and casefold only (no transliteration), ignorables removed and lookalike
    dots made ``.``: how a host in another script (``сайт.рф``) is written."""
    kept = "".join(ch for ch in text if not is_ignorable(ch))
    folded = unicodedata.normalize("NFKC", kept).casefold()
    return "".join(_EXTRA.get(ch, ch) if ch in _DOTS else ch for ch in folded)


def capital_i_as_l(text: str) -> str:
    """``kiII`` -> ``kill``: a capital I after lower case (or between I's) reads as l."""
    return _CAPITAL_I_AS_L.sub("l", text)


def multi_leet(folded: str) -> str:
    """Multi-character leetspeak and chat spelling undone: ``|<`` k, ``\\/`` v, ``ph`` f,
    ``rn`` m; ``u``, ``ur``, ``urself`` for you, your, yourself."""
    text = _MULTI_LEET_RE.sub(lambda m: _MULTI_LEET_MAP[m.group()], folded)
    return _CHATSPEAK_RE.sub(lambda m: _CHATSPEAK[m.group()], text)


def flipped(text: str) -> str | None:
    """The upside-down reading (reversed, turned letters turned back, ``b/q d/p n/u``
    swapped) when ``text`` uses turned letters; else ``None``."""
    if not any(ch in _TURNED for ch in text):
        return None
    return "".join(
        _TURNED[ch] if ch in _TURNED else fold_char(ch).translate(_FLIP_SWAP)
        for ch in reversed(text)
    )


def mark_density(text: str) -> tuple[int, float]:
    """(most combining marks on one character, marks per letter): zalgo stacks marks."""
    decomposed = unicodedata.normalize("NFD", text)
    longest = run = marks = letters = 0
    for ch in decomposed:
        if unicodedata.category(ch) in ("Mn", "Me"):
            run += 1
            marks += 1
            longest = max(longest, run)
        else:
            run = 0
            if not ch.isspace():
                letters += 1
    return longest, marks / max(letters, 1)


def is_zalgo(text: str) -> bool:
    """Stacked combining marks: 3+ on one character, or more marks than letters."""
    if text.isascii():
        return False
    longest, per_letter = mark_density(text)
    return longest >= 3 or (per_letter > 1.0 and longest >= 2)


_LATIN_LIKE = frozenset({"LATIN", "MATHEMATICAL", "FULLWIDTH", "MODIFIER", "SMALL", "CIRCLED"})


def _script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else ""


def mixed_script_word(text: str) -> str | None:
    """The first word mixing Latin letters with lookalike letters of another script
    (``hеllo`` with a Cyrillic ``е``), or ``None``.

    Only words with 2+ Latin letters and a non-Latin letter that reads as a Latin
    one count, so ``Δx``, ``πr`` and Japanese next to ``w`` pass.
    """
    if text.isascii():
        return None
    for word in re.findall(r"[^\W\d_]+", unicodedata.normalize("NFKC", text)):
        if word.isascii():
            continue
        latin = sum(1 for ch in word if ch.isascii() or _script(ch) in _LATIN_LIKE)
        if latin < 2:
            continue
        for ch in word:
            if ch.isascii() or _script(ch) in _LATIN_LIKE:
                continue
            reading = fold_char(ch)
            if reading.isascii() and reading.isalpha():
                return word
    return None


def visible(text: str) -> str:
    """``text`` without whitespace, ignorable and blank-looking characters."""
    if text.isascii():
        return "".join(text.split())
    return "".join(
        ch for ch in text if not ch.isspace() and ch not in BLANK_LOOKING and not is_ignorable(ch)
    )
