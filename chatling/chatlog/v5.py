"""Reader for legacy Twitch v5 comment JSON, and the comment parser TwitchDownloader shares.

Twitch-Chat-Downloader (``tcd --format json``) and old rechat dumps write
``{"video": {...}, "comments": [...]}`` or just the bare ``comments`` array.
Each comment carries ``content_offset_seconds`` (seconds into the VOD),
``commenter {name, display_name}`` and ``message {body, fragments}``.
TwitchDownloader's JSON keeps this very comment shape, so ``parse_comments``
here serves both readers.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from chatling.chatlog.base import finish, load_json, peek_json, seconds, type_name
from chatling.core.errors import ChatLogError
from chatling.core.events import ChatMessage

TWITCHDOWNLOADER_KEYS = frozenset({"FileInfo", "streamer"})
"""Top-level keys only TwitchDownloader writes; without them a comments object is v5."""


def _fragment_emotes(message: dict[str, Any], body: str) -> tuple[str, ...]:
    """Emote names in the order they appear: fragments with an emoticon, else ``emoticons``."""
    fragments = message.get("fragments")
    names: list[str] = []
    if isinstance(fragments, list):
        for fragment in fragments:
            if isinstance(fragment, dict) and fragment.get("emoticon"):
                text = fragment.get("text")
                if isinstance(text, str) and text.strip():
                    names.append(text.strip())
        return tuple(names)
    emoticons = message.get("emoticons")
    if isinstance(emoticons, list):  # very old dumps: character ranges into the body
        for emoticon in emoticons:
            if isinstance(emoticon, dict):
                begin, end = emoticon.get("begin"), emoticon.get("end")
                if isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end:
                    name = body[begin : end + 1].strip()
                    if name:
                        names.append(name)
    return tuple(names)


def _body(path: Path, where: str, message: Any) -> str:
    """The message text: ``message.body``, or the fragments joined when there is no body."""
    if not isinstance(message, dict):
        raise ChatLogError(
            path,
            where,
            f"message is {type_name(message)}, expected an object with the text in body",
        )
    body = message.get("body")
    if body is None and isinstance(message.get("fragments"), list):
        parts = [f.get("text") for f in message["fragments"] if isinstance(f, dict)]
        body = "".join(p for p in parts if isinstance(p, str))
    if body is None:
        raise ChatLogError(path, where, "no message.body: every comment needs its text")
    if not isinstance(body, str):
        raise ChatLogError(path, where, f"message.body is {type_name(body)}, expected text")
    return body


def parse_comments(
    path: Path, comments: Any, label: str, skipped: Counter[str]
) -> list[ChatMessage]:
    """ChatMessages from a v5-style ``comments`` array; ``label`` names it in errors.

    Comments with an empty body or no commenter are skipped and counted in
    ``skipped``; a comment without its offset or text is an error.
    """
    if not isinstance(comments, list):
        raise ChatLogError(path, label, f"is {type_name(comments)}, expected an array of comments")
    messages: list[ChatMessage] = []
    for index, comment in enumerate(comments):
        where = f"{label}[{index}]"
        if not isinstance(comment, dict):
            raise ChatLogError(path, where, f"is {type_name(comment)}, expected a comment object")
        offset = seconds(
            path, where, "content_offset_seconds", comment.get("content_offset_seconds")
        )
        message = comment.get("message")
        body = _body(path, where, message)
        text = body.strip()
        if not text:
            skipped["empty messages"] += 1
            continue
        commenter = comment.get("commenter")
        login = display = None
        if isinstance(commenter, dict):
            login, display = commenter.get("name"), commenter.get("display_name")
        if not isinstance(display, str) or not display:
            display = None
        if not isinstance(login, str) or not login:
            login = display
        if login is None:
            skipped["comments without a commenter"] += 1
            continue
        message_id = comment.get("_id")
        messages.append(
            ChatMessage(
                offset=offset,
                user=login.lower(),
                text=text,
                display_name=display,
                message_id=message_id if isinstance(message_id, str) else None,
                emotes=_fragment_emotes(message, body),
                source="replay",
            )
        )
    return messages


class TwitchV5Reader:
    """``{"video": ..., "comments": [...]}`` or a bare array of v5 comments."""

    name = "twitch-v5"

    def sniff(self, path: Path, head: bytes) -> bool:
        shape = peek_json(head)
        if shape is None:
            return False
        if shape.kind == "object":
            return "comments" in shape.keys and TWITCHDOWNLOADER_KEYS.isdisjoint(shape.keys)
        return (
            shape.kind == "array"
            and isinstance(shape.first, dict)
            and "content_offset_seconds" in shape.first
        )

    def read(self, path: Path, **opts: Any) -> list[ChatMessage]:
        data = load_json(path)
        if isinstance(data, dict):
            if "comments" not in data:
                keys = ", ".join(list(data)[:8]) or "none"
                raise ChatLogError(
                    path,
                    None,
                    f"no 'comments' array (top-level keys: {keys}); not a v5 chat log",
                )
            comments = data["comments"]
        elif isinstance(data, list):
            comments = data
        else:
            raise ChatLogError(
                path,
                None,
                f"is {type_name(data)}, expected a JSON object or array of comments",
            )
        skipped: Counter[str] = Counter()
        return finish(
            path,
            self.name,
            parse_comments(path, comments, "comments", skipped),
            skipped,
        )
