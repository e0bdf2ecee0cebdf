"""Readers for justlog / rustlog Twitch chat archives: raw IRC, plain text and JSON.

All three are wall-clock (UTC), so reading them needs the stream's start
(``stream_start``, UNIX seconds); offset = send time - stream_start, and
messages sent before the start are skipped.

- ``justlog-irc`` (on disk, and the API with ``?raw``): one raw IRCv3 line a
  message, ``@tags :nick!nick@nick.tmi.twitch.tv PRIVMSG #channel :text``.
  The time is the ``tmi-sent-ts`` tag (UNIX ms). Only PRIVMSG is chat;
  ``CLEARCHAT`` (timeout, ban, chat cleared) and ``CLEARMSG`` (one message
  deleted) become ``ModerationEvent`` values in ``ChatLog.moderation``;
  other commands (USERNOTICE, ROOMSTATE, ...) are skipped and counted.
  Badges, ``reply-parent-msg-id`` and the ``emotes`` ranges are kept.
- ``justlog-text`` (the API's plain text): ``[2006-01-2 15:04:05] #channel
  user: text``. justlog writes timeouts as ``user has been timed out for N
  seconds`` without ``user:``; rustlog writes them after ``user:``; both
  become moderation events. Other lines without ``user:`` are system lines.
  Rustlog puts subscription notices after ``user:`` too: those that start
  with the user's own name and a notice phrase are skipped.
- ``justlog-json`` (the API's JSON): ``{"messages": [{text, username,
  displayName, channel, timestamp, id, type, raw, tags}]}``; type 1 is
  PRIVMSG (chat), type 2 CLEARCHAT; others are skipped.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from chatling.chatlog.base import (
    decode_head,
    finish,
    load_json,
    peek_json,
    read_head,
    type_name,
)
from chatling.chatlog.irc import IrcLine, irc_chat, irc_moderation, parse_irc, sent_seconds
from chatling.chatlog.lines import head_lines, iter_lines, mostly, unexpected
from chatling.chatlog.moderation import ModerationEvent
from chatling.chatlog.result import ChatLog, check_start, utc_seconds, wall_clock_start
from chatling.core.errors import ChatLogError
from chatling.core.events import ChatMessage

_IRC_SNIFF = re.compile(r"(?:@\S+ +)?:\S+ +(?:[A-Z]+|\d{3})(?: |$)")
_TEXT = re.compile(r"\[(\d{4})-(\d{1,2})-(\d{1,2}) (\d{1,2}):(\d\d):(\d\d)\] #(\S+) (.*)")
_TEXT_CHAT = re.compile(r"([A-Za-z0-9_]{1,25}):(?: (.*))?")
_TEXT_TIMEOUT = re.compile(r"(\w+) has been timed out for (\d+) seconds")
_TEXT_BAN = re.compile(r"(\w+) has been banned")
_NOTICE_PHRASES = (
    "subscribed ",
    "gifted ",
    "is gifting ",
    "converted from ",
    "is continuing ",
    "is paying forward ",
)
_JSON_KEYS = frozenset({"username", "displayName", "raw", "tags"})
_MESSAGES = re.compile(r'"messages"\s*:\s*\[\s*')
_DECODER = json.JSONDecoder()
PRIVMSG, CLEARCHAT = 1, 2
"""justlog/rustlog message types (go-twitch-irc numbering) that matter here."""


class _Collected:
    """Messages and moderation gathered while reading, with the count before the start."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.messages: list[ChatMessage] = []
        self.moderation: list[ModerationEvent] = []
        self.skipped: Counter[str] = Counter()
        self.before = 0

    def chat(self, message: ChatMessage | None) -> None:
        if message is None:
            self.skipped["messages without text or user"] += 1
        elif message.offset < 0:
            self.before += 1
        else:
            self.messages.append(message)

    def event(self, event: ModerationEvent | None) -> None:
        if event is not None and event.offset >= 0:
            self.moderation.append(event)

    def log(self, path: Path, name: str, stream_start: float | None) -> ChatLog:
        check_start(path, stream_start, len(self.messages), self.before)
        if self.before:
            self.skipped["messages before the stream start"] += self.before
        finish(path, name, self.messages, self.skipped)
        self.moderation.sort(key=lambda e: e.offset)
        return ChatLog(self.messages, "wall-clock", stream_start, tuple(self.moderation))


class JustlogIrcReader:
    """Raw IRCv3 lines with tags (justlog/rustlog files on disk, API ``?raw``)."""

    name = "justlog-irc"

    def sniff(self, path: Path, head: bytes) -> bool:
        return mostly(head_lines(head), _IRC_SNIFF.match)

    def read(self, path: Path, **opts: Any) -> list[ChatMessage]:
        return self.read_log(path, stream_start=opts.get("stream_start")).messages

    def read_log(
        self,
        path: Path,
        *,
        stream_start: float | None = None,
        unaligned_ok: bool = False,
        **opts: Any,
    ) -> ChatLog:
        head = read_head(path)
        got = _Collected(wall_clock_start(path, stream_start, unaligned_ok, "UTC"))
        for line in iter_lines(path, head):
            if not line.text.strip():
                continue
            irc = parse_irc(line.text)
            if irc is None:
                expected = "a raw Twitch IRC line ('@tags :nick!nick@host PRIVMSG #channel :text')"
                raise unexpected(path, line, expected)
            if irc.command not in ("PRIVMSG", "CLEARCHAT", "CLEARMSG"):
                got.skipped[f"{irc.command} lines"] += 1
                continue
            offset = sent_seconds(path, f"line {line.number}", irc.tags) - got.start
            if irc.command == "PRIVMSG":
                text = irc.trailing if irc.trailing is not None else " ".join(irc.params[1:])
                got.chat(irc_chat(irc.tags, irc.nick, text, offset))
            else:
                got.event(irc_moderation(irc, offset))
        return got.log(path, self.name, stream_start)


class JustlogTextReader:
    """The plain text API output: ``[2006-01-2 15:04:05] #channel user: text`` (UTC)."""

    name = "justlog-text"

    def sniff(self, path: Path, head: bytes) -> bool:
        return mostly(head_lines(head), _TEXT.fullmatch)

    def read(self, path: Path, **opts: Any) -> list[ChatMessage]:
        return self.read_log(path, stream_start=opts.get("stream_start")).messages

    def read_log(
        self,
        path: Path,
        *,
        stream_start: float | None = None,
        unaligned_ok: bool = False,
        **opts: Any,
    ) -> ChatLog:
        head = read_head(path)
        got = _Collected(wall_clock_start(path, stream_start, unaligned_ok, "UTC"))
        for line in iter_lines(path, head):
            match = _TEXT.fullmatch(line.text)
            if match is None:
                if not line.text.strip():
                    continue
                raise unexpected(path, line, "'[yyyy-MM-d HH:mm:ss] #channel user: text'")
            *stamp, _channel, rest = match.groups()
            try:
                offset = utc_seconds(*(int(part) for part in stamp)) - got.start
            except ValueError as exc:
                raise ChatLogError(
                    path, f"line {line.number}", f"bad date or time: {exc}"
                ) from None
            chat = _TEXT_CHAT.fullmatch(rest)
            login, text = (chat.group(1).lower(), chat.group(2) or "") if chat else (None, rest)
            event = self._moderation(login, text, offset)
            if event is not None:
                got.event(event)
            elif login is None:
                got.skipped["system lines"] += 1
            elif text.lower().startswith(login + " ") and text[len(login) + 1 :].startswith(
                _NOTICE_PHRASES
            ):
                got.skipped["subscription notices"] += 1
            elif not text.strip():
                got.skipped["empty messages"] += 1
            else:
                got.chat(ChatMessage(offset=offset, user=login, text=text.strip()))
        return got.log(path, self.name, stream_start)

    @staticmethod
    def _moderation(login: str | None, text: str, offset: float) -> ModerationEvent | None:
        """A timeout, ban or clear line; rustlog puts the target's login before it too."""
        if login is None and text.strip() == "Chat has been cleared":
            return ModerationEvent(offset, "clear")
        timeout = _TEXT_TIMEOUT.fullmatch(text)
        if timeout and login in (None, timeout.group(1).lower()):
            return ModerationEvent(
                offset, "timeout", timeout.group(1).lower(), duration=float(timeout.group(2))
            )
        ban = _TEXT_BAN.fullmatch(text)
        if ban and login in (None, ban.group(1).lower()):
            return ModerationEvent(offset, "ban", ban.group(1).lower())
        return None


def _first_item(head: bytes) -> Any:
    """The first element of the head's ``"messages"`` array; ``[]`` when it is empty."""
    text = decode_head(head) or ""
    found = _MESSAGES.search(text)
    if found is None:
        return None
    if text[found.end() : found.end() + 1] == "]":
        return []
    try:
        item, _ = _DECODER.raw_decode(text, found.end())
    except (ValueError, RecursionError):
        return None
    return item


class JustlogJsonReader:
    """The JSON API output: ``{"messages": [{text, username, timestamp, type, raw, tags}]}``."""

    name = "justlog-json"

    def sniff(self, path: Path, head: bytes) -> bool:
        shape = peek_json(head)
        if shape is None or shape.kind != "object" or "messages" not in shape.keys:
            return False
        item = _first_item(head)
        return item == [] or (
            isinstance(item, dict) and "text" in item and not _JSON_KEYS.isdisjoint(item)
        )

    def read(self, path: Path, **opts: Any) -> list[ChatMessage]:
        return self.read_log(path, stream_start=opts.get("stream_start")).messages

    def read_log(
        self,
        path: Path,
        *,
        stream_start: float | None = None,
        unaligned_ok: bool = False,
        **opts: Any,
    ) -> ChatLog:
        data = load_json(path)
        items = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(items, list):
            found = type_name(data) if not isinstance(data, dict) else "an object without it"
            raise ChatLogError(
                path, None, f"expected a 'messages' array (justlog JSON), found {found}"
            )
        got = _Collected(wall_clock_start(path, stream_start, unaligned_ok, "UTC"))
        for index, item in enumerate(items):
            where = f"messages[{index}]"
            if not isinstance(item, dict):
                raise ChatLogError(path, where, f"is {type_name(item)}, expected a message object")
            kind = item.get("type")
            raw = item.get("raw")
            irc = parse_irc(raw) if isinstance(raw, str) and kind != PRIVMSG else None
            if kind == CLEARCHAT or (irc is not None and irc.command == "CLEARMSG"):
                offset = _item_time(path, where, item) - got.start
                got.event(_json_moderation(item, irc, offset))
            elif kind != PRIVMSG:
                got.skipped[f"type {kind} items"] += 1
            else:
                got.chat(_json_chat(path, where, item, got.start))
        return got.log(path, self.name, stream_start)


def _tags(item: Mapping[str, Any]) -> dict[str, str]:
    tags = item.get("tags")
    if not isinstance(tags, dict):
        return {}
    return {k: v for k, v in tags.items() if isinstance(k, str) and isinstance(v, str)}


def _item_time(path: Path, where: str, item: Mapping[str, Any]) -> float:
    """UNIX seconds: the ``tmi-sent-ts`` tag (ms), else ``timestamp`` (RFC 3339)."""
    sent = _tags(item).get("tmi-sent-ts", "")
    if sent.isascii() and sent.isdigit():  # not "²": isdigit takes it, int does not
        return sent_seconds(path, where, {"tmi-sent-ts": sent})
    stamp = item.get("timestamp")
    if not isinstance(stamp, str):
        raise ChatLogError(path, where, f"timestamp is {type_name(stamp)}, expected RFC 3339 text")
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        raise ChatLogError(
            path, where, f"timestamp {stamp[:40]!r} is not an RFC 3339 time"
        ) from None
    if when.tzinfo is None:
        raise ChatLogError(path, where, f"timestamp {stamp[:40]!r} has no time zone")
    return when.timestamp()


def _json_chat(path: Path, where: str, item: Mapping[str, Any], start: float) -> ChatMessage | None:
    text = item.get("text")
    if not isinstance(text, str):
        raise ChatLogError(path, where, f"text is {type_name(text)}, expected the message text")
    tags = _tags(item)
    for field, tag in (("displayName", "display-name"), ("id", "id")):
        value = item.get(field)
        if isinstance(value, str) and value and not tags.get(tag):
            tags[tag] = value
    login = item.get("username")
    login = login if isinstance(login, str) and login else None
    return irc_chat(tags, login, text, _item_time(path, where, item) - start)


def _json_moderation(
    item: Mapping[str, Any], irc: IrcLine | None, offset: float
) -> ModerationEvent | None:
    """From the raw line when there is one, else from ``username`` and the tags."""
    if irc is not None and irc.command in ("CLEARCHAT", "CLEARMSG"):
        return irc_moderation(irc, offset)
    user = item.get("username")
    user = user.lower() if isinstance(user, str) and user else None
    duration = _tags(item).get("ban-duration", "")
    if user is None:
        return ModerationEvent(offset, "clear")
    if duration.isascii() and duration.isdigit():
        return ModerationEvent(offset, "timeout", user, duration=float(duration))
    return ModerationEvent(offset, "ban", user)
