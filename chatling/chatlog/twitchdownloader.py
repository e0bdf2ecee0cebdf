"""Reader for TwitchDownloader chat JSON (``chatdownload -o chat.json``, also ``.json.gz``).

Current files (``FileInfo.Version`` 1.4.x) have ``FileInfo``, ``streamer``,
``video``, ``comments`` and optional ``embeddedData``; older files have no
``FileInfo`` but do have ``streamer``. The comments keep the Twitch v5 shape,
so the parsing is ``chatling.chatlog.v5.parse_comments``; offsets are already VOD
offsets (``content_offset_seconds``).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from chatling.chatlog.base import finish, load_json, peek_json, type_name
from chatling.chatlog.v5 import TWITCHDOWNLOADER_KEYS, parse_comments
from chatling.core.errors import ChatLogError
from chatling.core.events import ChatMessage

logger = logging.getLogger(__name__)

NEWEST_TESTED_MAJOR = 1
"""Files whose ``FileInfo.Version`` major number is higher get a warning, then are read."""


def _check_version(path: Path, data: dict[str, Any]) -> None:
    info = data.get("FileInfo")
    version = info.get("Version") if isinstance(info, dict) else None
    if not isinstance(version, str):
        return
    major = version.split(".", 1)[0]
    if major.isascii() and major.isdigit() and int(major[:9]) > NEWEST_TESTED_MAJOR:
        logger.warning(
            "%s: TwitchDownloader file version %s is newer than chatling knows (1.x); "
            "reading it as 1.x",
            path,
            version,
        )


class TwitchDownloaderJsonReader:
    """TwitchDownloader's chat JSON, with or without ``FileInfo``, plain or gzip."""

    name = "twitchdownloader-json"

    def sniff(self, path: Path, head: bytes) -> bool:
        shape = peek_json(head)
        return (
            shape is not None
            and shape.kind == "object"
            and not TWITCHDOWNLOADER_KEYS.isdisjoint(shape.keys)
        )

    def read(self, path: Path, **opts: Any) -> list[ChatMessage]:
        data = load_json(path)
        if not isinstance(data, dict):
            raise ChatLogError(
                path,
                None,
                f"is {type_name(data)}, expected a TwitchDownloader JSON object",
            )
        if "comments" not in data:
            raise ChatLogError(
                path,
                None,
                "no 'comments' array; export the chat again with TwitchDownloader",
            )
        _check_version(path, data)
        skipped: Counter[str] = Counter()
        messages = parse_comments(path, data["comments"], "comments", skipped)
        return finish(path, self.name, messages, skipped)
