"""A chatling log read back for training: read-only, schema-checked, one stream at a time.

``chatling data ingest --db``, the nightly job's export and the preference
step (moderators' marks) all read the bot's SQLite log the same way: opened
read-only so a running bot is never disturbed, its schema version checked,
a stream's speech and chat returned with the bot's own posts (and their
echoes in chat) flagged, marked-bad and deleted messages left out.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

from chatling.core.errors import StoreError
from chatling.core.events import ChatMessage
from chatling.training.data.align import Segment
from chatling.training.data.filters import FilterOptions


def connect_read_only(path: Path) -> sqlite3.Connection:
    """The log at ``path``, read-only, once it is known to be a chatling log this version reads."""
    from chatling.store.migrations import load_migrations

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


def _key(text: str) -> str:
    return " ".join(text.casefold().split())


def _has_feedback(db: sqlite3.Connection) -> bool:
    """Whether the log has moderators' marks and deletions (schema version 2 on)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0]) >= 2


def from_db_filters(filters: FilterOptions) -> FilterOptions:
    """``filters`` for the messages ``stream_lines`` reads: it already flags every message of
    a bot account (``filters.bots``) as ``is_bot``, except posts moderators marked good,
    which the name rule must not drop again."""
    return dataclasses.replace(filters, bots=frozenset())


def stream_lines(
    db: sqlite3.Connection, stream_id: int, bots: frozenset[str]
) -> tuple[list[ChatMessage], list[Segment]]:
    """A stream's chat and speech; messages that copy a posted reply are marked bot.

    Messages moderators deleted or marked bad are left out; a message marked good
    (and not bad) is never marked bot: the bot's approved posts become targets. Pass
    ``from_db_filters(filters)`` to ``make_pairs`` so the name rule keeps them too.
    """
    segments = [
        Segment(float(r["start_s"]), float(r["end_s"]), str(r["text"]))
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
        posted.setdefault(_key(str(r["chosen"])), []).append(float(r["offset_s"]))
    if _has_feedback(db):
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
    messages = []
    for r in db.execute(sql, (stream_id,)):
        offset, text = float(r["offset_s"]), str(r["text"])
        # The bot's own posts come back through chat; never learn them, even unflagged,
        # unless a moderator marked the post good.
        echo = any(abs(offset - t) <= 60.0 for t in posted.get(_key(text), ()))
        flagged = bool(r["is_bot"]) or echo or str(r["user"]).casefold() in bots
        try:
            emotes = tuple(json.loads(r["emotes"] or "[]"))
        except json.JSONDecodeError:
            emotes = ()
        messages.append(
            ChatMessage(
                offset=offset,
                user=str(r["user"]),
                text=text,
                display_name=r["display_name"],
                message_id=r["message_id"],
                emotes=emotes,
                is_bot=flagged and not r["approved"],
                source=str(r["source"]),
            )
        )
    return messages, segments


__all__ = ["connect_read_only", "from_db_filters", "stream_lines"]
