"""Chat-log readers: any supported chat log file in, ``ChatMessage`` values out.

Training and replay call ``read_chat_log(path)``; it detects the format from
the first bytes of the file (``detect_format``), reads every message with its
VOD offset in seconds, and returns them sorted by offset. Every problem with
the file (missing, empty, binary, truncated, unknown format, a record without
its time or text) is a ``chatling.core.errors.ChatLogError`` naming the file and place.

    from chatling.chatlog import read_chat_log, read_chat_log_full, inspect_chat_log
    messages = read_chat_log("chat.json")            # format="auto"
    live = read_chat_log("channel.txt", stream_start=1700000000.0)
    log = read_chat_log_full("channel.log", stream_start=1700000000.0)
    clean = drop_moderated(log.messages, log.moderation)
    print(inspect_chat_log("chat.json"))

Formats whose times are wall-clock (TwitchDownloader text with Utc times,
justlog/rustlog, Chatterino, chat-downloader live captures) need the
stream's start (``stream_start``, UNIX seconds) and are refused without it;
Chatterino's local times may also need ``timezone``. ``inspect_chat_log``
reads them anyway and reports the wall-clock span. ``read_chat_log_full``
also returns the clock and the moderation actions (timeouts, bans, deleted
messages) that IRC archives record, for ``drop_moderated``.

Adding a format: write a reader with ``name``, ``sniff(path, head)`` and
``read(path, **opts)`` (see ``chatling.chatlog.base.ChatLogReader``; optionally
``read_log`` for a ``ChatLog``), put it in ``REGISTRY`` below, and add its
fixture to the test that checks every fixture is claimed by exactly one reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chatling.chatlog.base import ChatLogReader, Registry, read_head
from chatling.chatlog.chat_downloader import ChatDownloaderReader
from chatling.chatlog.chatterino import ChatterinoReader
from chatling.chatlog.justlog import JustlogIrcReader, JustlogJsonReader, JustlogTextReader
from chatling.chatlog.moderation import ModerationEvent, drop_moderated
from chatling.chatlog.result import ChatLog, Clock, read_log
from chatling.chatlog.twitchdownloader import TwitchDownloaderJsonReader
from chatling.chatlog.twitchdownloader_text import TwitchDownloaderTextReader
from chatling.chatlog.v5 import TwitchV5Reader
from chatling.core.errors import ChatLogError
from chatling.core.events import ChatMessage

__all__ = [
    "FORMATS",
    "REGISTRY",
    "ChatLog",
    "ChatLogError",
    "ChatLogInfo",
    "ChatLogReader",
    "Clock",
    "ModerationEvent",
    "Registry",
    "detect_format",
    "drop_moderated",
    "inspect_chat_log",
    "read_chat_log",
    "read_chat_log_full",
]

REGISTRY = Registry(
    (
        TwitchDownloaderJsonReader(),  # objects with FileInfo or streamer
        TwitchV5Reader(),  # objects with comments, arrays of comments
        ChatDownloaderReader(),  # arrays or JSON lines of chat-downloader items
        JustlogJsonReader(),  # objects with messages of text/username/raw/tags
        JustlogIrcReader(),  # lines "@tags :nick!... PRIVMSG #channel :text"
        ChatterinoReader(),  # "# Start logging at ..." then "[HH:mm:ss]  login: text"
        JustlogTextReader(),  # lines "[2006-01-2 15:04:05] #channel user: text"
        TwitchDownloaderTextReader(),  # lines "[h:mm:ss] Name: text", "[... UTC] ", "Name: text"
    )
)
"""The readers, in the order ``detect_format`` tries them (each fixture sniffs as one only)."""

FORMATS: tuple[str, ...] = REGISTRY.names
"""Format names accepted by ``read_chat_log(format=...)``, besides ``"auto"``."""


def _reader(path: Path, format: str) -> ChatLogReader:
    head = read_head(path)  # missing, empty and binary files fail here, whatever the format
    return REGISTRY.detect(path, head) if format == "auto" else REGISTRY.get(path, format)


def detect_format(path: str | Path) -> str:
    """The name of the format of the chat log at ``path`` (looks at its first 64 KiB only)."""
    path = Path(path)
    return REGISTRY.detect(path, read_head(path)).name


def read_chat_log(
    path: str | Path,
    format: str = "auto",
    stream_start: float | None = None,
    *,
    timezone: str | None = None,
) -> list[ChatMessage]:
    """Every chat message in the file, sorted by VOD offset (ties keep file order).

    ``stream_start`` (UNIX seconds) is needed for files whose times are
    wall-clock; ``timezone`` (IANA name or ``+02:00``) for local-time logs
    whose header zone is ambiguous.
    """
    return read_chat_log_full(path, format, stream_start, timezone=timezone).messages


def read_chat_log_full(
    path: str | Path,
    format: str = "auto",
    stream_start: float | None = None,
    *,
    timezone: str | None = None,
) -> ChatLog:
    """Like ``read_chat_log``, with the clock and the moderation actions the file records."""
    path = Path(path)
    return read_log(_reader(path, format), path, stream_start=stream_start, timezone=timezone)


@dataclass(frozen=True, slots=True)
class ChatLogInfo:
    """A summary of one chat log, for ``chatling data inspect``."""

    path: Path
    format: str
    count: int
    """Chat messages read (records skipped as non-chat are not counted)."""
    users: int
    """Distinct chatters (by login)."""
    first_offset: float | None
    """VOD offset of the first message in seconds; None when there is none or the
    times are wall-clock without a stream start (see ``first_time``) or absent."""
    last_offset: float | None
    clock: Clock = "vod"
    """``vod`` (the file has VOD offsets), ``wall-clock`` (send times) or ``none``."""
    first_time: float | None = None
    """Wall-clock time (UNIX seconds) of the first message, for wall-clock files."""
    last_time: float | None = None
    stream_start: float | None = None
    """The stream start used to turn wall-clock times into offsets, if any."""
    moderation: int = 0
    """Moderation actions recorded (timeouts, bans, deletions, clears)."""
    variant: str | None = None
    """The format's variant (e.g. TwitchDownloader text's ``Utc``), when it has several."""

    @property
    def vod_relative(self) -> bool:
        """Whether ``first_offset``/``last_offset`` are seconds from the stream's start."""
        return self.clock == "vod" or self.stream_start is not None

    @property
    def span(self) -> float:
        """Seconds from the first message to the last (0 when fewer than two or no times)."""
        if self.first_offset is not None and self.last_offset is not None:
            return self.last_offset - self.first_offset
        if self.first_time is not None and self.last_time is not None:
            return self.last_time - self.first_time
        return 0.0


def inspect_chat_log(
    path: str | Path,
    format: str = "auto",
    stream_start: float | None = None,
    *,
    timezone: str | None = None,
) -> ChatLogInfo:
    """Read the chat log and summarise it: format, message and user counts, time range.

    Unlike ``read_chat_log`` this also works for wall-clock files without a
    stream start (it reports their wall-clock span) and files without times.
    """
    path = Path(path)
    reader = _reader(path, format)
    log = read_log(reader, path, stream_start=stream_start, timezone=timezone, unaligned_ok=True)
    messages = log.messages
    first = messages[0].offset if messages else None
    last = messages[-1].offset if messages else None
    first_time = last_time = None
    if log.clock == "wall-clock" and messages:
        shift = log.stream_start or 0.0
        first_time, last_time = messages[0].offset + shift, messages[-1].offset + shift
    if not log.vod_relative:
        first = last = None
    return ChatLogInfo(
        path=path,
        format=reader.name,
        count=len(messages),
        users=len({m.user for m in messages}),
        first_offset=first,
        last_offset=last,
        clock=log.clock,
        first_time=first_time,
        last_time=last_time,
        stream_start=log.stream_start,
        moderation=len(log.moderation),
        variant=log.variant,
    )
