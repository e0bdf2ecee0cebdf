"""The chat-log reader interface, the registry that picks a reader, and shared helpers.

Every format (TwitchDownloader JSON and text, Twitch v5 comments,
chat-downloader, justlog/rustlog, Chatterino) is one ``ChatLogReader``: a
``name``, a cheap ``sniff`` that looks only at the first bytes of the file,
and a ``read`` that returns ``ChatMessage`` values. A ``Registry`` holds the
readers in priority order and answers "which format is this file?". The
helpers here do the file handling every reader needs (missing, empty, binary,
gzip, broken JSON) so that each problem becomes a ``ChatLogError`` naming the
file and the place in it.
What readers return beyond messages (``ChatLog``, wall-clock rules) is in
``chatling.chatlog.result``.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any, Literal, Protocol

from chatling.core.errors import ChatLogError
from chatling.core.events import ChatMessage

logger = logging.getLogger(__name__)

HEAD_BYTES = 64 * 1024
"""How much of a file (after gunzip) ``sniff`` gets to look at."""

_GZIP_MAGIC = b"\x1f\x8b"
_DECODER = json.JSONDecoder()
_JSON_WS = " \t\n\r"
# Control characters that never appear in a text chat log.
_BINARY_CHARS = frozenset(chr(c) for c in range(32)) - {"\t", "\n", "\r", "\f"}


class ChatLogReader(Protocol):
    """One chat-log format."""

    name: str
    """Short format name users pass as ``--format`` (e.g. ``twitch-v5``)."""

    def sniff(self, path: Path, head: bytes) -> bool:
        """Whether ``head`` (the first bytes of the file, gunzipped) looks like this format."""
        ...

    def read(self, path: Path, **opts: Any) -> list[ChatMessage]:
        """Every chat message of the file; raises ``ChatLogError`` on a bad file.

        A reader may also have ``read_log(path, *, stream_start, timezone,
        unaligned_ok)`` returning a ``chatling.chatlog.result.ChatLog`` (clock and
        moderation too); ``chatling.chatlog.result.read_log`` uses it when present.
        """
        ...


@dataclass(frozen=True)
class Registry:
    """Readers in the order they are tried; the first whose ``sniff`` says yes wins."""

    readers: tuple[ChatLogReader, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.readers)

    def get(self, path: Path, name: str) -> ChatLogReader:
        for reader in self.readers:
            if reader.name == name:
                return reader
        raise ChatLogError(
            path,
            None,
            f"unknown format {name!r}; use 'auto' or one of: {', '.join(self.names)}",
        )

    def detect(self, path: Path, head: bytes) -> ChatLogReader:
        for reader in self.readers:
            if reader.sniff(path, head):
                return reader
        raise ChatLogError(
            path,
            None,
            f"not a chat log format chatling knows ({describe_head(head)}); "
            f"supported formats: {', '.join(self.names)} "
            "(see docs/chat-log-formats.md), or pass the format explicitly",
        )


# --------------------------------------------------------------------------- files


def _open_error(path: Path, exc: OSError) -> ChatLogError:
    if isinstance(exc, FileNotFoundError):
        return ChatLogError(path, None, "file not found; check the path")
    if isinstance(exc, IsADirectoryError):
        return ChatLogError(path, None, "is a directory; give the chat log file itself")
    if isinstance(exc, PermissionError):
        return ChatLogError(path, None, "permission denied; check the file's permissions")
    return ChatLogError(path, None, f"cannot be read: {exc.strerror or exc}")


def _gunzip_error(path: Path, exc: Exception) -> ChatLogError:
    return ChatLogError(path, None, f"broken gzip file ({exc}); download or compress it again")


def read_head(path: Path, size: int = HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of the file, gunzipped when it is gzip.

    Raises ``ChatLogError`` when the file is missing, empty (or only
    whitespace) or binary, so readers never see such files.
    """
    try:
        with path.open("rb") as f:
            head = f.read(size)
            if head[:2] == _GZIP_MAGIC:
                f.seek(0)
                with gzip.GzipFile(fileobj=f) as gz:
                    head = gz.read(size)
    except OSError as exc:
        if isinstance(exc, gzip.BadGzipFile):
            raise _gunzip_error(path, exc) from None
        raise _open_error(path, exc) from None
    except (EOFError, zlib.error) as exc:
        raise _gunzip_error(path, exc) from None
    if not head.strip():
        raise ChatLogError(path, None, "file is empty; export the chat log again")
    problem = text_problem(head)
    if problem:
        raise ChatLogError(path, None, problem)
    return head


def read_bytes(path: Path) -> bytes:
    """The whole file, gunzipped when it is gzip."""
    try:
        data = path.read_bytes()
        if data[:2] == _GZIP_MAGIC:
            data = gzip.decompress(data)
    except OSError as exc:
        if isinstance(exc, gzip.BadGzipFile):
            raise _gunzip_error(path, exc) from None
        raise _open_error(path, exc) from None
    except (EOFError, zlib.error) as exc:
        raise _gunzip_error(path, exc) from None
    if not data.strip():
        raise ChatLogError(path, None, "file is empty; export the chat log again")
    return data


def decode_head(head: bytes) -> str | None:
    """The head as text (BOM removed), or None when it is not text in a JSON encoding.

    A multi-byte character cut off by the end of the head is dropped.
    """
    encoding = json.detect_encoding(head)
    try:
        text = head.decode(encoding)
    except UnicodeDecodeError as exc:
        if exc.end < len(head) - 3:  # not just a character cut off at the end
            return None
        text = head[: exc.start].decode(encoding, errors="replace")
    return text.removeprefix("\ufeff")


def text_problem(head: bytes) -> str | None:
    """Why ``head`` is not a text file, or None when it is.

    Binary: a NUL, or more than 1% control characters or undecodable bytes (a
    few control characters are allowed: raw IRC logs carry ``\\x01ACTION``).
    Text in a legacy encoding (a few bad bytes) gets its own message.
    """
    encoding = json.detect_encoding(head)
    text = decode_head(head)
    bad_at = None
    if text is None:
        text = head.decode(encoding, errors="replace")
        bad_at = text.find("\ufffd")
    controls = sum(text.count(c) for c in _BINARY_CHARS) + text.count("\ufffd")
    if "\x00" in text or controls * 100 > len(text):
        return "binary data, not a text chat log (wrong file, or a damaged download?)"
    if bad_at is not None:
        line = text.count("\n", 0, bad_at) + 1
        return (
            f"not valid {encoding} text (line {line}, near character {bad_at}); "
            "re-save the file as UTF-8"
        )
    return None


def load_json(path: Path) -> Any:
    """The whole file parsed as one JSON document (UTF-8/16/32, optional BOM, optional gzip)."""
    data = read_bytes(path)
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise json_error(path, exc) from None
    except UnicodeDecodeError as exc:
        raise ChatLogError(
            path, f"byte {exc.start}", "not valid UTF-8 text; re-save the file as UTF-8"
        ) from None
    except RecursionError:
        raise ChatLogError(path, None, "JSON nested too deeply to be a chat log") from None
    except ValueError:  # Python refuses numbers of more than 4300 digits
        raise ChatLogError(path, None, _HUGE_NUMBER) from None


_HUGE_NUMBER = "a number with more than 4300 digits: the file is damaged or not a chat log"


def json_error(path: Path, exc: json.JSONDecodeError, line: int = 0) -> ChatLogError:
    """A ``ChatLogError`` for a JSON syntax error, naming line and column.

    ``line`` is added to the decoder's line number (for one JSON value per line).
    """
    where = f"line {exc.lineno + line}, column {exc.colno}"
    rest = exc.doc[exc.pos :]
    cut_in_string = exc.msg.startswith("Unterminated string") and "\n" not in rest
    if cut_in_string or (exc.pos > 0 and not rest.strip()):
        problem = (
            f"the JSON stops in the middle ({exc.msg}): the file is truncated; "
            "download or export it again"
        )
    else:
        problem = f"invalid JSON ({exc.msg}); the file is damaged or not a JSON chat log"
    return ChatLogError(path, where, problem)


def iter_json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line_number, value)`` for each non-blank line of a JSON-lines file."""
    data = read_bytes(path)
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            yield number, json.loads(raw)
        except json.JSONDecodeError as exc:
            raise json_error(path, exc, line=number - 1) from None
        except UnicodeDecodeError:
            raise ChatLogError(
                path,
                f"line {number}",
                "not valid UTF-8 text; re-save the file as UTF-8",
            ) from None
        except RecursionError:
            raise ChatLogError(path, f"line {number}", "JSON nested too deeply") from None
        except ValueError:  # Python refuses numbers of more than 4300 digits
            raise ChatLogError(path, f"line {number}", _HUGE_NUMBER) from None


# --------------------------------------------------------------------------- sniffing


@dataclass(frozen=True)
class JsonHead:
    """What the first bytes of a JSON file show, without parsing the whole file."""

    kind: Literal["object", "array", "lines"]
    """One object, one array, or several values one after another (JSON lines)."""
    keys: tuple[str, ...]
    """Top-level keys seen (object), or keys of the first item (array, lines)."""
    first: Any = None
    """The first item of an array or the first line's value, when it fits in the head."""


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _JSON_WS:
        pos += 1
    return pos


def _object_keys(text: str, pos: int) -> tuple[str, ...]:
    """Keys of the object starting at ``text[pos]`` up to where the head is cut off."""
    keys: list[str] = []
    pos = _skip_ws(text, pos + 1)
    try:
        while pos < len(text) and text[pos] == '"':
            key, pos = json.decoder.scanstring(text, pos + 1)
            pos = _skip_ws(text, pos)
            if text[pos : pos + 1] != ":":
                break
            keys.append(key)
            _, pos = _DECODER.raw_decode(text, _skip_ws(text, pos + 1))
            pos = _skip_ws(text, pos)
            if text[pos : pos + 1] != ",":
                break
            pos = _skip_ws(text, pos + 1)
    except (ValueError, RecursionError):  # JSONDecodeError, or a number of 4300+ digits
        pass  # the head ends inside this value
    return tuple(keys)


def peek_json(head: bytes) -> JsonHead | None:
    """The shape of a JSON or JSON-lines file from its head; None when it is not JSON."""
    text = decode_head(head)
    if text is None:
        return None
    pos = _skip_ws(text, 0)
    opener = text[pos : pos + 1]
    if opener == "[":
        first = None
        item_pos = _skip_ws(text, pos + 1)
        if text[item_pos : item_pos + 1] not in ("]", ""):
            try:
                first, _ = _DECODER.raw_decode(text, item_pos)
            except (ValueError, RecursionError):
                first = None
        keys = tuple(first) if isinstance(first, dict) else ()
        return JsonHead("array", keys, first)
    if opener != "{":
        return None
    try:
        value, end = _DECODER.raw_decode(text, pos)
    except (ValueError, RecursionError):
        return JsonHead("object", _object_keys(text, pos))
    if text[_skip_ws(text, end) :][:1] == "{":
        return JsonHead("lines", tuple(value), value)
    return JsonHead("object", tuple(value))


def describe_head(head: bytes) -> str:
    """A short description of what the file looks like, for 'unknown format' errors."""
    shape = peek_json(head)
    if shape is None:
        text = decode_head(head) or ""
        first_line = text.lstrip().split("\n", 1)[0][:60]
        return f"first line {first_line!r}"
    if shape.kind == "array" and shape.first is None:
        return "a JSON array with no readable first item"
    what = {"object": "a JSON object", "array": "a JSON array", "lines": "JSON lines"}[shape.kind]
    keys = ", ".join(shape.keys[:8]) or "none"
    return (
        f"{what} with keys {keys}"
        if shape.kind == "object"
        else f"{what} of items with keys {keys}"
    )


# --------------------------------------------------------------------------- records


def type_name(value: Any) -> str:
    """JSON's name for the type of ``value``, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def seconds(path: Path, where: str | None, field: str, value: Any) -> float:
    """``value`` as a finite number of seconds, or a ``ChatLogError`` saying what it was."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)  # an integer past 1e308 overflows
        except OverflowError:
            number = math.inf
        if math.isfinite(number):
            return number
    if value is None:
        raise ChatLogError(path, where, f"no {field}: every message needs its time")
    raise ChatLogError(
        path, where, f"{field} is {type_name(value)} ({value!r:.40}), expected seconds"
    )


def finish(
    path: Path, fmt: str, messages: list[ChatMessage], skipped: Counter[str]
) -> list[ChatMessage]:
    """Messages sorted by offset (stable), after logging how many were kept and skipped."""
    messages.sort(key=attrgetter("offset"))
    if skipped:
        reasons = ", ".join(f"{n} {why}" for why, n in skipped.most_common())
        logger.info(
            "%s (%s): %d messages, skipped %d records (%s)",
            path,
            fmt,
            len(messages),
            skipped.total(),
            reasons,
        )
    else:
        logger.info("%s (%s): %d messages", path, fmt, len(messages))
    if not messages:
        logger.warning("%s: no chat messages in this file", path)
    return messages
