"""Twitch IRC (IRCv3 with tags) lines: parsing, and the chat message or moderation they carry.

Used by the justlog/rustlog readers for raw lines and for the ``raw`` field
of their JSON. Tag values are kept escaped except where used
(``display-name``); emote names are the substrings of the text that the
``emotes`` tag's ranges (code points, as Python indexes) point at.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from chatling.chatlog.moderation import ModerationEvent
from chatling.core.errors import ChatLogError
from chatling.core.events import ChatMessage

_IRC = re.compile(r"(?:@(\S*) +)?(?::(\S+) +)?([A-Z]+|\d{3})(?: +(.*))?", re.DOTALL)
_TAG = re.compile(r"([^=;]+)(?:=([^;]*))?")
_RANGE = re.compile(r"(\d+)-(\d+)")
_ESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}


def unescape_tag(value: str) -> str:
    """An IRCv3 tag value with its escapes (``\\s``, ``\\:``, ...) undone."""
    if "\\" not in value:
        return value
    out: list[str] = []
    chars = iter(value)
    for char in chars:
        if char == "\\":
            escaped = next(chars, "")
            out.append(_ESCAPES.get(escaped, escaped))
        else:
            out.append(char)
    return "".join(out)


@dataclass(slots=True)
class IrcLine:
    """One parsed IRC line; tag values are still escaped (see ``unescape_tag``)."""

    tags: dict[str, str]
    nick: str | None
    """The sender's nick, None for server lines (``:tmi.twitch.tv``)."""
    command: str
    params: list[str]
    """Middle parameters (``#channel``, ...)."""
    trailing: str | None
    """The last parameter (after ``:``), None when absent."""


def parse_irc(line: str) -> IrcLine | None:
    """The IRC line's parts, or None when it is not an IRC line."""
    match = _IRC.fullmatch(line)
    if match is None:
        return None
    raw_tags, prefix, command, rest = match.groups()
    tags = dict(_TAG.findall(raw_tags)) if raw_tags else {}
    nick = None
    if prefix is not None and ("!" in prefix or "." not in prefix):  # not a server name
        nick = prefix.split("!", 1)[0]
    rest = rest or ""
    trailing = None
    if rest.startswith(":"):
        middle, trailing = "", rest[1:]
    else:
        cut = rest.find(" :")
        middle, trailing = (rest, None) if cut < 0 else (rest[:cut], rest[cut + 2 :])
    return IrcLine(tags, nick, command, middle.split(), trailing)


def irc_emotes(tag: str | None, text: str) -> tuple[str, ...]:
    """Emote names in order of appearance from ``emotes=id:start-end,.../id:...`` ranges."""
    if not tag:
        return ()
    found: list[tuple[int, str]] = []
    size = len(text)
    for group in tag.split("/"):
        for first, last in _RANGE.findall(group.partition(":")[2]):
            if len(first) > 9 or len(last) > 9:
                continue  # past any message; int() refuses 4300+ digits
            begin, end = int(first), int(last)
            if begin <= end < size:
                name = text[begin : end + 1].strip()
                if name:
                    found.append((begin, name))
    found.sort()
    return tuple(name for _, name in found)


def irc_badges(tag: str | None) -> tuple[str, ...]:
    """Badge set ids from ``badges=moderator/1,subscriber/12``."""
    if not tag:
        return ()
    return tuple(b.split("/", 1)[0] for b in tag.split(",") if b)


def irc_chat(
    tags: Mapping[str, str], login: str | None, text: str, offset: float
) -> ChatMessage | None:
    """A ChatMessage from a PRIVMSG's tags, sender and text; None when it has no text or user."""
    if text.startswith("\x01ACTION") and text.endswith("\x01"):  # /me
        text = text[8:-1]
    display = unescape_tag(tags.get("display-name") or "").strip() or None
    login = login or tags.get("login") or (display.lower() if display else None)
    if not login or not text.strip():
        return None
    return ChatMessage(
        offset=offset,
        user=login.lower(),
        text=text.strip(),
        display_name=display or login,
        message_id=tags.get("id") or None,
        emotes=irc_emotes(tags.get("emotes"), text),
        badges=irc_badges(tags.get("badges")),
        parent_message_id=tags.get("reply-parent-msg-id") or None,
    )


def irc_moderation(irc: IrcLine, offset: float) -> ModerationEvent | None:
    """The moderation event of a CLEARCHAT or CLEARMSG line (None for other commands)."""
    if irc.command == "CLEARMSG":
        login = irc.tags.get("login") or None
        return ModerationEvent(
            offset, "delete", login and login.lower(), irc.tags.get("target-msg-id") or None
        )
    if irc.command != "CLEARCHAT":
        return None
    target = irc.trailing if irc.trailing is not None else " ".join(irc.params[1:])
    target = target.strip().lower() or None
    if target is None:
        return ModerationEvent(offset, "clear")
    duration = irc.tags.get("ban-duration", "")
    if duration.isascii() and duration.isdigit():  # not "²": isdigit takes it, float does not
        return ModerationEvent(offset, "timeout", target, duration=float(duration))
    return ModerationEvent(offset, "ban", target)


def sent_seconds(path: Path, where: str, tags: Mapping[str, str]) -> float:
    """The ``tmi-sent-ts`` tag in UNIX seconds, or a ``ChatLogError`` when it is missing."""
    sent = tags.get("tmi-sent-ts", "")
    if sent and not (sent.isascii() and sent.isdigit() and len(sent) <= 15):
        raise ChatLogError(path, where, f"tmi-sent-ts {sent[:24]!r} is not a time in milliseconds")
    if not sent:
        raise ChatLogError(
            path,
            where,
            "no tmi-sent-ts tag, so the time of this line is unknown (justlog and rustlog "
            "always write it: is this a plain IRC log without tags?)",
        )
    return int(sent) / 1000
