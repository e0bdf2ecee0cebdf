"""The SQLite store: batched logging of streams, speech, chat and replies.

``Store`` is the one entry point (see ``store.py``); ``migrations.py`` applies
the numbered files in ``sql/``.
"""

from chatling.store.store import REPLY_STATUSES, STREAM_SOURCES, TABLES, CommitCounts, Store

__all__ = ["REPLY_STATUSES", "STREAM_SOURCES", "TABLES", "CommitCounts", "Store"]
