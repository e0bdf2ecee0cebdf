"""The bot's SQLite log read back: one read-only way in, and the queries learning runs on it.

``Store`` (``store.py``) writes the log while the bot runs; everything that reads
it back for learning (``chatling data from-db``, the nightly export, the
preference step's moderator marks) goes through here, so one place opens the
file read-only (a running bot is never disturbed), checks its schema version,
and knows what the rows mean: a stream's speech and chat with the bot's own
posts (and their echoes in chat) flagged, marked-bad and deleted messages left
out; a moderator's mark and the posted reply it can name. Results are plain
values (``chatling.core.events`` types and the dataclasses below), so callers
never depend on column order or on a connection's ``row_factory``.

The ``training_runs`` table has its own module, ``runlog.py``: the nightly job
writes it as well as reading it.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from chatling.core.errors import StoreError
from chatling.core.events import ChatMessage, Utterance
from chatling.store.migrations import load_migrations

ECHO_WINDOW_S = 60.0
"""A chat message with a posted reply's text this close to it is the post coming back."""


@dataclass(frozen=True, slots=True)
class LoggedStream:
    """One ``streams`` row."""

    id: int
    name: str
    source: str
    started_at: float
    ended_at: float | None
    """None while the stream runs (or until a later start closes a crashed one)."""


@dataclass(frozen=True, slots=True)
class StreamLines:
    """What a stream's chatters read and heard, as a training export needs it."""

    chat: list[ChatMessage]
    """Chat in offset order; the bot's posts and their echoes flagged ``is_bot``."""
    speech: list[Utterance]
    """Transcribed speech in start order."""


@dataclass(frozen=True, slots=True)
class FeedbackMark:
    """One ``feedback`` row: a moderator's mark on a message."""

    id: int
    target_message_id: str
    target_text: str | None
    mark: str
    source: str
    created_at: float


@dataclass(frozen=True, slots=True)
class PostedReply:
    """A ``bot_replies`` row with status ``posted`` and a chosen text."""

    id: int
    stream_id: int
    created_at: float
    prompt: str
    chosen: str
    candidates_json: str
    """``bot_replies.candidates`` as logged (JSON), decoded by whoever needs it."""


@dataclass(frozen=True, slots=True)
class LoggedMessage:
    """The part of a ``chat_messages`` row a mark on it needs."""

    stream_id: int
    text: str
    is_bot: bool


def connect_read_only(path: Path) -> sqlite3.Connection:
    """The log at ``path``, read-only, once it is known to be a chatling log this version reads."""
    if not path.is_file():
        raise StoreError(f"{path}: no such database file; check --db")
    try:
        db = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as exc:
        raise StoreError(
            f"{path}: cannot read the database ({exc}); is it a chatling log?"
        ) from None
    latest = len(load_migrations())
    if version == 0:
        db.close()
        raise StoreError(f"{path}: not a chatling log (no schema version); check --db")
    if version > latest:
        db.close()
        raise StoreError(
            f"{path}: schema version {version} is newer than this chatling knows ({latest}); "
            "upgrade chatling"
        )
    return db


def has_feedback(db: sqlite3.Connection) -> bool:
    """Whether the log has moderators' marks and deletions (schema version 2 on)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0]) >= 2


# --------------------------------------------------------------------------- streams


def streams(db: sqlite3.Connection, started_from: float | None = None) -> list[LoggedStream]:
    """Every stream (those started at ``started_from`` or later), oldest first."""
    rows = db.execute(
        "SELECT id, name, source, started_at, ended_at FROM streams"
        " WHERE started_at >= ? ORDER BY started_at, id",
        (started_from if started_from is not None else -math.inf,),
    )
    return [
        LoggedStream(
            id=int(r[0]),
            name=str(r[1]),
            source=str(r[2]),
            started_at=float(r[3]),
            ended_at=float(r[4]) if r[4] is not None else None,
        )
        for r in rows
    ]


def _key(text: str) -> str:
    return " ".join(text.casefold().split())


def stream_lines(db: sqlite3.Connection, stream_id: int, bots: frozenset[str]) -> StreamLines:
    """A stream's chat and speech; messages that copy a posted reply are marked bot.

    Messages moderators deleted or marked bad are left out; a message marked good
    (and not bad) is never marked bot: the bot's approved posts become targets
    (``chatling.training.data.filters.make_log_pairs`` keeps them from the name rule).
    """
    speech = [
        Utterance(float(r[0]), float(r[1]), str(r[2]))
        for r in db.execute(
            "SELECT start_s, end_s, text FROM utterances WHERE stream_id = ? ORDER BY start_s, id",
            (stream_id,),
        )
    ]
    posted: dict[str, list[float]] = {}
    for r in db.execute(
        "SELECT offset_s, chosen FROM bot_replies WHERE stream_id = ? AND status = 'posted'"
        " AND chosen IS NOT NULL",
        (stream_id,),
    ):
        posted.setdefault(_key(str(r[1])), []).append(float(r[0]))
    if has_feedback(db):
        sql = (
            "SELECT m.offset_s, m.user, m.display_name, m.text, m.message_id, m.emotes,"
            " m.is_bot, m.source, EXISTS (SELECT 1 FROM feedback AS f"
            " WHERE f.target_message_id = m.message_id AND f.mark = 'good') AS approved"
            " FROM chat_messages AS m WHERE m.stream_id = ? AND m.deleted_at IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM feedback AS f"
            " WHERE f.target_message_id = m.message_id AND f.mark = 'bad')"
            " ORDER BY m.offset_s, m.id"
        )
    else:
        sql = (
            "SELECT offset_s, user, display_name, text, message_id, emotes, is_bot, source,"
            " 0 AS approved FROM chat_messages WHERE stream_id = ? ORDER BY offset_s, id"
        )
    chat = []
    for row in db.execute(sql, (stream_id,)):
        offset_s, user, display_name, text, message_id, emotes_json, is_bot, source, approved = row
        offset, text = float(offset_s), str(text)
        # The bot's own posts come back through chat; never learn them, even unflagged,
        # unless a moderator marked the post good.
        echo = any(abs(offset - t) <= ECHO_WINDOW_S for t in posted.get(_key(text), ()))
        flagged = bool(is_bot) or echo or str(user).casefold() in bots
        try:
            emotes = tuple(json.loads(emotes_json or "[]"))
        except json.JSONDecodeError:
            emotes = ()
        chat.append(
            ChatMessage(
                offset=offset,
                user=str(user),
                text=text,
                display_name=display_name,
                message_id=message_id,
                emotes=emotes,
                is_bot=flagged and not approved,
                source=str(source),
            )
        )
    return StreamLines(chat, speech)


# --------------------------------------------------------------------------- marks

_REPLY_COLUMNS = "id, stream_id, created_at, prompt, chosen, candidates"


def _reply(row: sqlite3.Row | tuple) -> PostedReply:
    return PostedReply(
        id=int(row[0]),
        stream_id=int(row[1]),
        created_at=float(row[2]),
        prompt=str(row[3]),
        chosen=str(row[4]),
        candidates_json=str(row[5] or "[]"),
    )


def feedback_marks(db: sqlite3.Connection) -> list[FeedbackMark]:
    """Every moderator's mark, oldest first (callers check ``has_feedback`` first)."""
    rows = db.execute(
        "SELECT id, target_message_id, target_text, mark, source, created_at FROM feedback"
        " ORDER BY created_at, id"
    )
    return [
        FeedbackMark(
            id=int(r[0]),
            target_message_id=str(r[1]),
            target_text=r[2],
            mark=str(r[3]),
            source=str(r[4]),
            created_at=float(r[5]),
        )
        for r in rows
    ]


def posted_reply_to(db: sqlite3.Connection, in_reply_to: str, before: float) -> PostedReply | None:
    """The latest reply posted up to ``before`` that answered ``in_reply_to`` (Discord:
    ``discord:<interaction id>``)."""
    row = db.execute(
        f"SELECT {_REPLY_COLUMNS} FROM bot_replies WHERE in_reply_to = ? AND status = 'posted'"
        " AND chosen IS NOT NULL AND created_at <= ? ORDER BY created_at DESC, id DESC LIMIT 1",
        (in_reply_to, before),
    ).fetchone()
    return _reply(row) if row is not None else None


def chat_message(db: sqlite3.Connection, message_id: str) -> LoggedMessage | None:
    """The logged chat message with the platform id ``message_id``, if any."""
    row = db.execute(
        "SELECT stream_id, text, is_bot FROM chat_messages WHERE message_id = ?", (message_id,)
    ).fetchone()
    if row is None:
        return None
    return LoggedMessage(stream_id=int(row[0]), text=str(row[1]), is_bot=bool(row[2]))


def posted_replies_before(
    db: sqlite3.Connection, before: float, stream_id: int | None = None
) -> Iterator[PostedReply]:
    """Replies posted up to ``before`` (in ``stream_id`` when given), newest first; read
    lazily, so a caller that stops early reads no further."""
    where = ["status = 'posted'", "chosen IS NOT NULL", "created_at <= ?"]
    params: list[float | int] = [before]
    if stream_id is not None:
        where.append("stream_id = ?")
        params.append(stream_id)
    rows = db.execute(
        f"SELECT {_REPLY_COLUMNS} FROM bot_replies WHERE {' AND '.join(where)}"
        " ORDER BY created_at DESC, id DESC",
        params,
    )
    for row in rows:
        yield _reply(row)


__all__ = [
    "ECHO_WINDOW_S",
    "FeedbackMark",
    "LoggedMessage",
    "LoggedStream",
    "PostedReply",
    "StreamLines",
    "chat_message",
    "connect_read_only",
    "feedback_marks",
    "has_feedback",
    "posted_replies_before",
    "posted_reply_to",
    "stream_lines",
    "streams",
]
