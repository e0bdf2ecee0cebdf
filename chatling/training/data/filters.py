"""Which chat messages become training targets, which may be context, and why not.

``make_pairs(messages, segments, source, ...)`` is the one entry point from a
chat log + transcript to kept pairs and a ``FilterReport``: it sorts each
message into exactly one bucket (the first rule that matches, in this order)
and counts it:

- ``empty``: no text;
- ``bots``: known bot accounts (Nightbot...), this bot's own name and login,
  messages flagged ``is_bot`` by the reader or the store;
- ``removed``: deleted messages and those of timed-out or banned users, where
  the log says so (``Removed``: message ids or ``(user, offset)`` keys;
  ``Removed.from_moderation`` applies ``chatling.chatlog.moderation``'s rule);
- ``commands``: ``!command`` messages (what chat types to a bot, not to chat);
- ``links``: URLs and (spelled-out) domains, as ``chatling.safety`` sees them;
- ``blocked_terms``: a term of the safety block list (``chatling.safety.SafetyFilter``);
- ``copypasta``: the same text (case and spacing aside) more than
  ``copypasta_max`` times within ``copypasta_window_s``: the first ones are
  kept, the flood is not.

Targets are the messages no rule matched. Context (the chat lines a pair shows)
is what the live bot would have shown: everything except bots, removed and
empty messages and those with blocked terms; commands, links and copypasta
repeats stay in context, as they do in the live prompt. Emotes are text tokens
and stay. The decisions are pure functions of the messages.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from chatling.chatlog.moderation import ModerationEvent, drop_moderated
from chatling.core.events import ChatMessage
from chatling.safety import SafetyFilter, contains_link
from chatling.core.paths import PROJECT_ROOT
from chatling.core.settings import Settings
from chatling.training.data.align import AlignOptions, Segment, align
from chatling.training.data.pairs import Pair

if TYPE_CHECKING:
    from chatling.store.reader import StreamLines

DEFAULT_BOTS = frozenset(
    {"nightbot", "streamelements", "moobot", "fossabot", "streamlabs", "wizebot", "soundalerts"}
)
_COMMAND = re.compile(r"^\s*!\w")


@dataclass(frozen=True, slots=True)
class FilterReport:
    """How many messages each rule took; ``kept`` became pairs."""

    total: int = 0
    kept: int = 0
    empty: int = 0
    bots: int = 0
    removed: int = 0
    commands: int = 0
    links: int = 0
    blocked_terms: int = 0
    copypasta: int = 0

    def __add__(self, other: FilterReport) -> FilterReport:
        return FilterReport(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FilterReport:
        return cls(**{f.name: int(data.get(f.name, 0)) for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class Removed:
    """Messages a moderator removed, as far as the log tells."""

    ids: frozenset[str] = frozenset()
    """``message_id`` values of deleted messages."""
    keys: frozenset[tuple[str, float]] = frozenset()
    """``(user, offset)`` of removed messages (user case-insensitive, offset to the ms)."""

    @classmethod
    def of(cls, ids: Iterable[str] = (), keys: Iterable[tuple[str, float]] = ()) -> Removed:
        return cls(frozenset(ids), frozenset((u.casefold(), round(t, 3)) for u, t in keys))

    @classmethod
    def from_moderation(
        cls, messages: Sequence[ChatMessage], moderation: Iterable[ModerationEvent]
    ) -> Removed:
        """The messages the log's moderation actions removed (``chatling.chatlog`` decides which:
        deletions by id, every message of a timed-out or banned user up to the action)."""
        kept = {id(m) for m in drop_moderated(messages, moderation)}
        gone = [m for m in messages if id(m) not in kept]
        return cls.of(
            ids=[m.message_id for m in gone if m.message_id is not None],
            keys=[(m.user, m.offset) for m in gone],
        )

    def __len__(self) -> int:
        return len(self.ids) + len(self.keys)

    def __contains__(self, message: object) -> bool:
        if not isinstance(message, ChatMessage):
            return False
        if message.message_id is not None and message.message_id in self.ids:
            return True
        return (message.user.casefold(), round(message.offset, 3)) in self.keys


@dataclass(frozen=True, slots=True)
class FilterOptions:
    """What the filters drop (see the module docstring)."""

    bots: frozenset[str] = DEFAULT_BOTS
    """Accounts whose messages are never targets nor context (lower case)."""
    drop_commands: bool = True
    drop_links: bool = True
    copypasta_max: int = 3
    """Keep at most this many copies of one text within ``copypasta_window_s``."""
    copypasta_window_s: float = 30.0
    safety: SafetyFilter | None = field(default=None, compare=False)
    """The block list; None skips the blocked-terms rule."""

    @classmethod
    def from_settings(cls, settings: Settings, extra_bots: Iterable[str] = ()) -> FilterOptions:
        """Bots from ``twitch.known_bots`` + this bot's name and login; the settings' block list."""
        bots = {
            *DEFAULT_BOTS,
            *settings.twitch.known_bots,
            settings.reply.bot_name,
            settings.twitch.bot_login,
            *extra_bots,
        }
        return cls(
            bots=frozenset(b.casefold() for b in bots if b),
            safety=SafetyFilter.from_settings(settings.reply, PROJECT_ROOT),
        )

    def to_dict(self) -> dict[str, Any]:
        """What the manifest records (the block list by its size only: never its terms)."""
        return {
            "bots": sorted(self.bots),
            "drop_commands": self.drop_commands,
            "drop_links": self.drop_links,
            "copypasta_max": self.copypasta_max,
            "copypasta_window_s": self.copypasta_window_s,
            "blocked_terms": self.safety is not None,
        }


@dataclass(frozen=True, slots=True)
class Selection:
    """The messages sorted into targets and context, with the counts."""

    targets: list[ChatMessage]
    context: list[ChatMessage]
    report: FilterReport


def reason(
    message: ChatMessage,
    options: FilterOptions,
    removed: Removed,
    seen: dict[str, str | None] | None = None,
) -> str | None:
    """The first rule that drops ``message`` as a target (copypasta aside), or None.

    ``seen`` memoises the text rules (commands, links, blocked terms) by text:
    chat repeats itself, and the block list check is the costly one.
    """
    text = message.text.strip()
    if not text:
        return "empty"
    if message.is_bot or message.user.casefold() in options.bots:
        return "bots"
    if message in removed:
        return "removed"
    if seen is None:
        return _text_reason(text, options)
    if text not in seen:
        seen[text] = _text_reason(text, options)
    return seen[text]


def _text_reason(text: str, options: FilterOptions) -> str | None:
    if options.drop_commands and _COMMAND.match(text):
        return "commands"
    if options.drop_links and contains_link(text):
        return "links"
    if options.safety is not None and options.safety.blocked_term(text) is not None:
        return "blocked_terms"
    return None


_NOT_CONTEXT = frozenset({"empty", "bots", "removed", "blocked_terms"})


def select(
    messages: Sequence[ChatMessage],
    options: FilterOptions = FilterOptions(),
    removed: Removed = Removed(),
) -> Selection:
    """Sort messages (by offset, stable) into targets and context, counting every drop."""
    ordered = sorted(messages, key=lambda m: m.offset)
    counts = {f.name: 0 for f in fields(FilterReport)}
    counts["total"] = len(ordered)
    targets: list[ChatMessage] = []
    context: list[ChatMessage] = []
    copies = _Copies(options.copypasta_max, options.copypasta_window_s)
    seen: dict[str, str | None] = {}
    for message in ordered:
        why = reason(message, options, removed, seen)
        if why is None and copies.flood(message):
            why = "copypasta"
        if why not in _NOT_CONTEXT:
            context.append(message)
        if why is None:
            targets.append(message)
        else:
            counts[why] += 1
    counts["kept"] = len(targets)
    return Selection(targets, context, FilterReport(**counts))


class _Copies:
    """Counts recent copies of each text; every copy counts, kept or not, so a long
    flood stays dropped. Memory holds the texts of about the last window only."""

    def __init__(self, cap: int, window_s: float) -> None:
        self.cap = cap
        self.window_s = window_s
        self._times: dict[str, deque[float]] = {}
        self._seen = 0

    def flood(self, message: ChatMessage) -> bool:
        key = " ".join(message.text.casefold().split())
        t = message.offset
        times = self._times.setdefault(key, deque())
        while times and times[0] < t - self.window_s:
            times.popleft()
        over = len(times) >= self.cap
        times.append(t)
        self._seen += 1
        if self._seen % 2048 == 0:
            cutoff = t - self.window_s
            self._times = {k: v for k, v in self._times.items() if v[-1] >= cutoff}
        return over


def make_pairs(
    messages: Sequence[ChatMessage],
    segments: Iterable[Segment],
    source: str,
    align_options: AlignOptions | None = None,
    filter_options: FilterOptions = FilterOptions(),
    removed: Removed = Removed(),
) -> tuple[list[Pair], FilterReport]:
    """Kept pairs of one source (in time order) and the counts of what was dropped."""
    selection = select(messages, filter_options, removed)
    options = align_options or AlignOptions()
    pairs = align(selection.targets, selection.context, segments, source, options)
    return pairs, selection.report


def from_db_filters(filters: FilterOptions) -> FilterOptions:
    """``filters`` for the messages ``chatling.store.reader.stream_lines`` reads: it already
    flags every message of a bot account (``filters.bots``) as ``is_bot``, except posts
    moderators marked good, which the name rule must not drop again."""
    return replace(filters, bots=frozenset())


def make_log_pairs(
    lines: StreamLines,
    source: str,
    align_options: AlignOptions | None,
    filter_options: FilterOptions,
) -> tuple[list[Pair], FilterReport]:
    """``make_pairs`` for one stream of the bot's own log (``chatling data from-db``, the
    nightly export): its speech as transcript segments, ``from_db_filters(filter_options)``."""
    segments = [Segment(u.start, u.end, u.text) for u in lines.speech]
    return make_pairs(lines.chat, segments, source, align_options, from_db_filters(filter_options))
