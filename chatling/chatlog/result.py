"""What a reader returns (``ChatLog``), and the rules for wall-clock times and stream starts.

Readers that know more than the messages have ``read_log(path, *,
stream_start, timezone, unaligned_ok)`` returning a ``ChatLog``: the messages
plus the clock the file's times are on (VOD offsets, wall-clock times, or
none) and the moderation actions it records. ``read_log`` here gives the same
for readers that only have ``read``. Wall-clock formats need the stream's
start (UNIX seconds) to turn times into VOD offsets; ``wall_clock_start``
checks it, or refuses with the message users see.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from chatling.chatlog.base import ChatLogReader, seconds
from chatling.chatlog.moderation import ModerationEvent
from chatling.core.errors import ChatLogError
from chatling.core.events import ChatMessage

Clock = Literal["vod", "wall-clock", "none"]
"""What a file's times are: VOD offsets, wall-clock (UNIX) times, or absent."""

MILLISECONDS_EPOCH = 1e11
"""UNIX seconds stay below this until the year 5138; a bigger start is milliseconds."""


@dataclass(frozen=True, slots=True)
class ChatLog:
    """Everything a reader got from one file."""

    messages: list[ChatMessage]
    """Sorted by offset. VOD offsets, unless ``clock`` is ``wall-clock`` and
    ``stream_start`` is None (then UNIX seconds) or ``clock`` is ``none`` (then 0)."""
    clock: Clock
    stream_start: float | None = None
    """The start subtracted from wall-clock times (None when nothing was subtracted)."""
    moderation: tuple[ModerationEvent, ...] = ()
    """Timeouts, bans, deletions and clears, on the messages' clock (see ``drop_moderated``)."""
    variant: str | None = None
    """The format's variant when it has several (e.g. ``Relative``, ``Utc``), for ``inspect``."""

    @property
    def vod_relative(self) -> bool:
        """Whether the offsets are seconds from the stream's start."""
        return self.clock == "vod" or (self.clock == "wall-clock" and self.stream_start is not None)


@lru_cache(maxsize=4096)
def _midnight_utc(year: int, month: int, day: int) -> float:
    return datetime(year, month, day, tzinfo=UTC).timestamp()


def utc_seconds(year: int, month: int, day: int, hour: int, minute: int, second: float) -> float:
    """UNIX seconds of a UTC date and time; ValueError when it is no date or time of day."""
    if not (0 <= hour < 24 and 0 <= minute < 60 and 0 <= second < 61):
        raise ValueError(f"{hour:02}:{minute:02}:{second:02} is not a time of day")
    return _midnight_utc(year, month, day) + hour * 3600 + minute * 60 + second


def wall_clock_error(path: Path, what: str | None = None) -> ChatLogError:
    """The refusal for a wall-clock file read without a stream start (``what``: which times)."""
    detail = f" ({what})" if what else ""
    return ChatLogError(
        path,
        None,
        f"the times in this file are wall-clock times{detail}, not VOD offsets: a stream "
        "start is required to align them; give the stream's start time (stream_start, "
        "UNIX seconds; --stream-start on the command line)",
    )


def wall_clock_start(
    path: Path,
    stream_start: Any,
    unaligned_ok: bool = False,
    what: str | None = None,
) -> float:
    """The seconds to subtract from a wall-clock file's UNIX times.

    ``stream_start`` when given (checked: finite seconds, not milliseconds); 0
    (times stay UNIX seconds) when it is None and ``unaligned_ok``; otherwise
    the refusal users see (``wall_clock_error``).
    """
    if stream_start is None:
        if unaligned_ok:
            return 0.0
        raise wall_clock_error(path, what)
    start = seconds(path, None, "stream_start", stream_start)
    if start > MILLISECONDS_EPOCH:
        raise ChatLogError(
            path, None, f"stream_start {start} looks like milliseconds; give seconds"
        )
    return start


def check_start(path: Path, stream_start: float | None, kept: int, before: int) -> None:
    """Refuse a stream start that is after every message (a wrong date or time zone)."""
    if stream_start is not None and before and not kept:
        raise ChatLogError(
            path,
            None,
            f"every message is before stream_start {stream_start}; check it "
            "(UNIX seconds, UTC) and, for local-time logs, the time zone",
        )


def read_log(
    reader: ChatLogReader,
    path: Path,
    *,
    stream_start: float | None = None,
    timezone: str | None = None,
    unaligned_ok: bool = False,
) -> ChatLog:
    """A ``ChatLog`` from any reader.

    ``unaligned_ok`` (for inspecting, never for training) accepts times that
    cannot become VOD offsets: wall-clock times without ``stream_start`` stay
    UNIX seconds, and a file without times gets offset 0. ``timezone`` is for
    formats in local time (Chatterino).

    Readers with ``read_log`` answer themselves. For readers with only
    ``read`` (VOD offsets, or a ``ChatLogError`` whose problem says
    "wall-clock" when the file needs a stream start), a wall-clock file is
    read again with the start, or with 0 when ``unaligned_ok``.
    """
    full = getattr(reader, "read_log", None)
    if full is not None:
        log: ChatLog = full(
            path, stream_start=stream_start, timezone=timezone, unaligned_ok=unaligned_ok
        )
        return log
    if stream_start is None and not unaligned_ok:
        return ChatLog(reader.read(path), "vod")
    try:
        return ChatLog(reader.read(path), "vod")
    except ChatLogError as exc:
        if "wall-clock" not in exc.problem:
            raise
    start = 0.0 if stream_start is None else stream_start
    return ChatLog(reader.read(path, stream_start=start), "wall-clock", stream_start)
