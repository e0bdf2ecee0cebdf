"""The rolling context: what the streamer just said and what chat just wrote.

``RollingContext`` keeps the last ``transcript_window_s`` seconds of committed
speech and the last ``max_chat_messages`` viewer messages, evicting older ones
as time moves on, so memory stays bounded over a ten-hour stream.
``snapshot(now)`` freezes what a prompt made at ``now`` may show, and
``trim_to_budget`` drops the oldest lines until the rendered lines fit the
prompt's token budget. Both are pure: time is always passed in, nothing here
reads a clock or does I/O.
"""

from __future__ import annotations

import bisect
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from chatling.core.errors import ConfigError
from chatling.core.events import ChatMessage, Utterance

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ContextSnapshot:
    """What a prompt made at ``now`` may show, oldest first."""

    now: float
    utterances: tuple[Utterance, ...] = ()
    """Speech committed by ``now`` (``end <= now``) that ended in the last window."""
    chat: tuple[ChatMessage, ...] = ()
    """The newest viewer (non-bot) messages with ``offset <= now``."""


def format_line(item: Utterance | ChatMessage) -> str:
    """The default one-line rendering of a transcript or chat line."""
    if isinstance(item, Utterance):
        return f"[streamer] {item.text.strip()}"
    return f"{item.display_name or item.user}: {item.text.strip()}"


class RollingContext:
    """Recent speech and chat, bounded in memory.

    Events are expected roughly in time order (as the app and the replay
    source produce them); a late event is inserted in its place. Utterances
    that ended more than ``transcript_window_s`` before the newest snapshot
    time, or two windows before the newest utterance end, are evicted, and
    only the newest ``max_chat_messages`` viewer messages are kept, so a
    snapshot asked for an earlier ``now`` than one already taken may show less.
    """

    def __init__(self, transcript_window_s: float, max_chat_messages: int) -> None:
        if transcript_window_s <= 0:
            raise ConfigError(
                f"transcript_window_s must be positive, got {transcript_window_s}: "
                "set CHATLING_REPLY__TRANSCRIPT_WINDOW_S to a number of seconds above 0"
            )
        if max_chat_messages < 0:
            raise ConfigError(
                f"max_chat_messages must be 0 or more, got {max_chat_messages}: "
                "fix CHATLING_REPLY__MAX_CHAT_MESSAGES"
            )
        self.transcript_window_s = float(transcript_window_s)
        self.max_chat_messages = int(max_chat_messages)
        self._utterances: deque[Utterance] = deque()
        self._chat: deque[ChatMessage] = deque()
        self._horizon = float("-inf")

    def __len__(self) -> int:
        """How many items are held (utterances plus chat messages)."""
        return len(self._utterances) + len(self._chat)

    def add_utterance(self, utterance: Utterance) -> None:
        """Remember a committed stretch of speech; empty text is ignored."""
        if not utterance.text.strip():
            return
        if not self._utterances or utterance.end >= self._utterances[-1].end:
            self._utterances.append(utterance)
        else:
            ends = [u.end for u in self._utterances]
            self._utterances.insert(bisect.bisect_right(ends, utterance.end), utterance)
        # Keep a second window of slack so a snapshot a little behind the
        # newest utterance is still complete; snapshots evict exactly.
        self._advance(utterance.end - self.transcript_window_s)

    def add_chat(self, message: ChatMessage) -> None:
        """Remember a viewer message; bot messages never enter the prompt."""
        if message.is_bot or self.max_chat_messages == 0:
            return
        if not self._chat or message.offset >= self._chat[-1].offset:
            self._chat.append(message)
        else:
            offsets = [m.offset for m in self._chat]
            self._chat.insert(bisect.bisect_right(offsets, message.offset), message)
        while len(self._chat) > self.max_chat_messages:
            self._chat.popleft()

    def snapshot(self, now: float) -> ContextSnapshot:
        """The utterances and chat a prompt made at ``now`` may show."""
        self._advance(now)
        start = now - self.transcript_window_s
        utterances = tuple(u for u in self._utterances if start <= u.end <= now)
        chat = [m for m in self._chat if m.offset <= now]
        if self.max_chat_messages:
            chat = chat[-self.max_chat_messages :]
        return ContextSnapshot(now=now, utterances=utterances, chat=tuple(chat))

    def _advance(self, t: float) -> None:
        """Move the eviction horizon forward to ``t`` and drop what fell out."""
        if t <= self._horizon:
            return
        self._horizon = t
        cutoff = t - self.transcript_window_s
        while self._utterances and self._utterances[0].end < cutoff:
            self._utterances.popleft()


def trim_to_budget(
    snapshot: ContextSnapshot,
    count_tokens: Callable[[str], int],
    budget: int,
    render_line: Callable[[Utterance | ChatMessage], str] = format_line,
    *,
    keep: ChatMessage | None = None,
) -> ContextSnapshot:
    """Drop the oldest lines until the rendered lines fit ``budget`` tokens.

    Each line is rendered and counted once (``count_tokens`` is called once
    per line), and the cost of the kept lines is their sum, so the caller
    keeps room for the persona, template and separators outside ``budget``.
    ``keep`` (the message being answered, when it is in the snapshot), the
    newest chat line and the newest utterance are kept, in that priority,
    whenever they fit. A line too big to fit beside those is dropped; then
    the other lines are dropped oldest first (an utterance dates from its
    end) across transcript and chat until the rest fits. Returns a new
    snapshot; the input is unchanged.
    """
    items: list[Utterance | ChatMessage] = [*snapshot.utterances, *snapshot.chat]
    n_utt = len(snapshot.utterances)
    costs = [count_tokens(render_line(item)) for item in items]

    wanted: list[int] = []
    if keep is not None:
        matches = [n_utt + i for i, m in enumerate(snapshot.chat) if m == keep]
        wanted += matches[-1:]
    if snapshot.chat:
        wanted.append(len(items) - 1)
    if snapshot.utterances:
        wanted.append(n_utt - 1)
    protected: set[int] = set()
    spent = 0
    for j in wanted:
        if j not in protected and spent + costs[j] <= budget:
            protected.add(j)
            spent += costs[j]

    room = budget - spent
    candidates = [j for j in range(len(items)) if j not in protected and costs[j] <= room]
    total = sum(costs[j] for j in candidates)

    def when(j: int) -> tuple[float, int, int]:
        item = items[j]
        t = item.end if isinstance(item, Utterance) else item.offset
        return (t, 0 if j < n_utt else 1, j)

    kept = set(protected)
    candidates.sort(key=when)
    for pos, j in enumerate(candidates):
        if total <= room:
            kept.update(candidates[pos:])
            break
        total -= costs[j]

    utterances = tuple(u for j, u in enumerate(snapshot.utterances) if j in kept)
    chat = tuple(m for i, m in enumerate(snapshot.chat) if n_utt + i in kept)
    dropped = len(items) - len(kept)
    if dropped:
        logger.debug(
            "context trimmed: dropped %d of %d lines to fit %d tokens", dropped, len(items), budget
        )
    return ContextSnapshot(now=snapshot.now, utterances=utterances, chat=chat)
