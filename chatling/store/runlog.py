"""The ``training_runs`` table: one row per retrain run, from start to decision.

The nightly job (``chatling.learn.nightly``) writes its row while the bot may be
writing the rest of the same file, and reads the rows back to know where the
logs it has not learnt from begin; ``chatling adapters runs`` and the dashboard
list the last ones. The job is synchronous, so this is plain ``sqlite3`` (not
``Store``'s async writer) in autocommit mode with a 30 s busy timeout: each
update is committed at once, and ``transaction`` groups the promotion's row
update with the pointer move. Reads of the rest of the log go through
``reader.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chatling.core.errors import StoreError

log = logging.getLogger(__name__)

RUN_STATUSES = frozenset({"running", "promoted", "rejected", "failed", "skipped"})


class RunLog:
    """The ``training_runs`` rows of one database (plain sqlite3: the job is synchronous)."""

    def __init__(self, db_path: Path) -> None:
        if not db_path.is_file():
            raise StoreError(f"{db_path}: no such database; run the bot once (or check db_path)")
        self.path = db_path
        try:
            self.db = sqlite3.connect(db_path, timeout=30.0, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise StoreError(f"{db_path}: cannot open the log ({exc})") from None
        if version < 2:
            self.db.close()
            raise StoreError(
                f"{db_path}: schema version {version} has no training_runs table; "
                "start chatling once to upgrade it"
            )

    def close(self) -> None:
        self.db.close()

    def start(self, trigger: str, current_version: str | None) -> int:
        cur = self.db.execute(
            "INSERT INTO training_runs (trigger, status, started_at, current_version, pid)"
            " VALUES (?, 'running', ?, ?, ?)",
            (trigger, time.time(), current_version, os.getpid()),
        )
        return int(cur.lastrowid or 0)

    def update(self, run_id: int, **fields: Any) -> None:
        for key, value in list(fields.items()):
            if isinstance(value, dict | list):
                fields[key] = json.dumps(value, ensure_ascii=False, default=str)
        assignments = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(
            f"UPDATE training_runs SET {assignments} WHERE id = ?", (*fields.values(), run_id)
        )

    def finish(self, run_id: int, status: str, reason: str, error: str | None = None) -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {sorted(RUN_STATUSES)}")
        self.update(run_id, status=status, reason=reason, error=error, ended_at=time.time())

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """The block's updates in one ``BEGIN IMMEDIATE`` transaction: committed when it
        ends, rolled back when it (or the commit) raises."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def reconcile(self, active_version: str | None) -> int:
        """Close rows left ``running`` by runs that died (the caller holds the run lock).

        ``active_version`` is the adapter the pointer names now: a row whose candidate
        it is had promoted it when its process ended, and is closed as ``promoted``.
        """
        rows = self.db.execute(
            "SELECT id, candidate_version FROM training_runs WHERE status = 'running'"
        ).fetchall()
        for row in rows:
            if row["candidate_version"] and row["candidate_version"] == active_version:
                self.finish(row["id"], "promoted", "promoted; the run ended before recording it")
            else:
                self.finish(
                    row["id"], "failed", "interrupted", "the run's process ended before it finished"
                )
        if rows:
            log.warning("closed %d run(s) left unfinished by a previous process", len(rows))
        return len(rows)

    def since_for(self, version: str | None) -> float | None:
        """Start time of the run that promoted ``version``: logs after it are new."""
        if version is None:
            return None
        row = self.db.execute(
            "SELECT started_at FROM training_runs WHERE status = 'promoted'"
            " AND candidate_version = ? ORDER BY id DESC LIMIT 1",
            (version,),
        ).fetchone()
        return float(row["started_at"]) if row else None

    def rows(self, limit: int = 20) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT * FROM training_runs ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(r) for r in cur.fetchall()]


__all__ = ["RUN_STATUSES", "RunLog"]
