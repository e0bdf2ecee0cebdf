"""``chatling safety check [FILE|-]``: the safety filter on lines you give it.

A streamer tests their block list and allow-list with it; a held-out corpus
is rerun through it. Input is plain text (one candidate a line) or JSONL
(each line an object with ``text`` and optional ``target``, the viewer being
answered, and ``recent``, a list of recent chat lines, strings or objects
with ``text``). A file whose first non-blank line starts with ``{`` is JSONL.
Output is one JSON object a line: ``{"line": N, "allowed": ..., "reason": ...,
"text": ...}``; the first line of stderr says which settings are in force.
Bad input stops with one error naming the file and line.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from chatling.core.errors import InputFileError
from chatling.core.events import ChatMessage
from chatling.core.settings import Settings
from chatling.safety import SafetyFilter

logger = logging.getLogger(__name__)


def _read_lines(source: str) -> tuple[str, list[str]]:
    """(name for errors, lines) of a file or of stdin (``-``)."""
    if source == "-":
        return "<stdin>", sys.stdin.read().splitlines()
    path = Path(source)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputFileError(path, None, f"cannot read it ({exc.strerror})") from None
    try:
        return str(path), raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise InputFileError(path, f"byte {exc.start}", "not UTF-8 text") from None


def _recent(value: Any, name: str, number: int) -> list[ChatMessage]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputFileError(name, f"line {number}", '"recent" must be a list of chat lines')
    messages = []
    for i, item in enumerate(value):
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise InputFileError(
                name, f"line {number}", '"recent" items must be strings or objects with "text"'
            )
        messages.append(ChatMessage(offset=0.0, user=f"viewer{i}", text=text))
    return messages


def parse_candidates(
    name: str, lines: list[str]
) -> Iterator[tuple[int, str, str | None, list[ChatMessage]]]:
    """(line number, text, target, recent chat) for each candidate of the input."""
    first = next((line for line in lines if line.strip()), "")
    jsonl = first.lstrip("\ufeff").lstrip().startswith("{")
    for number, line in enumerate(lines, start=1):
        if not jsonl:
            yield number, line, None, []
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputFileError(
                name, f"line {number}, column {exc.colno}", f"not JSON ({exc.msg})"
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InputFileError(name, f"line {number}", 'each JSONL line needs a "text" string')
        target = record.get("target")
        if target is not None and not isinstance(target, str):
            raise InputFileError(name, f"line {number}", '"target" must be a string')
        yield number, record["text"], target, _recent(record.get("recent"), name, number)


def settings_in_force(settings: Settings, flt: SafetyFilter) -> dict[str, Any]:
    """What the verdicts depend on, for the first line of the output."""
    reply = settings.reply
    return {
        "bot_name": reply.bot_name,
        "blocked_terms_file": reply.blocked_terms_file,
        "extra_blocked_terms": len(reply.extra_blocked_terms),
        "terms": len(flt._matcher.terms),
        "allowed_links": reply.allowed_links,
        "max_chars": reply.max_chars,
        "offensive_threshold": reply.offensive_threshold,
        "persona_file": reply.persona_file,
        "template_file": reply.template_file,
    }


def run_check(settings: Settings, source: str, out: IO[str]) -> int:
    """Check every candidate of ``source``; returns how many were blocked."""
    from chatling.app import build_safety

    name, lines = _read_lines(source)
    flt = build_safety(settings)
    print("safety check settings: " + json.dumps(settings_in_force(settings, flt)), file=sys.stderr)
    blocked = 0
    for number, text, target, recent in parse_candidates(name, lines):
        verdict = flt.check(text, now=0.0, reply_to_user=target, recent_chat=recent)
        blocked += not verdict.allowed
        row = {"line": number, "allowed": verdict.allowed, "reason": verdict.reason}
        out.write(json.dumps({**row, "text": verdict.text}, ensure_ascii=False) + "\n")
    return blocked
