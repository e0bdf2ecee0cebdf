"""Baseline copy of chatling/safety/filter.py as of the start of issue 13, kept for bench/safety.py.

The safety filter: the last check before a generated reply reaches chat.

``SafetyFilter.check(text, now=..., reply_to_user=..., recent_chat=...)``
cleans a candidate (one line, no surrounding quotes or speaker label) and
returns a ``Verdict``: allowed with reason ``ok`` and the text to post, or
blocked with a short machine-readable reason. It blocks

- ``empty`` / ``too_long`` (over ``max_chars`` characters);
- ``command``: anything Twitch or a chat bot could run (``/ban``, ``!cmd``,
  also behind leading punctuation, and IRC-style ``.timeout``);
- ``mention:<user>``: an ``@user`` other than the viewer being answered;
- ``personal_data``: phone, card or ID numbers, e-mail addresses (also
  spelled ``jane [at] example [dot] org``) and street addresses;
- ``link``: URLs, ``www.``, bare domains (``bit.ly``) and spelled-out ones
  (``evil dot com``, ``evil(.)com``);
- ``blocked_term:<term>``: a term of the block list, after normalising
  Unicode tricks (accents, zero-width characters, Cyrillic/Greek lookalikes,
  fullwidth and styled letters), leetspeak, repeated letters and letters
  spread out with spaces or punctuation (``n.i.g.g.e.r``, ``f a g``);
- ``duplicate_of_chat``: a (normalised) copy of a chat message of the last
  ``duplicate_window_s`` seconds, which catches the model parroting chat.

Terms match whole words (plus plural ``s``/``es``), so ``class`` never
matches ``ass`` and ``Niger`` never matches a double-g slur; a term written
``term*`` also matches words starting with it, ``*term`` words ending in it.
The check is pure: ``now`` is passed in; each verdict is logged at INFO.
"""

from __future__ import annotations

import itertools
import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from chatling.core.errors import ConfigError, InputFileError
from chatling.core.events import ChatMessage
from chatling.core.paths import PROJECT_ROOT
from chatling.core.settings import ReplySettings

logger = logging.getLogger(__name__)

_HOMOGLYPHS = str.maketrans(
    {
        # Cyrillic lookalikes (after casefold, so lower case only).
        "а": "a", "в": "b", "г": "r", "е": "e", "һ": "h", "і": "i", "ј": "j", "к": "k",
        "м": "m", "н": "h", "о": "o", "п": "n", "р": "p", "с": "c", "т": "t", "у": "y",
        "х": "x", "ш": "w", "ь": "b", "ѕ": "s", "ӏ": "l", "ԁ": "d", "ԛ": "q", "ԝ": "w",
        "ү": "y", "ɡ": "g",
        # Greek lookalikes.
        "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "μ": "u",
        "ν": "v", "ο": "o", "ρ": "p", "σ": "o", "τ": "t", "υ": "u", "χ": "x", "ω": "w",
        # Latin letters NFKD leaves alone, and small capitals.
        "ı": "i", "ȷ": "j", "ƒ": "f", "ɑ": "a", "ɩ": "i", "ø": "o", "đ": "d", "ł": "l",
        "ħ": "h", "ŧ": "t", "æ": "ae", "œ": "oe", "ð": "d", "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d",
        "ᴇ": "e", "ꜰ": "f", "ɢ": "g", "ʜ": "h", "ɪ": "i", "ᴊ": "j", "ᴋ": "k", "ʟ": "l",
        "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ʀ": "r", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u",
        "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z",
        # Cyrillic and Armenian letters found missing by tests/hardening.
        "є": "e", "օ": "o", "ս": "u", "հ": "h", "ո": "n", "ց": "g",
        # Full stops that NFKD does not turn into ".".
        "。": ".", "｡": ".", "․": ".",
        # Negative circled and squared letters, regional indicators (🅺, 🆈, 🇸).
        **{chr(base + i): chr(97 + i) for base in (0x1F150, 0x1F170, 0x1F1E6) for i in range(26)},
    }
)  # fmt: skip

_DIGITS = {"0": "o", "3": "e", "4": "a", "5": "s", "6": "g", "7": "t", "8": "b", "9": "g"}
_SYMBOLS = {"@": "a", "$": "s", "+": "t", "(": "c", "€": "e", "¢": "c", "¡": "i", "©": "c"}
# "1", "!" and "|" stand for i or l: each variant reads them one way; the last
# variant treats symbols as punctuation ("ass!" is "ass", not "assi").
_VARIANTS = [
    str.maketrans({**_DIGITS, **_SYMBOLS, "1": "i", "!": "i", "|": "l"}),
    str.maketrans({**_DIGITS, **_SYMBOLS, "1": "l", "!": "i", "|": "i"}),
    str.maketrans({**_DIGITS, "1": "i"}),
]
_LEET_CHARS = set(_DIGITS) | set(_SYMBOLS) | {"1", "!", "|"}
_LETTERS = re.compile(r"[a-z]+")

_TLDS = (
    "com|net|org|io|gg|tv|ly|co|xyz|ru|info|biz|app|dev|ai|live|site|online|shop|store|"
    "club|top|link|click|uk|de|fr|cn|jp|ca|au|nl|pl|br|tk|ml|ga|cf|gq|ws|cc|su|pw|vip|"
    "win|bet|cam|page|blog|tech|gl|gd|li|vc|eu|nz|kr|tw|hk|sg|ch|se|be|me|gift|zip"
)
_SPELLED_TLDS = "com|net|org|io|gg|tv|ly|co|xyz|ru|info|biz|uk|de"
_DOMAIN = r"\b[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_LINK = re.compile(
    r"[a-z][a-z0-9+.-]*\s*:\s*/\s*/"  # any scheme://
    r"|\bwww\s*\."
    rf"|{_DOMAIN}(?:\.|\s+\.\s*)(?:{_TLDS})\b"
    rf"|{_DOMAIN}\s*[(\[{{<]\s*(?:\.|dot)\s*[)\]}}>]\s*[a-z]{{2,}}\b"
    rf"|{_DOMAIN}\s+dot\s+(?:{_SPELLED_TLDS})\b"
    r"|\b[a-z0-9-]+\.[a-z]{2,}/\S"  # a domain with a path: t.me/x
    r"|\b\d{1,3}(?:\.\d{1,3}){3}\b"  # an IP address
)
_COMMAND_WORDS = (
    "ban|unban|timeout|untimeout|mod|unmod|vip|unvip|clear|raid|unraid|host|unhost|w|"
    "whisper|me|color|block|unblock|delete|announce|slow|slowoff|followers|followersoff|"
    "subscribers|subscribersoff|emoteonly|emoteonlyoff|uniquechat|shield|commercial|"
    "marker|disconnect|pin|warn"
)
# "/" or "!" first, even behind quotes or punctuation (". /ban"); "</3" is a heart.
_COMMAND = re.compile(rf"^[\s.,;:'\"`~*_\-(\[{{>|\\]*[/!]|^\s*\.(?:{_COMMAND_WORDS})\b")
_MENTION = re.compile(r"(?<!\w)@+([a-z0-9_]{1,25})")  # "@@user" pings too
# Personal data. Phone/card/ID numbers are judged on their digits (``_number_is_personal``).
_NUMBER = re.compile(r"(?<![\w.,])(?:\+\s?)?\(?\d+\)?(?:[ .-]\(?\d+\)?)*(?![\w])")
_AT = r"(?:\s*@\s*|\s*[(\[{<]\s*at\s*[)\]}>]\s*)"
_DOT = r"(?:\s*\.\s*|\s*[(\[{<]\s*dot\s*[)\]}>]\s*|\s+dot\s+)"
_EMAIL = re.compile(
    rf"[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{{2,}}\b"
    rf"|\b[a-z0-9._%+-]+{_AT}[a-z0-9-]+(?:{_DOT}[a-z0-9-]+)*{_DOT}(?:{_TLDS})\b"
    rf"|\b[a-z0-9._%+-]+\s+at\s+[a-z0-9-]+\s+dot\s+(?:{_TLDS})\b"  # jane at example dot com
)
_STOP = r"(?!(?:on|in|at|of|the|my|your|his|her|our|their|this|that|down|up|across|a|an)\b)"
_ADDRESS = re.compile(
    rf"\b\d{{1,5}}[a-z]?,?\s+(?:{_STOP}[a-z]+\s+){{1,3}}"
    r"(?:street|avenue|boulevard|terrace|crescent|highway)\b"
)
_ADDRESS_CASED = re.compile(  # on the un-casefolded text: "42 Wallaby Way", "4 PRIVET DRIVE"
    r"\b\d{1,5}[A-Za-z]?,?\s+(?:[A-Z][A-Za-z]+\s+){1,3}"
    r"(?i:st|ave|rd|road|blvd|lane|ln|drive|dr|way|place|pl|court|ct|close|loop)\b"
)
_QUOTES = {'"': '"', "'": "'", "“": "”", "”": "”", "‘": "’", "„": "“", "«": "»", "`": "`"}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The filter's answer for one candidate."""

    allowed: bool
    reason: str
    """``ok`` when allowed, else e.g. ``link``, ``blocked_term:<term>``."""
    text: str = ""
    """The cleaned text: what to post when allowed."""


def fold(text: str) -> str:
    """Unicode-normalise for matching: no accents, no format characters,
    casefolded, lookalike letters turned into Latin ones."""
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    kept = "".join(ch for ch in decomposed if unicodedata.category(ch) not in ("Mn", "Me", "Cf"))
    return kept.translate(_HOMOGLYPHS)


def _forms(folded: str, table: dict[int, str]) -> tuple[str, str, list[str]]:
    """The text as seen by one leetspeak variant.

    Returns the word stream (words split at any non-letter), the chunk stream
    (each whitespace-separated chunk with its non-letters removed, so
    ``b.a.d`` is ``bad``) and the runs of single letters spread over
    consecutive chunks (``b a d``), each joined into one string.
    """
    words: list[str] = []
    chunks: list[str] = []
    runs: list[str] = []
    run: list[str] = []
    for chunk in folded.split():
        leet = sum(1 for ch in chunk if ch.isalnum() or ch in _LEET_CHARS)
        if re.search("[a-z]", chunk) or leet == 1:
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
    return " ".join(words), " ".join(chunks), runs


def _word_pattern(word: str) -> str:
    """``c+`` for each letter, ``c{k,}`` for a doubled one: repeats collapse,
    but a double letter of the term stays required."""
    parts = []
    for ch, group in itertools.groupby(word):
        n = len(list(group))
        parts.append(f"{ch}+" if n == 1 else f"{ch}{{{n},}}")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class _Term:
    term: str
    bounded: re.Pattern[str]
    """Matches the term as whole words of the word/chunk streams."""
    loose: re.Pattern[str]
    """Matches the term anywhere in a run of spread-out letters."""


def _compile_term(term: str) -> tuple[str, str] | None:
    """(bounded, loose) regex sources for one term; ``None`` if it has no letters."""
    body = term.strip()
    prefix, suffix = body.startswith("*"), body.endswith("*")
    folded = fold(body.strip("*"))
    if not re.search("[a-z]", folded):
        return None  # digits alone ("1488") never match: numbers are not leetspeak
    # A digit between letters is a word of its own ("follow4follow" ~ "follow 4 follow").
    spaced = re.sub(r"(?<=[a-z])(\d+)(?=[a-z])", r" \1 ", folded)
    words = _LETTERS.findall(spaced.translate(_VARIANTS[0]))
    core = "[ ]?".join(_word_pattern(w) for w in words)
    last = words[-1]
    plural = "(?:e?s+|z+)?" if last.endswith(("s", "x", "z", "ch", "sh")) else "(?:s+|z+)?"
    bounded = ("[a-z]*" if prefix else "") + core + ("[a-z]*" if suffix else plural)
    return bounded, "".join(_word_pattern(w) for w in words)


def _join_spread(folded: str) -> str:
    """Runs of three or more single characters joined up: ``e v i l . c o m`` -> ``evil.com``."""
    return re.sub(r"(?<!\S)\S(?: \S(?!\S)){2,}", lambda m: m.group().replace(" ", ""), folded)


def _has_link(folded: str) -> bool:
    return _LINK.search(folded) is not None or _LINK.search(_join_spread(folded)) is not None


def contains_link(text: str) -> bool:
    """Whether ``text`` holds a URL, a bare domain or a spelled-out one."""
    return _has_link(fold(text))


def _number_is_personal(match: str) -> bool:
    """Whether a run of digit groups reads as a phone, card or ID number.

    Counts, scores, dates, decimals and round or repeated numbers do not.
    """
    groups = re.findall(r"\d+", match)
    digits = "".join(groups)
    if len(set(digits)) < 4 or not 9 <= len(digits) <= 19:
        return False
    if len(groups) > 2 and all(int(b) == int(a) + 1 for a, b in itertools.pairwise(groups)):
        return False  # counting: "1 2 3 4 5 6 7 8 9 10"
    if all((int(b) - int(a)) % 10 == 1 for a, b in itertools.pairwise(digits)):
        return False  # a run of digits: "0123456789"
    if match.lstrip().startswith("+"):
        return True  # international number
    if len(groups) == 1:
        return 10 <= len(digits) <= 15  # bare digits: a phone number without spaces
    if all(len(g) == 1 for g in groups):
        return 10 <= len(digits) <= 15  # spread-out digits
    return len(groups) >= 3 and all(len(g) >= 2 for g in groups[1:])


def contains_personal_data(text: str) -> bool:
    """Whether ``text`` holds a phone/card/ID number, an e-mail or a street address."""
    folded = fold(text)
    digits = "".join(
        str(unicodedata.digit(ch)) if unicodedata.category(ch) == "Nd" else ch for ch in folded
    )
    if any(_number_is_personal(m.group()) for m in _NUMBER.finditer(digits)):
        return True
    if _EMAIL.search(folded) or _ADDRESS.search(digits):
        return True
    cased = unicodedata.normalize("NFKC", text)
    return _ADDRESS_CASED.search(cased) is not None


def dedupe_key(text: str) -> str:
    """What two messages share when one is a copy of the other."""
    folded = fold(text)
    words = re.findall(r"\w+", folded)
    return " ".join(words) if words else "".join(folded.split())


def clean(text: str, bot_name: str = "") -> str:
    """One line, no control characters, no surrounding quotes or speaker label."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(
        " " if unicodedata.category(ch) == "Cc" else ch
        for ch in text
        if unicodedata.category(ch) != "Cf" or ch == "\u200d"
    )
    text = " ".join(text.split())
    labels = "assistant|bot" + (f"|@?{re.escape(bot_name)}" if bot_name else "")
    text = re.sub(rf"^(?:{labels})\s*:\s*", "", text, flags=re.IGNORECASE)
    while len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    for quote in ('"', "“", "”"):
        if text.count(quote) == 1 and (text.startswith(quote) or text.endswith(quote)):
            text = text.replace(quote, "").strip()
    return text


class SafetyFilter:
    """Decides whether a generated reply may be posted."""

    def __init__(
        self,
        blocked_terms: Iterable[str],
        bot_name: str,
        max_chars: int = 500,
        duplicate_window_s: float = 300.0,
    ) -> None:
        self.bot_name = bot_name
        self.max_chars = max_chars
        self.duplicate_window_s = duplicate_window_s
        self._terms: list[_Term] = []
        seen: set[str] = set()
        for term in blocked_terms:
            compiled = _compile_term(term)
            if compiled is None:
                raise ConfigError(
                    f"blocked term {term!r} has no letters: write terms in letters "
                    "(digits and symbols are matched as leetspeak automatically)"
                )
            if compiled[0] in seen:
                continue
            seen.add(compiled[0])
            bounded, loose = compiled
            self._terms.append(
                _Term(
                    term.strip(),
                    re.compile(rf"(?<![a-z])(?:{bounded})(?![a-z])"),
                    re.compile(loose),
                )
            )
        any_bounded = "|".join(t.bounded.pattern for t in self._terms) or "(?!)"
        any_loose = "|".join(t.loose.pattern for t in self._terms) or "(?!)"
        self._any_bounded = re.compile(any_bounded)
        self._any_loose = re.compile(any_loose)

    @classmethod
    def from_settings(
        cls, settings: ReplySettings, root: str | Path = PROJECT_ROOT
    ) -> SafetyFilter:
        """The filter the settings describe; a relative block list is read from ``root``."""
        path = Path(settings.blocked_terms_file)
        terms = load_blocked_terms(path if path.is_absolute() else Path(root) / path)
        return cls(
            [*terms, *settings.extra_blocked_terms],
            bot_name=settings.bot_name,
            max_chars=settings.max_chars,
            duplicate_window_s=settings.duplicate_window_s,
        )

    def blocked_term(self, text: str) -> str | None:
        """The first block-list term ``text`` contains, or ``None``."""
        folded = fold(text)
        for table in _VARIANTS:
            words, chunks, runs = _forms(folded, table)
            hit = None
            for stream in (words, chunks):
                if self._any_bounded.search(stream):
                    hit = next((t.term for t in self._terms if t.bounded.search(stream)), None)
                    if hit:
                        return hit
            for run in runs:
                if self._any_loose.search(run):
                    hit = next((t.term for t in self._terms if t.loose.search(run)), None)
                    if hit:
                        return hit
        return None

    def check(
        self,
        text: str,
        *,
        now: float,
        reply_to_user: str | None,
        recent_chat: Sequence[ChatMessage],
    ) -> Verdict:
        """Clean ``text`` and decide whether it may be posted at ``now``.

        ``recent_chat`` may include the bot's own messages: a reply repeating
        one is blocked too.
        """
        cleaned = clean(text, self.bot_name)
        reason = self._reason(cleaned, now, reply_to_user, recent_chat)
        logger.info("safety verdict: %s (%d chars)", reason, len(cleaned))
        return Verdict(reason == "ok", reason, cleaned)

    def _reason(
        self,
        text: str,
        now: float,
        reply_to_user: str | None,
        recent_chat: Sequence[ChatMessage],
    ) -> str:
        if not text:
            return "empty"
        if len(text) > self.max_chars:
            return "too_long"
        folded = fold(text)
        if _COMMAND.search(folded):
            return "command"
        allowed = (reply_to_user or "").lstrip("@").casefold()
        for name in _MENTION.findall(folded):
            if name != allowed:
                return f"mention:{name}"
        if contains_personal_data(text):
            return "personal_data"
        if _has_link(folded):  # as contains_link, on the text folded once
            return "link"
        if _TEMPLATE_ECHO.search(text):
            # The model copied the prompt's scaffolding instead of writing chat.
            return "template_echo"
        term = self.blocked_term(text)
        if term is not None:
            return f"blocked_term:{term}"
        key = dedupe_key(text)
        cutoff = now - self.duplicate_window_s
        if any(m.offset >= cutoff and dedupe_key(m.text) == key for m in recent_chat):
            return "duplicate_of_chat"
        return "ok"


_TEMPLATE_ECHO = re.compile(
    r"[‹<][^›>]{0,40}[›>]|\(no messages yet\)|\(silence\)|the streamer just said"
    r"|write (?:a|your)(?: next)? (?:chat )?message|recent chat \(",
    re.IGNORECASE,
)


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
        if _compile_term(term) is None:
            raise InputFileError(
                path, f"line {number}",
                f"term {term!r} has no letters: write it in letters or delete the line",
            )  # fmt: skip
        terms.append(term)
    return terms
