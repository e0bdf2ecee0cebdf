"""The SQLite store: batched logging of streams, speech, chat and replies.

``Store`` is the one entry point for the bot, which writes (see ``store.py``);
``migrations.py`` applies the numbered files in ``sql/``. Learning reads the
same file back through ``reader.py`` (read-only: streams, speech and chat,
moderators' marks) and records its runs through ``runlog.py`` (the
``training_runs`` table).
"""

from chatling.store.store import REPLY_STATUSES, STREAM_SOURCES, TABLES, CommitCounts, Store

__all__ = ["REPLY_STATUSES", "STREAM_SOURCES", "TABLES", "CommitCounts", "Store"]
