"""Reader for chat-downloader output (``chat_downloader <url> --output chat.json|.jsonl``).

Items are objects with ``message``, ``message_type``, ``author {name,
display_name}``, ``emotes``, ``timestamp`` (UNIX microseconds) and, for VODs
and replays only, ``time_in_seconds`` (the VOD offset). A ``.json`` file is one
array; a ``.jsonl`` file has one item a line. When no item has
``time_in_seconds`` the file is a live capture whose times are wall-clock:
reading it needs the stream's start (``stream_start``, UNIX seconds), and
offset = ``timestamp / 1e6 - stream_start``. Only ``text_message`` items are
chat; other kinds (subscriptions, raids, ...) and empty messages are skipped
and counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from chatling.chatlog.base import (
    JsonHead,
    describe_head,
    finish,
    iter_json_lines,
    load_json,
    peek_json,
    read_head,
    seconds,
    type_name,
)
from chatling.core.errors import ChatLogError
from chatling.core.events import ChatMessage

logger = logging.getLogger(__name__)

ITEM_KEYS = frozenset({"message_type", "time_in_seconds", "timestamp", "action_type"})
"""An item with a ``message`` or ``author`` and one of these is chat-downloader's."""

_MILLISECONDS_EPOCH = 1e11
"""UNIX seconds stay below this until the year 5138; a bigger start is milliseconds."""


def _is_item(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and ("message" in value or "author" in value)
        and not ITEM_KEYS.isdisjoint(value)
    )


def _starts(locations: Any) -> list[int]:
    """Start indexes from ``locations``: "0-4,6-10" (VODs) or ["0-4", "6-10"] (live)."""
    if isinstance(locations, str):
        locations = locations.split(",")
    if not isinstance(locations, list):
        return []
    starts = []
    for location in locations:
        start = str(location).split("-", 1)[0].strip()
        if start.isascii() and start.isdigit() and len(start) <= 9:
            starts.append(int(start))
    return starts


def _emotes(item: dict[str, Any], text: str) -> tuple[str, ...]:
    """Emote names in order of appearance, once per use.

    Positions come from ``locations``; emotes without them (YouTube) are found
    in the text by name.
    """
    emotes = item.get("emotes")
    if not isinstance(emotes, list):
        return ()
    found: list[tuple[int, str]] = []
    for emote in emotes:
        if not isinstance(emote, dict) or not isinstance(emote.get("name"), str):
            continue
        name = emote["name"].strip()
        if not name:
            continue
        starts = _starts(emote.get("locations"))
        if not starts:
            at = text.find(name)
            while at >= 0:
                starts.append(at)
                at = text.find(name, at + len(name))
        found.extend((start, name) for start in starts or [len(text)])
    found.sort()
    return tuple(name for _, name in found)


class ChatDownloaderReader:
    """chat-downloader JSON (one array) or JSON lines (one item a line)."""

    name = "chat-downloader"

    def sniff(self, path: Path, head: bytes) -> bool:
        shape = peek_json(head)
        if shape is None:
            return False
        if shape.kind == "object":  # a single item: a JSON-lines file of one line
            return _is_item(dict.fromkeys(shape.keys))
        return _is_item(shape.first)

    def _items(self, path: Path, shape: JsonHead | None) -> Iterable[tuple[str, Any]]:
        """``(where, item)`` pairs, from the array or from each line."""
        if shape is not None and shape.kind == "array":
            data = load_json(path)
            if not isinstance(data, list):
                raise ChatLogError(path, None, f"is {type_name(data)}, expected an array of items")
            return ((f"items[{i}]", item) for i, item in enumerate(data))
        return ((f"line {n}", item) for n, item in iter_json_lines(path))

    def read(self, path: Path, stream_start: float | None = None, **opts: Any) -> list[ChatMessage]:
        head = read_head(path)
        shape = peek_json(head)
        if shape is None or (shape.kind == "object" and not self.sniff(path, head)):
            raise ChatLogError(
                path,
                None,
                f"{describe_head(head)}: not chat-downloader JSON or JSON lines",
            )
        skipped: Counter[str] = Counter()
        chat: list[tuple[str, dict[str, Any], str]] = []  # (where, item, text)
        has_offsets = False
        for where, item in self._items(path, shape):
            if not isinstance(item, dict):
                raise ChatLogError(path, where, f"is {type_name(item)}, expected an item object")
            kind = item.get("message_type", "text_message")
            if kind != "text_message":
                skipped[f"{kind} items"] += 1
                continue
            text = item.get("message")
            if text is None:
                raise ChatLogError(path, where, "no 'message': every text_message needs its text")
            if not isinstance(text, str):
                raise ChatLogError(path, where, f"message is {type_name(text)}, expected text")
            if not text.strip():
                skipped["empty messages"] += 1
                continue
            has_offsets = has_offsets or "time_in_seconds" in item
            chat.append((where, item, text.strip()))
        if chat and not has_offsets and stream_start is None:
            raise ChatLogError(
                path,
                None,
                "no item has time_in_seconds: this is a live capture whose times are "
                "wall-clock, not VOD offsets; give the stream's start time "
                "(stream_start, UNIX seconds) to align it",
            )
        if has_offsets:
            if stream_start is not None:
                logger.debug("%s: has time_in_seconds; stream_start is not needed", path)
            stream_start = None
        elif stream_start is not None:
            stream_start = seconds(path, None, "stream_start", stream_start)
            if stream_start > _MILLISECONDS_EPOCH:
                raise ChatLogError(
                    path, None, f"stream_start {stream_start} looks like milliseconds; give seconds"
                )
        messages = self._messages(path, chat, stream_start, skipped)
        if stream_start is not None and chat and not messages:
            raise ChatLogError(
                path,
                None,
                f"every message is before stream_start {stream_start}; check it",
            )
        return finish(path, self.name, messages, skipped)

    def _messages(
        self,
        path: Path,
        chat: list[tuple[str, dict[str, Any], str]],
        stream_start: float | None,
        skipped: Counter[str],
    ) -> list[ChatMessage]:
        """ChatMessages from text items: VOD offsets, or wall-clock minus ``stream_start``."""
        messages: list[ChatMessage] = []
        for where, item, text in chat:
            if stream_start is None:
                offset = seconds(path, where, "time_in_seconds", item.get("time_in_seconds"))
            else:
                micros = seconds(path, where, "timestamp", item.get("timestamp"))
                offset = micros / 1e6 - stream_start
            if offset < 0:
                skipped["messages before the stream start"] += 1
                continue
            author = item.get("author")
            login = display = None
            if isinstance(author, dict):
                login, display = author.get("name"), author.get("display_name")
            if not isinstance(login, str) or not login:
                login = display if isinstance(display, str) and display else None
            if login is None:
                skipped["messages without an author"] += 1
                continue
            message_id = item.get("message_id")
            messages.append(
                ChatMessage(
                    offset=offset,
                    user=login.lower(),
                    text=text,
                    display_name=display if isinstance(display, str) and display else login,
                    message_id=message_id if isinstance(message_id, str) else None,
                    emotes=_emotes(item, text),
                    source="replay",
                )
            )
        return messages
