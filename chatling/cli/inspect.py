"""The text ``chatling data inspect FILE`` prints: what a chat log holds, or why it can't be read.

``inspect_lines`` is pure output formatting over ``inspect_chat_log``; a file
that cannot be read gives a last line starting with ``error:``. ``chatling data
inspect`` (chatling/cli/data.py) prints ``info_lines`` and lets the error reach
its one-line stderr report. Run this module directly to try it:

    python -m chatling.cli.inspect chat.json [--format NAME] [--stream-start UNIX_S]
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from chatling.chatlog import ChatLogInfo, inspect_chat_log
from chatling.core.errors import ChatLogError


def hms(seconds: float) -> str:
    """``h:mm:ss`` (hours keep counting past 24; negative values get a minus sign)."""
    sign = "-" if seconds < 0 else ""
    whole = round(abs(seconds))
    return f"{sign}{whole // 3600}:{whole // 60 % 60:02}:{whole % 60:02}"


def _utc(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError):  # past year 9999: a damaged time
        return f"UNIX time {seconds:.0f} (not a date)"


def _time_lines(info: ChatLogInfo) -> list[str]:
    if info.clock == "none":
        return [
            "times: none (no timestamps): cannot be aligned with the VOD; "
            "export it again with `--timestamp-format Relative`"
        ]
    if info.first_offset is not None and info.last_offset is not None:
        kind = "VOD-relative"
        if info.clock != "vod":
            kind += " (wall-clock times minus the stream start)"
        lines = [
            f"times: {kind}",
            f"time span: {hms(info.span)} ({hms(info.first_offset)} to {hms(info.last_offset)})",
        ]
        if info.stream_start is not None:
            lines.append(f"stream start: {_utc(info.stream_start)}")
        return lines
    if info.first_time is not None and info.last_time is not None:
        return [
            "times: wall-clock: give the stream's start (--stream-start UNIX_SECONDS) to align",
            f"time span: {hms(info.span)} ({_utc(info.first_time)} to {_utc(info.last_time)})",
        ]
    kind = "VOD-relative" if info.vod_relative else "wall-clock"
    return [f"times: {kind}", "time span: 0:00:00 (no messages)"]


def info_lines(info: ChatLogInfo) -> list[str]:
    """The summary lines for one successfully inspected chat log."""
    fmt = info.format + (f" ({info.variant})" if info.variant else "")
    lines = [
        f"file: {info.path}",
        f"format: {fmt}",
        f"messages: {info.count}",
        f"users: {info.users}",
        *_time_lines(info),
    ]
    if info.moderation:
        lines.append(f"moderation actions: {info.moderation} (timeouts, bans, deletions)")
    return lines


def inspect_lines(
    path: str | Path,
    format: str = "auto",
    stream_start: float | None = None,
    *,
    timezone: str | None = None,
) -> list[str]:
    """Human-readable lines about the chat log at ``path``; a bad file gives an ``error:`` line."""
    try:
        info = inspect_chat_log(path, format, stream_start, timezone=timezone)
    except ChatLogError as error:
        return [f"file: {path}", f"error: {error}"]
    return info_lines(info)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Summarise a chat log file.")
    parser.add_argument("file")
    parser.add_argument("--format", default="auto")
    parser.add_argument("--stream-start", type=float, default=None)
    parser.add_argument("--timezone", default=None)
    args = parser.parse_args(argv)
    lines = inspect_lines(args.file, args.format, args.stream_start, timezone=args.timezone)
    if lines[-1].startswith("error:"):
        print(lines[-1], file=sys.stderr)  # errors go to stderr, never stdout
        return 1
    print("\n".join(lines))  # the command's product output
    return 0


if __name__ == "__main__":
    sys.exit(main())
