"""Reader for Chatterino's chat logs (``Logs/Twitch/Channels/<channel>/<channel>-yyyy-MM-dd.log``).

Chatterino appends a session at a time: a header ``# Start logging at
yyyy-MM-dd HH:mm:ss TZ``, then ``[HH:mm:ss]  login: text`` lines in LOCAL
time, then ``# Stop logging at ...``. Two spaces before the login is the
usual form (an empty localized name and its space); one space is accepted,
and a localized name (``[12:00:00] 小明 xiaoming: hi``) is kept as the display
name. Lines without ``login:`` are system lines (timeouts, subs) and are
skipped; their wording changes between Chatterino versions, so timeouts are
not turned into moderation events (use a justlog/rustlog archive for those).

The date comes from the latest header; a time more than 12 hours earlier
than the one before means midnight passed; a smaller step back is the end of
daylight saving time, after which a repeated hour is read as its second
occurrence.

Local times need their zone to become UNIX times: ``timezone`` (an IANA name
like ``Europe/Berlin``, or ``+02:00``) when given, else the header's zone
when it is unambiguous (``UTC``, ``CET``, ``GMT+2``, ``PDT``, ...); an
ambiguous one (``CST``, ``IST``) is refused with a request for ``timezone``.
Then, like every wall-clock format, ``stream_start`` (UNIX seconds) gives VOD
offsets.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from datetime import timezone as fixed_zone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chatling.chatlog.base import finish, read_head
from chatling.chatlog.lines import Line, head_lines, iter_lines, mostly, unexpected
from chatling.chatlog.result import ChatLog, check_start, wall_clock_start
from chatling.core.errors import ChatLogError
from chatling.core.events import ChatMessage

logger = logging.getLogger(__name__)

_HEADER = re.compile(r"# Start logging at (\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d) ?(.*?)\s*")
_LINE = re.compile(r"(?:#\S+ )?\[(\d\d):(\d\d):(\d\d)\] (.*)")
# A localized name has a non-ASCII character (Chatterino adds it only then).
_CHAT = re.compile(r" ?(?:([^\s:]*[^\x00-\x7f\s:][^\s:]*) )?([A-Za-z0-9_]{1,25}):(?: (.*))?")
_TWO_SPACES = re.compile(r"\[\d\d:\d\d:\d\d\]  [A-Za-z0-9_]{1,25}: ")
_OFFSET = re.compile(r"(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d\d))?")
_MIDNIGHT_STEP = 12 * 3600
"""A time this much earlier than the previous line's means the next day."""

ZONE_ABBREVIATIONS = {
    "UTC": 0, "GMT": 0, "Z": 0, "WET": 0, "WEST": 60, "BST": 60, "CET": 60, "CEST": 120,
    "MEZ": 60, "MESZ": 120, "EET": 120, "EEST": 180, "MSK": 180, "EST": -300, "EDT": -240,
    "CDT": -300, "MST": -420, "MDT": -360, "PST": -480, "PDT": -420, "AKST": -540,
    "AKDT": -480, "HST": -600, "JST": 540, "KST": 540, "AWST": 480, "ACST": 570, "ACDT": 630,
    "AEST": 600, "AEDT": 660, "NZST": 720, "NZDT": 780,
}  # fmt: skip
"""Unambiguous zone abbreviations -> minutes east of UTC (CST and IST mean several zones)."""


def resolve_zone(name: str) -> tzinfo | None:
    """The zone ``name`` means (abbreviation, ``+02:00``/``GMT+2``, or IANA name), else None."""
    name = name.strip()
    if not name:
        return None
    if name.upper() in ZONE_ABBREVIATIONS:
        return fixed_zone(timedelta(minutes=ZONE_ABBREVIATIONS[name.upper()]))
    offset = _OFFSET.fullmatch(name.upper())
    if offset:
        sign, hours, minutes = offset.groups()
        if int(hours) > 14 or int(minutes or 0) >= 60:
            return None
        delta = timedelta(hours=int(hours), minutes=int(minutes or 0))
        return fixed_zone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file
        return None


class _Clock:
    """The date and zone of the current session, advanced at midnight."""

    def __init__(self, path: Path, given: tzinfo | None, unaligned_ok: bool) -> None:
        self.path, self.given, self.unaligned_ok = path, given, unaligned_ok
        self.day: date | None = None
        self.zone: tzinfo = UTC
        self.last = 0
        self.fold = 0
        """1 after clocks went back: an hour that happens twice means its second time."""
        self.guessed: str | None = None
        """A header zone that had to be taken as UTC (inspect only)."""

    def header(self, line: Line, match: re.Match[str]) -> None:
        year, month, day, hour, minute, second, abbreviation = match.groups()
        try:
            self.day = date(int(year), int(month), int(day))
        except ValueError:
            raise ChatLogError(
                self.path, f"line {line.number}", f"{year}-{month}-{day} is not a date"
            ) from None
        self.last = int(hour) * 3600 + int(minute) * 60 + int(second)
        self.fold = 0
        zone = self.given or resolve_zone(abbreviation)
        if zone is None and self.unaligned_ok:
            self.guessed, zone = abbreviation or "none", UTC
            logger.warning(
                "%s line %d: time zone %r unknown; times taken as UTC", self.path, line.number,
                self.guessed,
            )  # fmt: skip
        if zone is None:
            problem = (
                f"the header's time zone {abbreviation!r} is ambiguous or unknown"
                if abbreviation
                else "the header has no time zone"
            )
            raise ChatLogError(
                self.path,
                f"line {line.number}",
                f"{problem}; give the zone the log was written in "
                "(timezone, e.g. 'America/Chicago' or '-06:00'; --timezone on the command line)",
            )
        self.zone = zone

    def unix(self, line: Line, hour: int, minute: int, second: int) -> float:
        if self.day is None:
            raise ChatLogError(
                self.path,
                f"line {line.number}",
                "a message before any '# Start logging at' header, so its date is unknown "
                "(Chatterino writes the header when it opens the log: was the top cut off?)",
            )
        if hour > 23 or minute > 59 or second > 59:
            raise ChatLogError(self.path, f"line {line.number}", "not a time of day")
        now = hour * 3600 + minute * 60 + second
        if now < self.last - _MIDNIGHT_STEP:
            self.day += timedelta(days=1)
            self.fold = 0
        elif now < self.last:  # clocks went back (DST ends): repeated times are the second ones
            self.fold = 1
        self.last = now
        local = datetime.combine(
            self.day, time(hour, minute, second, fold=self.fold), tzinfo=self.zone
        )
        return local.timestamp()


class ChatterinoReader:
    """Chatterino ``.log`` files: headers with the date, local ``[HH:mm:ss]`` lines."""

    name = "chatterino"

    def sniff(self, path: Path, head: bytes) -> bool:
        lines = head_lines(head)
        if not lines:
            return False
        if _HEADER.fullmatch(lines[0]):
            return True
        # No header (cut off): Chatterino's two spaces tell it from TwitchDownloader's one.
        return _TWO_SPACES.match(lines[0]) is not None and mostly(lines, _LINE.fullmatch)

    def read(self, path: Path, **opts: Any) -> list[ChatMessage]:
        return self.read_log(
            path, stream_start=opts.get("stream_start"), timezone=opts.get("timezone")
        ).messages

    def read_log(
        self,
        path: Path,
        *,
        stream_start: float | None = None,
        timezone: str | None = None,
        unaligned_ok: bool = False,
        **opts: Any,
    ) -> ChatLog:
        head = read_head(path)
        given = None
        if timezone is not None:
            given = resolve_zone(timezone)
            if given is None:
                raise ChatLogError(
                    path,
                    None,
                    f"unknown time zone {timezone!r}; give an IANA name like "
                    "'Europe/Berlin' or an offset like '+02:00'",
                )
        start = wall_clock_start(path, stream_start, unaligned_ok, "local time")
        clock = _Clock(path, given, unaligned_ok)
        skipped: Counter[str] = Counter()
        messages: list[ChatMessage] = []
        before = 0
        for line in iter_lines(path, head):
            text = line.text
            if text.startswith("# "):
                header = _HEADER.fullmatch(text)
                if header:
                    clock.header(line, header)
                elif not text.startswith("# Stop logging at"):
                    skipped["comment lines"] += 1
                continue
            match = _LINE.fullmatch(text)
            if match is None:
                if not text.strip():
                    continue
                raise unexpected(path, line, "'[HH:mm:ss]  login: text' (a Chatterino log)")
            hour, minute, second, body = match.groups()
            offset = clock.unix(line, int(hour), int(minute), int(second)) - start
            chat = _CHAT.fullmatch(body)
            if chat is None:
                skipped["system lines"] += 1
                continue
            local, login, said = chat.groups()
            if not said or not said.strip():
                skipped["empty messages"] += 1
            elif offset < 0:
                before += 1
            else:
                messages.append(
                    ChatMessage(offset=offset, user=login.lower(), text=said.strip(),
                                display_name=local or login)
                )  # fmt: skip
        check_start(path, stream_start, len(messages), before)
        if before:
            skipped["messages before the stream start"] += before
        finish(path, self.name, messages, skipped)
        variant = "local time"
        if clock.guessed:
            variant += f" (zone {clock.guessed!r} unknown: taken as UTC)"
        return ChatLog(messages, "wall-clock", stream_start, variant=variant)
