"""Chat-log readers: any supported chat log file in, ``ChatMessage`` values out.

Training and replay call ``read_chat_log(path)``; it detects the format from
the first bytes of the file (``detect_format``), reads every message with its
VOD offset in seconds, and returns them sorted by offset. Every problem with
the file (missing, empty, binary, truncated, unknown format, a record without
its time or text) is a ``bot.errors.ChatLogError`` naming the file and place.

    from bot.chatlog import read_chat_log, inspect_chat_log
    messages = read_chat_log("chat.json")            # format="auto"
    live = read_chat_log("live.jsonl", stream_start=1700000000.0)
    print(inspect_chat_log("chat.json"))

Adding a format: write a reader with ``name``, ``sniff(path, head)`` and
``read(path, **opts)`` (see ``bot.chatlog.base.ChatLogReader``) and put it in
``REGISTRY`` below, before any reader whose ``sniff`` would also accept it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.chatlog.base import ChatLogReader, Registry, read_head
from bot.chatlog.chat_downloader import ChatDownloaderReader
from bot.chatlog.twitchdownloader import TwitchDownloaderJsonReader
from bot.chatlog.v5 import TwitchV5Reader
from bot.errors import ChatLogError
from bot.events import ChatMessage

__all__ = [
    "FORMATS",
    "REGISTRY",
    "ChatLogError",
    "ChatLogInfo",
    "ChatLogReader",
    "Registry",
    "detect_format",
    "inspect_chat_log",
    "read_chat_log",
]

REGISTRY = Registry(
    (
        TwitchDownloaderJsonReader(),  # objects with FileInfo or streamer
        TwitchV5Reader(),  # objects with comments, arrays of comments
        ChatDownloaderReader(),  # arrays or JSON lines of chat-downloader items
    )
)
"""The readers, in the order ``detect_format`` tries them."""

FORMATS: tuple[str, ...] = REGISTRY.names
"""Format names accepted by ``read_chat_log(format=...)``, besides ``"auto"``."""


def detect_format(path: str | Path) -> str:
    """The name of the format of the chat log at ``path`` (looks at its first 64 KiB only)."""
    path = Path(path)
    return REGISTRY.detect(path, read_head(path)).name


def read_chat_log(
    path: str | Path, format: str = "auto", stream_start: float | None = None
) -> list[ChatMessage]:
    """Every chat message in the file, sorted by offset (ties keep file order).

    ``stream_start`` (UNIX seconds) is needed only for live captures whose
    times are wall-clock (chat-downloader without ``time_in_seconds``).
    """
    path = Path(path)
    head = read_head(path)  # missing, empty and binary files fail here, whatever the format
    reader = REGISTRY.detect(path, head) if format == "auto" else REGISTRY.get(path, format)
    return reader.read(path, stream_start=stream_start)


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
    """Offset of the first message in seconds, None when there is none."""
    last_offset: float | None

    @property
    def span(self) -> float:
        """Seconds from the first message to the last (0 when fewer than two)."""
        if self.first_offset is None or self.last_offset is None:
            return 0.0
        return self.last_offset - self.first_offset


def inspect_chat_log(
    path: str | Path, format: str = "auto", stream_start: float | None = None
) -> ChatLogInfo:
    """Read the chat log and summarise it: format, message and user counts, time range."""
    path = Path(path)
    head = read_head(path)
    reader = REGISTRY.detect(path, head) if format == "auto" else REGISTRY.get(path, format)
    messages = reader.read(path, stream_start=stream_start)
    return ChatLogInfo(
        path=path,
        format=reader.name,
        count=len(messages),
        users=len({m.user for m in messages}),
        first_offset=messages[0].offset if messages else None,
        last_offset=messages[-1].offset if messages else None,
    )
