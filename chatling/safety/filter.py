"""The safety filter: the last check before a generated reply reaches chat.

``SafetyFilter.check(text, now=..., reply_to_user=..., recent_chat=..., prompt=...)``
cleans a candidate (one line, no surrounding quotes or speaker label) and
returns a ``Verdict``: allowed with reason ``ok`` and the text to post, or
blocked with a short machine-readable reason. The rules, in the order they
are tried (the first that fires is the reason):

- ``empty`` / ``blank`` (nothing visible: only U+200D, Hangul fillers, Braille
  blanks) / ``too_long`` (over ``max_chars`` characters);
- ``command``: anything Twitch or a chat bot could run (``/ban``, ``!cmd``,
  also behind leading punctuation, and IRC-style ``.timeout``);
- ``mention:<user>``: an ``@user`` other than the viewer being answered;
- ``impersonation``: ``Nightbot: ...``, ``[MOD] ...``, ``x has been banned``;
- ``personal_data``: phone, card or ID numbers, e-mail, street addresses
  (``chatling.safety.pii``);
- ``link``: URLs, IP addresses, hosts on any public suffix, spelled out or
  with lookalike dots (``chatling.safety.links``); links on the allow-list
  (``ReplySettings.allowed_links``) are masked first;
- ``template_echo`` / ``prompt_echo``: the prompt's scaffolding, or a copy of
  the persona, system or template text (``chatling.safety.echo``);
- ``blocked_term:<term>``: a term of the block list in any disguise
  (``chatling.safety.terms``, on ``chatling.safety.normalize``'s folding);
- ``offensive``: an insult aimed at someone, by a local classifier
  (``chatling.safety.learned``);
- ``zalgo`` (stacked combining marks), ``mixed_script`` (a word mixing Latin
  with lookalike letters of another script), ``flood`` (one thing repeated);
- ``duplicate_of_chat``: a (normalised) copy of a chat message of the last
  ``duplicate_window_s`` seconds, which catches the model parroting chat;
  unless ``chant_min`` others already posted it (a chant in progress, which
  real chat joins) and the bot has not.

The check is pure: ``now`` is passed in; each verdict is logged at INFO.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from chatling.core.errors import ConfigError
from chatling.core.events import ChatMessage
from chatling.core.paths import PROJECT_ROOT
from chatling.core.settings import ReplySettings
from chatling.safety.echo import echoes, fixed_grams, prompt_grams, template_patterns
from chatling.safety.form import impersonates, is_blank, is_flood
from chatling.safety.learned import OFFENSIVE_THRESHOLD, load_model, offensive
from chatling.safety.links import LinkAllowList, find_links, public_suffixes
from chatling.safety.normalize import fold, is_zalgo, light_fold, load_data, mixed_script_word
from chatling.safety.pii import contains_personal_data as _personal
from chatling.safety.pii import load_phone_metadata
from chatling.safety.terms import STEPS as TERM_STEPS
from chatling.safety.terms import TermMatcher, compile_term, load_blocked_terms, plain_words

__all__ = [
    "ALL_STEPS",
    "SafetyFilter",
    "Verdict",
    "clean",
    "contains_link",
    "contains_personal_data",
    "dedupe_key",
    "fold",
    "load_blocked_terms",
]

logger = logging.getLogger(__name__)

ALL_STEPS = TERM_STEPS | {"classifier", "echo", "impersonation", "shape"}
"""Every optional step, named so bench/safety.py can measure what each buys."""

_COMMAND_WORDS = (
    "ban|unban|timeout|untimeout|mod|unmod|vip|unvip|clear|raid|unraid|host|unhost|w|"
    "whisper|me|color|block|unblock|delete|announce|slow|slowoff|followers|followersoff|"
    "subscribers|subscribersoff|emoteonly|emoteonlyoff|uniquechat|shield|commercial|"
    "marker|disconnect|pin|warn"
)
# "/" or "!" first, even behind quotes or punctuation (". /ban"); "</3" is a heart,
# and ":/ that hurt", "!!!" or "/o/" are faces, not commands ("/ ban" is not run either).
_COMMAND = re.compile(
    rf"^[\s.,;:'\"`~*_\-(\[{{>|\\]*(?:/(?=[a-z])(?!o/)|!(?=\s*[a-z]))"
    rf"|^\s*\.(?:{_COMMAND_WORDS})\b"
)
_MENTION = re.compile(r"(?<!\w)@+([a-z0-9_]{1,25})")  # "@@user" pings too
_QUOTES = {'"': '"', "'": "'", "“": "”", "”": "”", "‘": "’", "„": "“", "«": "»", "`": "`"}
_TEMPLATE_ECHO = re.compile(
    r"[‹<][^›>]{0,40}[›>]|\(no messages yet\)|\(silence\)|the streamer just said"
    r"|write (?:a|your)(?: next)? (?:chat )?message|recent chat \(",
    re.IGNORECASE,
)
_PROMPT_FILES = (
    "prompts/persona.txt", "prompts/reply.txt", "prompts/addressed.txt", "prompts/chatlog.txt",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Verdict:
    """The filter's answer for one candidate."""

    allowed: bool
    reason: str
    """``ok`` when allowed, else e.g. ``link``, ``blocked_term:<term>``."""
    text: str = ""
    """The cleaned text: what to post when allowed."""


def contains_link(text: str) -> bool:
    """Whether ``text`` holds a URL, a host on a public suffix or a spelled-out one."""
    return bool(find_links(fold(text)) or find_links(light_fold(text)))


def contains_personal_data(text: str) -> bool:
    """Whether ``text`` holds a phone/card/ID number, an e-mail or a street address."""
    return _personal(text, fold(text))


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


def _read_prompt_files(paths: Iterable[Path], bot_name: str) -> list[str]:
    texts = []
    for path in paths:
        try:
            texts.append(path.read_text("utf-8").replace("{bot_name}", bot_name))
        except OSError:
            logger.warning("prompt file %s unreadable: echo check without it", path)
    return texts


class SafetyFilter:
    """Decides whether a generated reply may be posted."""

    def __init__(
        self,
        blocked_terms: Iterable[str],
        bot_name: str,
        max_chars: int = 500,
        duplicate_window_s: float = 300.0,
        *,
        allowed_links: Iterable[str] = (),
        prompt_files: Iterable[str | Path] | None = None,
        offensive_threshold: float = OFFENSIVE_THRESHOLD,
        steps: Collection[str] = ALL_STEPS,
        chant_min: int = 0,
    ) -> None:
        self.bot_name = bot_name
        self.chant_min = chant_min
        self.max_chars = max_chars
        self.duplicate_window_s = duplicate_window_s
        self.offensive_threshold = offensive_threshold
        self.steps = frozenset(steps)
        terms = list(blocked_terms)
        for term in terms:
            if compile_term(term) is None:
                raise ConfigError(
                    f"blocked term {term!r} has no letters: write terms in letters "
                    "(digits and symbols are matched as leetspeak automatically)"
                )
        self._terms = terms
        self._matcher = TermMatcher(terms, self.steps & TERM_STEPS)
        self._allow = LinkAllowList(allowed_links)
        files = [PROJECT_ROOT / p for p in _PROMPT_FILES] if prompt_files is None else prompt_files
        self._fixed_texts = _read_prompt_files((Path(p) for p in files), bot_name)
        self._fixed_grams = fixed_grams(self._fixed_texts)
        self._templates = template_patterns(self._fixed_texts)
        self._prompt_cache: tuple[str, frozenset[tuple[str, ...]]] = ("", self._fixed_grams)
        # The data files load once per process, here rather than during a reply (~1 s).
        load_data()
        public_suffixes()
        load_phone_metadata()
        if "classifier" in self.steps:
            load_model()

    @classmethod
    def from_settings(
        cls, settings: ReplySettings, root: str | Path = PROJECT_ROOT
    ) -> SafetyFilter:
        """The filter the settings describe; relative files are read from ``root``."""

        def resolve(name: str) -> Path:
            path = Path(name)
            return path if path.is_absolute() else Path(root) / path

        terms = load_blocked_terms(resolve(settings.blocked_terms_file))
        template = resolve(settings.template_file)
        return cls(
            [*terms, *settings.extra_blocked_terms],
            bot_name=settings.bot_name,
            max_chars=settings.max_chars,
            duplicate_window_s=settings.duplicate_window_s,
            allowed_links=settings.allowed_links,
            prompt_files=[
                resolve(settings.persona_file),
                template,
                template.parent / "addressed.txt",
                resolve(settings.log_template_file),
            ],
            offensive_threshold=settings.offensive_threshold,
            chant_min=settings.chant_min,
        )

    def set_platform_terms(self, terms: Iterable[str]) -> int:
        """Match the platform's own blocked terms too (Twitch's, refreshed while live),
        replacing the previous ones; terms without letters are skipped. Returns how many
        terms are matched now."""
        usable = [t.lstrip("!") for t in terms if compile_term(t.lstrip("!")) is not None]
        self._matcher = TermMatcher([*self._terms, *usable], self.steps & TERM_STEPS)
        logger.info("blocked terms: %d from the platform merged", len(usable))
        return len(self._matcher.terms)

    def blocked_term(self, text: str) -> str | None:
        """The first block-list term ``text`` contains, or ``None``."""
        return self._matcher.find(text)

    def check(
        self,
        text: str,
        *,
        now: float,
        reply_to_user: str | None,
        recent_chat: Sequence[ChatMessage],
        prompt: str | None = None,
    ) -> Verdict:
        """Clean ``text`` and decide whether it may be posted at ``now``.

        ``recent_chat`` may include the bot's own messages: a reply repeating
        one is blocked too. ``prompt`` is the full rendered prompt the candidate
        was generated from: its fixed parts join the echo check.
        """
        cleaned = clean(text, self.bot_name)
        reason = self._reason(cleaned, now, reply_to_user, recent_chat, prompt)
        logger.info("safety verdict: %s (%d chars)", reason, len(cleaned))
        return Verdict(reason == "ok", reason, cleaned)

    def _grams(self, prompt: str | None) -> frozenset[tuple[str, ...]]:
        if not prompt:
            return self._fixed_grams
        if self._prompt_cache[0] != prompt:  # one prompt serves several candidates
            self._prompt_cache = (prompt, prompt_grams(prompt, self._fixed_grams, self._templates))
        return self._prompt_cache[1]

    def _reason(
        self,
        text: str,
        now: float,
        reply_to_user: str | None,
        recent_chat: Sequence[ChatMessage],
        prompt: str | None,
    ) -> str:
        if not text:
            return "empty"
        if is_blank(text):
            return "blank"
        if len(text) > self.max_chars:
            return "too_long"
        text = self._allow.mask(text)
        folded = fold(text)
        reason = self._content_reason(text, folded, reply_to_user, prompt)
        if reason != "ok":
            return reason
        key = dedupe_key(text)
        cutoff = now - self.duplicate_window_s
        copied = [m for m in recent_chat if m.offset >= cutoff and dedupe_key(m.text) == key]
        if copied and not self._joins_chant(copied):
            return "duplicate_of_chat"
        return "ok"

    def _joins_chant(self, copied: Sequence[ChatMessage]) -> bool:
        """A copy may be posted when ``chant_min`` other viewers posted the line and the
        bot did not: real chat joins chants (4.8% of real DougDoug messages copy a line
        of the last 20, docs/results.md) but a bot repeating one viewer reads as a parrot."""
        if not self.chant_min:
            return False
        bot = self.bot_name.casefold()
        users = {m.user.casefold() for m in copied}
        return bot not in users and len(users) >= self.chant_min

    def _content_reason(
        self, text: str, folded: str, reply_to_user: str | None, prompt: str | None
    ) -> str:
        steps = self.steps
        if _COMMAND.search(folded):
            return "command"
        allowed = (reply_to_user or "").lstrip("@").casefold()
        for name in _MENTION.findall(folded):
            if name != allowed:
                return f"mention:{name}"
        if "impersonation" in steps and impersonates(folded):
            return "impersonation"
        if _personal(text, folded):
            return "personal_data"
        if find_links(folded) or (not text.isascii() and find_links(light_fold(text))):
            return "link"
        if _TEMPLATE_ECHO.search(text):
            return "template_echo"  # the model copied the prompt's scaffolding
        if "echo" in steps and echoes(text, self._grams(prompt)):
            return "prompt_echo"
        term = self._matcher.find(text, folded)
        if term is not None:
            return f"blocked_term:{term}"
        if "classifier" in steps and offensive(plain_words(folded), self.offensive_threshold):
            return "offensive"
        if "shape" in steps:
            if is_zalgo(text):
                return "zalgo"
            if mixed_script_word(text) is not None:
                return "mixed_script"
            if is_flood(text):
                return "flood"
        return "ok"
