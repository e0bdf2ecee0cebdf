"""Alignment: chat messages + the streamer's speech -> (context -> chat message) pairs.

For a chat message posted at ``t`` the context is what its author could have
been reacting to, cut the way ``AlignOptions`` says:

- transcript: the words said in ``[t - window_s, t - delay_s]`` (both edges
  inclusive, a word dated by its end), one line per transcript segment. Speech
  newer than ``t - delay_s`` is left out: chat cannot have reacted to it yet
  (``bench/reaction_delay.py`` measures the delay). Segments without word
  timings get their words spread over the segment by character count
  (``interpolate_words``), or, with that off, every segment that overlaps the
  window is taken whole;
- chat: the last ``chat_messages`` context messages strictly before ``t``
  (same offset is not before), oldest first, as ``user: text``.

Which messages become targets and which may appear as context is decided by
``chatling.training.data.filters``; this module only cuts windows. It is pure and fast:
both transcript and chat are indexed once (sorted arrays + ``bisect``), so a
message costs two binary searches and a few slices, not a scan
(``bench/align_throughput.py``: 100k messages on a four-hour transcript).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from chatling.core.errors import ConfigError
from chatling.core.events import ChatMessage
from chatling.training.data.pairs import Pair

# From bench/reaction_delay.py on the DougDoug corpus (bench/results/reaction_delay.json):
# chat echoes a word the streamer said most at 12.5 s after it (broadcast latency plus
# typing), 5% of the echo within 4 s, 90% within 44 s. So the context is the speech of
# [t - 45 s, t - 4 s]. The 20 chat lines are what the live prompt shows
# (ReplySettings.max_chat_messages), not a measurement.
DEFAULT_WINDOW_S = 45.0
DEFAULT_DELAY_S = 4.0
DEFAULT_CHAT_MESSAGES = 20


@dataclass(frozen=True, slots=True)
class Word:
    """One transcribed word with its times (seconds from the stream's start)."""

    start: float
    end: float
    text: str


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of transcribed speech; ``words`` is empty when the source had no timings."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "words": [[w.start, w.end, w.text] for w in self.words],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Segment:
        return cls(
            start=float(data["start"]),
            end=float(data["end"]),
            text=str(data["text"]),
            words=tuple(Word(float(a), float(b), str(t)) for a, b, t in data.get("words") or ()),
        )


@dataclass(frozen=True, slots=True)
class AlignOptions:
    """How a chat message's context is cut (saved in the dataset's manifest)."""

    window_s: float = DEFAULT_WINDOW_S
    """Oldest speech in the context: ``t - window_s``."""
    delay_s: float = DEFAULT_DELAY_S
    """Newest speech in the context: ``t - delay_s`` (chat's reaction time)."""
    chat_messages: int = DEFAULT_CHAT_MESSAGES
    """Chat lines before the message shown as context (the live prompt shows as many)."""
    interpolate_words: bool = True
    """Spread a segment's words over its time when it has no word timings."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.window_s) and math.isfinite(self.delay_s)):
            raise ConfigError("align window_s and delay_s must be finite numbers of seconds")
        if self.delay_s < 0 or self.window_s <= self.delay_s:
            raise ConfigError(
                f"align window [t - {self.window_s:g}, t - {self.delay_s:g}] is empty: "
                "need 0 <= delay_s < window_s"
            )
        if self.chat_messages < 0:
            raise ConfigError(f"align chat_messages must be 0 or more, not {self.chat_messages}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlignOptions:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


def spread_words(segment: Segment) -> tuple[Word, ...]:
    """The segment's words with times spread over it in proportion to their length.

    A stand-in for word timestamps when only segment times are known (an ASR
    export, the live store's utterances). Each word gets its share of the
    segment by characters, counting one character for the gap after it.
    """
    tokens = segment.text.split()
    if not tokens:
        return ()
    weights = [len(tok) + 1 for tok in tokens]
    total = sum(weights)
    span = max(segment.end - segment.start, 0.0)
    words, acc = [], 0
    for tok, weight in zip(tokens, weights, strict=True):
        start = segment.start + span * acc / total
        acc += weight
        words.append(Word(start, segment.start + span * acc / total, tok))
    return tuple(words)


class TranscriptIndex:
    """Transcript words in one sorted array; ``lines(a, b)`` is the speech in ``[a, b]``."""

    def __init__(self, segments: Iterable[Segment], *, interpolate_words: bool = True) -> None:
        ordered = sorted(segments, key=lambda s: (s.start, s.end))
        self._by_word = interpolate_words or all(s.words for s in ordered)
        if self._by_word:
            self._init_words(ordered)
        else:
            self._init_segments(ordered)

    def _init_words(self, segments: list[Segment]) -> None:
        # Every word keeps the index of its segment: a line is a segment's words.
        entries: list[tuple[float, int, str]] = []
        for seg_no, seg in enumerate(segments):
            words = seg.words or spread_words(seg)
            entries.extend((w.end, seg_no, w.text.strip()) for w in words if w.text.strip())
        entries.sort(key=lambda e: (e[0], e[1]))
        self._ends = [e[0] for e in entries]
        self._seg = [e[1] for e in entries]
        self._text = [e[2] for e in entries]
        # Where each run of one segment's words starts and ends (runs are contiguous
        # unless segments overlap in time, which the general path below handles).
        self._run_end: list[int] = [0] * len(entries)
        self._run_text: dict[int, str] = {}
        run_start = 0
        for i in range(1, len(entries) + 1):
            if i == len(entries) or self._seg[i] != self._seg[run_start]:
                for j in range(run_start, i):
                    self._run_end[j] = i
                self._run_text[run_start] = " ".join(self._text[run_start:i])
                run_start = i

    def _init_segments(self, segments: list[Segment]) -> None:
        self._segments = [s for s in segments if s.text.strip()]
        self._seg_starts = [s.start for s in self._segments]
        # Segments may overlap; the running maximum of ends makes "ends >= a" bisectable.
        self._max_end: list[float] = []
        top = -math.inf
        for s in self._segments:
            top = max(top, s.end)
            self._max_end.append(top)

    def lines(self, a: float, b: float) -> tuple[str, ...]:
        """The speech said in ``[a, b]``, one line per segment, in speaking order."""
        if self._by_word:
            return self._word_lines(a, b)
        lo = bisect.bisect_left(self._max_end, a)
        hi = bisect.bisect_right(self._seg_starts, b)
        return tuple(s.text.strip() for s in self._segments[lo:hi] if s.end >= a)

    def _word_lines(self, a: float, b: float) -> tuple[str, ...]:
        lo = bisect.bisect_left(self._ends, a)
        hi = bisect.bisect_right(self._ends, b)
        lines: list[str] = []
        i = lo
        while i < hi:
            run_end = self._run_end[i]
            if run_end <= hi and i in self._run_text:
                text = self._run_text[i]  # a whole run: its joined text is precomputed
            else:
                text = " ".join(self._text[i : min(run_end, hi)])
            lines.append(text)
            i = min(run_end, hi)
        return tuple(lines)


def chat_line(message: ChatMessage) -> str:
    """How a context message is shown: ``user: text`` (display name when known, as live)."""
    return f"{message.display_name or message.user}: {' '.join(message.text.split())}"


def align(
    targets: Sequence[ChatMessage],
    context: Sequence[ChatMessage],
    segments: Iterable[Segment],
    source: str,
    options: AlignOptions = AlignOptions(),
) -> list[Pair]:
    """One ``Pair`` per target message, in target order.

    ``targets`` are the messages to learn (any order); ``context`` the chat the
    author could see (sorted here by offset, stable). Targets that are also in
    ``context`` never see themselves: only messages strictly before ``t`` count.
    """
    transcript = TranscriptIndex(segments, interpolate_words=options.interpolate_words)
    ordered = sorted(context, key=lambda m: m.offset)
    chat_offsets = [m.offset for m in ordered]
    chat_lines = [chat_line(m) for m in ordered]
    k = options.chat_messages
    window, delay = options.window_s, options.delay_s
    pairs: list[Pair] = []
    last_key: tuple[float, float] | None = None
    last_lines: tuple[str, ...] = ()
    for message in targets:
        t = message.offset
        key = (t - window, t - delay)
        if key != last_key:  # neighbours posted at the same time share the window
            last_key, last_lines = key, transcript.lines(*key)
        j = bisect.bisect_left(chat_offsets, t)
        chat = tuple(chat_lines[max(0, j - k) : j]) if k else ()
        pairs.append(
            Pair(
                source=source,
                offset=t,
                transcript=last_lines,
                chat=chat,
                target=message.text.strip(),
                user=message.user,
            )
        )
    return pairs


def align_naive(
    targets: Sequence[ChatMessage],
    context: Sequence[ChatMessage],
    segments: Iterable[Segment],
    source: str,
    options: AlignOptions = AlignOptions(),
) -> list[Pair]:
    """The same pairs as ``align`` by a linear scan per message (the benchmark's baseline
    and the tests' reference: slow, obviously right)."""
    words: list[tuple[float, int, str]] = []
    ordered_segs = sorted(segments, key=lambda s: (s.start, s.end))
    for n, seg in enumerate(ordered_segs):
        for w in seg.words or spread_words(seg):
            if w.text.strip():
                words.append((w.end, n, w.text.strip()))
    words.sort(key=lambda e: (e[0], e[1]))
    ordered = sorted(context, key=lambda m: m.offset)
    pairs = []
    for message in targets:
        t = message.offset
        lines: list[str] = []
        prev = None
        for end, n, text in words:
            if t - options.window_s <= end <= t - options.delay_s:
                if prev == n:
                    lines[-1] += " " + text
                else:
                    lines.append(text)
                prev = n
        before = [chat_line(m) for m in ordered if m.offset < t]
        chat = before[-options.chat_messages :] if options.chat_messages else []
        pairs.append(Pair(source, t, tuple(lines), tuple(chat), message.text.strip(), message.user))
    return pairs
