"""Reader for TwitchDownloader's text chat (``chatdownload -o chat.txt --timestamp-format X``).

One message a line, ``{display_name}: {body}`` after a timestamp whose form
depends on ``--timestamp-format``:

- ``Relative`` (default): ``[h:mm:ss] user: msg``, VOD offsets in whole seconds;
  past 24 hours the hours keep counting (``[25:01:02]``).
- ``Utc``: ``[yyyy-MM-dd HH:mm:ss UTC] user: msg``, the comment's send time;
  ``UtcFull`` adds milliseconds (``22:13:20.123``). Wall-clock: reading needs
  the stream's start (``stream_start``, UNIX seconds).
- ``None``: ``user: msg`` with no time at all, so it cannot be aligned with
  the VOD: reading it is refused with the flag to export again.

The file has display names, not logins: ``user`` is the display name in lower
case (the login for all but localized names). There are no ids or emote data.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from itertools import chain
from pathlib import Path
from typing import Any

from chatling.chatlog.base import finish, read_head
from chatling.chatlog.lines import Line, head_lines, iter_lines, mostly, unexpected
from chatling.chatlog.result import ChatLog, Clock, check_start, utc_seconds, wall_clock_start
from chatling.core.errors import ChatLogError
from chatling.core.events import ChatMessage

_RELATIVE = re.compile(r"\[(\d{1,7}):([0-5]\d):([0-5]\d)\] ([^:]*): ?(.*)")
_UTC = re.compile(
    r"\[(\d{4})-(\d\d)-(\d\d) (\d\d):([0-5]\d):([0-5]\d)(?:\.(\d{1,7}))? UTC\] ([^:]*): ?(.*)"
)
_NONE = re.compile(r"([^:]*): ?(.*)")

# Sniffing is stricter than reading: the name starts right after one space
# (Chatterino puts two), and a None line starts like a display name.
_RELATIVE_SNIFF = re.compile(r"\[\d{1,7}:[0-5]\d:[0-5]\d\] [^\s:][^:]*: ")
_UTC_SNIFF = re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,7})? UTC\] [^\s:][^:]*: ")
_NONE_SNIFF = re.compile(r"[^\s:\[\]{}#@\"'<>(),;][^\s:]{0,39}: ")

STYLES = {"Relative": _RELATIVE, "Utc": _UTC, "UtcFull": _UTC, "None": _NONE}
"""``--timestamp-format`` values and the line each writes."""

_EXPECTED = {
    "Relative": "'[h:mm:ss] user: message' (TwitchDownloader text, Relative timestamps)",
    "Utc": "'[yyyy-MM-dd HH:mm:ss UTC] user: message' (TwitchDownloader text, Utc timestamps)",
    "None": "'user: message' (TwitchDownloader text without timestamps)",
}


def _style(line: str) -> str | None:
    """The ``--timestamp-format`` that writes ``line``, None when none does."""
    if _RELATIVE_SNIFF.match(line):
        return "Relative"
    match = _UTC_SNIFF.match(line)
    if match:
        return "UtcFull" if line[20:21] == "." else "Utc"
    if _NONE_SNIFF.match(line):
        return "None"
    return None


def _family(line: str) -> str | None:
    """The style of ``line``, Utc and UtcFull counted as one (a file may mix them)."""
    style = _style(line)
    return "Utc" if style == "UtcFull" else style


class TwitchDownloaderTextReader:
    """TwitchDownloader text output, any ``--timestamp-format``."""

    name = "twitchdownloader-text"

    def sniff(self, path: Path, head: bytes) -> bool:
        lines = head_lines(head)
        family = _family(lines[0]) if lines else None
        return family is not None and mostly(lines, lambda line: _family(line) == family)

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
        lines = iter_lines(path, head)
        first = next((line for line in lines if line.text.strip()), None)
        style = _style(first.text) if first is not None else None
        if first is None or style is None:
            expected = " or ".join(_EXPECTED.values())
            where = first or Line(1, "", True)
            raise unexpected(path, where, f"TwitchDownloader text: {expected}")
        if style == "None" and not unaligned_ok:
            raise ChatLogError(
                path,
                f"line {first.number}",
                "the file has no timestamps (TwitchDownloader --timestamp-format None), so "
                "its chat cannot be aligned with the VOD; export it again with "
                "`--timestamp-format Relative`",
            )
        start = 0.0
        if style.startswith("Utc"):
            start = wall_clock_start(
                path, stream_start, unaligned_ok, "UTC, --timestamp-format Utc"
            )
        skipped: Counter[str] = Counter()
        messages: list[ChatMessage] = []
        before = self._parse(path, style, start, chain((first,), lines), messages, skipped)
        check_start(path, stream_start if style.startswith("Utc") else None, len(messages), before)
        clock: Clock = {"Relative": "vod", "None": "none"}.get(style, "wall-clock")  # type: ignore[assignment]
        finish(path, self.name, messages, skipped)
        used_start = stream_start if clock == "wall-clock" else None
        return ChatLog(messages, clock, used_start, variant=style)

    def _parse(
        self,
        path: Path,
        style: str,
        start: float,
        lines: Iterable[Line],
        messages: list[ChatMessage],
        skipped: Counter[str],
    ) -> int:
        """Append the messages of ``lines`` to ``messages``; the number before ``start``."""
        pattern = STYLES[style]
        expected = _EXPECTED["Utc" if style == "UtcFull" else style]
        before = 0
        append = messages.append
        for line in lines:
            match = pattern.fullmatch(line.text)
            if match is None:
                if not line.text.strip():
                    continue
                raise unexpected(path, line, expected)
            *stamp, name, text = match.groups()
            name, text = name.strip(), text.strip()
            if not text:
                skipped["empty messages"] += 1
                continue
            if not name:
                skipped["messages without a user"] += 1
                continue
            if style == "Relative":
                offset = int(stamp[0]) * 3600 + int(stamp[1]) * 60 + int(stamp[2])
            elif style == "None":
                offset = 0.0
            else:
                offset = self._utc(path, line, stamp) - start
                if offset < 0:
                    before += 1
                    continue
            append(
                ChatMessage(offset=float(offset), user=name.lower(), text=text, display_name=name)
            )
        if before:
            skipped["messages before the stream start"] += before
        return before

    @staticmethod
    def _utc(path: Path, line: Line, stamp: list[str]) -> float:
        year, month, day, hour, minute, second, fraction = stamp
        try:
            seconds = utc_seconds(
                int(year), int(month), int(day), int(hour), int(minute), int(second)
            )
        except ValueError as exc:
            raise ChatLogError(path, f"line {line.number}", f"bad date or time: {exc}") from None
        if fraction:
            seconds += int(fraction) / 10 ** len(fraction)
        return seconds
