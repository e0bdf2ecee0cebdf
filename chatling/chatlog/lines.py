"""Line-by-line chat logs: the head's first lines for sniffing, and bounded line reading.

The text formats (TwitchDownloader text, justlog/rustlog raw IRC and plain
text, Chatterino) are one record a line. ``head_lines`` gives ``sniff`` the
complete lines of the file's head; ``iter_lines`` reads the whole file a line
at a time, never holding more than ``MAX_LINE_CHARS`` of one line, so a
50 MB file without a newline is refused at line 1 instead of loaded. Both
handle gzip, a UTF-8 BOM and UTF-16 text, and turn every read problem into a
``ChatLogError`` naming the line.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from chatling.chatlog.base import _GZIP_MAGIC, HEAD_BYTES, _gunzip_error, _open_error, decode_head
from chatling.core.errors import ChatLogError

MAX_LINE_CHARS = 64 * 1024
"""Longest line a text chat log may have (a Twitch message is at most 500 characters)."""

SNIFF_LINES = 50
"""How many of the head's lines ``sniff`` looks at."""

SNIFF_SHARE = 0.8
"""Share of those lines that must look right (one damaged line still gets a line error)."""


def head_lines(head: bytes, limit: int = SNIFF_LINES) -> list[str]:
    """The first ``limit`` complete, non-blank lines of the head.

    A head as long as ``HEAD_BYTES`` was cut off, so its last line (maybe
    partial) is left out: a single huge line gives no lines at all.
    """
    text = decode_head(head)
    if text is None:
        return []
    lines = text.split("\n")
    if len(head) >= HEAD_BYTES:  # the file goes on: its last line here may be partial
        lines.pop()
    out: list[str] = []
    for line in lines:
        line = line.rstrip("\r")
        if line.strip():
            out.append(line)
            if len(out) >= limit:
                break
    return out


def mostly(lines: list[str], looks_right: Callable[[str], object]) -> bool:
    """Whether the first line and at least ``SNIFF_SHARE`` of ``lines`` look right."""
    if not lines or not looks_right(lines[0]):
        return False
    return sum(1 for line in lines if looks_right(line)) >= SNIFF_SHARE * len(lines)


class Line(NamedTuple):
    """One line of a text chat log."""

    number: int
    """1-based line number."""
    text: str
    """The line without its line ending."""
    ended: bool
    """Whether a line ending followed (False for a last line cut off by truncation)."""


def _too_long(path: Path, number: int) -> ChatLogError:
    return ChatLogError(
        path,
        f"line {number}",
        f"line is longer than {MAX_LINE_CHARS // 1024} KiB: not a text chat log "
        "(binary data, a JSON file, or a damaged download?)",
    )


def _binary_lines(path: Path, stream: BinaryIO, bom: bytes) -> Iterator[Line]:
    """UTF-8 lines, each decoded on its own so errors name the exact line."""
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_CHARS + 1)
        if not raw:
            return
        number += 1
        if number == 1 and bom and raw.startswith(bom):
            raw = raw[len(bom) :]
        ended = raw.endswith(b"\n")
        if not ended and len(raw) > MAX_LINE_CHARS:
            raise _too_long(path, number)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ChatLogError(
                path,
                f"line {number}",
                f"not valid UTF-8 text (byte {exc.start} of the line); re-save the file as UTF-8",
            ) from None
        yield Line(number, text.rstrip("\r\n"), ended)


def _text_lines(path: Path, stream: BinaryIO, encoding: str) -> Iterator[Line]:
    """Lines of UTF-16/32 text (rare: e.g. a log redirected by Windows PowerShell)."""
    text = io.TextIOWrapper(stream, encoding=encoding, newline=None)
    number = 0
    try:
        while True:
            line = text.readline(MAX_LINE_CHARS + 1)
            if not line:
                return
            number += 1
            if number == 1:
                line = line.removeprefix("\ufeff")
            ended = line.endswith("\n")
            if not ended and len(line) > MAX_LINE_CHARS:
                raise _too_long(path, number)
            yield Line(number, line.rstrip("\n"), ended)
    except UnicodeDecodeError:
        raise ChatLogError(
            path, f"line {number + 1}", f"not valid {encoding} text; re-save the file as UTF-8"
        ) from None
    finally:
        text.detach()


def iter_lines(path: Path, head: bytes) -> Iterator[Line]:
    """Every line of the text file (gunzipped when gzip), in the encoding its ``head`` shows."""
    encoding = json.detect_encoding(head)
    try:
        with path.open("rb") as raw:
            gz = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            stream: BinaryIO = gzip.GzipFile(fileobj=raw) if gz else raw  # type: ignore[assignment]
            if encoding in ("utf-8", "utf-8-sig"):
                yield from _binary_lines(path, stream, b"\xef\xbb\xbf")
            else:
                yield from _text_lines(path, stream, encoding)
    except OSError as exc:
        if isinstance(exc, gzip.BadGzipFile):
            raise _gunzip_error(path, exc) from None
        raise _open_error(path, exc) from None
    except (EOFError, zlib.error) as exc:
        raise _gunzip_error(path, exc) from None


def unexpected(path: Path, line: Line, expected: str) -> ChatLogError:
    """A ``ChatLogError`` for a line that is not what the format writes."""
    problem = f"expected {expected}, found {line.text[:60]!r}"
    if not line.ended:
        problem += " (the last line is cut off: the file is truncated; download or export it again)"
    return ChatLogError(path, f"line {line.number}", problem)
