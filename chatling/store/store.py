"""The SQLite log of everything the bot hears, says and decides.

One ``Store`` per process, used from one event loop. Streams are started and
ended with awaited calls; utterances, chat messages and replies are enqueued
with plain, non-blocking ``add_*`` calls (a chat flood must never wait on the
disk) and a background writer commits them in batches: every
``flush_interval_s``, or at once when ``max_batch`` rows wait. Each batch is one
transaction (one ``executemany`` per table); ``committed`` counts rows only
after their transaction committed.

Durability: WAL with ``synchronous=FULL``. Batching already amortises the
fsync (one per batch, about two a second at the default interval), so FULL is
cheap here and makes a committed row survive power loss, not only a crash of
this process.

Failure: a batch the disk refuses (full, locked, read-only) stays queued in
order and is retried every ``flush_interval_s``; ``healthy`` turns False so the
bot can stop posting while its words cannot be logged, and back to True after
the next successful commit. Nothing is dropped: past ``max_pending`` queued
rows ``add_*`` raises ``StoreError`` instead, and producers that can pause
call ``await store.wait_writable()`` before adding.

Crashes: a stream records the process writing it. A killed bot cannot stamp
``ended_at``, so every ``connect`` closes the streams whose writer is gone,
with the time of their last logged event and ``ended_cleanly = 0``; streams of
a live writer (another bot on the same file) are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import sqlite3
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from chatling.core.errors import StoreError
from chatling.core.events import ChatMessage, Reply, Utterance
from chatling.procwatch import process_token, token_alive
from chatling.store.migrations import migrate

log = logging.getLogger(__name__)

STREAM_SOURCES = frozenset({"replay", "twitch", "live"})
REPLY_STATUSES = frozenset({"posted", "blocked", "rate_limited", "failed"})
FEEDBACK_MARKS = frozenset({"good", "bad"})
TABLES = (
    "streams",
    "utterances",
    "chat_messages",
    "bot_replies",
    "feedback",
    "training_runs",
)

_INSERT = {
    "utterances": "INSERT INTO utterances (stream_id, start_s, end_s, text, created_at)"
    " VALUES (?, ?, ?, ?, ?)",
    "chat": "INSERT INTO chat_messages (stream_id, offset_s, user, display_name, text,"
    " message_id, emotes, is_bot, source, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (message_id) WHERE message_id IS NOT NULL DO NOTHING",
    "replies": "INSERT INTO bot_replies (stream_id, offset_s, trigger, prompt, candidates,"
    " chosen, verdicts, status, in_reply_to, reply_to_user, latency_s, first_token_s, model,"
    " adapter, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "feedback": "INSERT INTO feedback (target_message_id, target_text, mark, by_user, source,"
    " created_at) VALUES (?, ?, ?, ?, ?, ?)",
    "deleted": "UPDATE chat_messages SET deleted_at = ? WHERE message_id = ?"
    " AND deleted_at IS NULL",
}

_ADVICE = (
    (
        "full",
        "free space on the disk that holds it, or set CHATLING_STORAGE__DB_PATH elsewhere",
    ),
    (
        "locked",
        "another program holds a write lock on it (a sqlite3 shell? a second chatling?)",
    ),
    (
        "busy",
        "another program holds a write lock on it (a sqlite3 shell? a second chatling?)",
    ),
    ("readonly", "make the file and its directory writable"),
    (
        "not a database",
        "it is not a SQLite database: move it away or set another db_path",
    ),
    (
        "malformed",
        "the file is corrupt: restore a backup, or move it away to start afresh",
    ),
    (
        "disk i/o",
        "check the disk (free space, dmesg) and that the file was not removed",
    ),
    ("unable to open", "check that the path names a file in a writable directory"),
)


@dataclass(frozen=True, slots=True)
class CommitCounts:
    """Rows committed by this ``Store`` since it opened."""

    utterances: int = 0
    chat: int = 0
    replies: int = 0
    feedback: int = 0
    deleted: int = 0
    """Chat messages newly marked deleted."""
    duplicates: int = 0
    """Chat messages skipped because their ``message_id`` was already logged."""


def store_error(path: Path, exc: sqlite3.Error, doing: str) -> StoreError:
    """A ``StoreError`` naming the file, what failed, SQLite's words and what to do."""
    message = str(exc)
    advice = next((a for key, a in _ADVICE if key in message.lower()), "see SQLite's message")
    return StoreError(f"{path}: {doing}: {message}; {advice}")


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    """Wait until ``event`` is set or ``timeout_s`` passed, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()


class Store:
    """Batched, crash-safe writes and a few queries over the chatling database."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        path: Path,
        *,
        flush_interval_s: float,
        max_batch: int,
        max_pending: int,
        clock: Callable[[], float],
        streams: set[int],
    ) -> None:
        """Use ``Store.open`` or ``Store.connect``; this only wires the parts."""
        if flush_interval_s <= 0 or max_batch < 1 or max_pending < max_batch:
            raise ValueError("need flush_interval_s > 0 and 1 <= max_batch <= max_pending")
        self.path = path
        self._db = db
        self._flush_interval_s = flush_interval_s
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._clock = clock
        self._streams = streams
        self._queue: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._enqueued = 0  # rows ever enqueued; row n is written once _written >= n
        self._written = 0
        self._counts: Counter[str] = Counter()
        self._lock = asyncio.Lock()  # one transaction at a time on the one connection
        self._work = asyncio.Event()  # rows are queued (or we are closing)
        self._urgent = asyncio.Event()  # a full batch is queued (or we are closing)
        self._stop = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._inflight: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._last_error: StoreError | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, path: str | Path, flush_interval_s: float = 0.5, max_batch: int = 500, **options: Any
    ) -> AsyncIterator[Store]:
        """``async with Store.open(path) as store:``; options as for ``connect``.

        Leaving the block flushes everything queued and closes the file.
        """
        store = await cls.connect(path, flush_interval_s, max_batch, **options)
        try:
            yield store
        finally:
            await store.close()

    @classmethod
    async def connect(
        cls,
        path: str | Path,
        flush_interval_s: float = 0.5,
        max_batch: int = 500,
        *,
        max_pending: int = 50_000,
        busy_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> Store:
        """Open (creating the file and its directory), migrate, start the writer."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"{path}: cannot create the directory {path.parent}: {exc.strerror}; "
                "create it or set CHATLING_STORAGE__DB_PATH elsewhere"
            ) from exc
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise store_error(path, exc, "cannot open the store") from exc
        try:
            await _configure(db, path, busy_timeout_s)
            await migrate(db, path)
            await close_abandoned_streams(db, path)
            async with db.execute("SELECT id FROM streams") as cursor:
                streams = {int(row[0]) for row in await cursor.fetchall()}
            # fmt: off
            store = cls(
                db, path, flush_interval_s=flush_interval_s, max_batch=max_batch,
                max_pending=max_pending, clock=clock, streams=streams,
            )
            # fmt: on
        except BaseException as exc:
            await db.close()
            if isinstance(exc, sqlite3.Error):
                raise store_error(path, exc, "cannot open the store") from exc
            raise
        store._writer = asyncio.create_task(store._run_writer(), name=f"store writer {path}")
        return store

    # -- state ---------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """False while the last commit failed: logs are not being written."""
        return self._last_error is None

    @property
    def last_error(self) -> StoreError | None:
        """Why the last commit failed; None once a commit succeeded again."""
        return self._last_error

    @property
    def pending(self) -> int:
        """Rows enqueued and not yet committed."""
        return len(self._queue)

    @property
    def committed(self) -> CommitCounts:
        """Rows committed so far (a snapshot)."""
        return CommitCounts(**self._counts)

    # -- writes ----------------------------------------------------------------

    async def start_stream(
        self,
        name: str,
        source: str,
        channel: str | None = None,
        model: str | None = None,
        adapter: str | None = None,
    ) -> int:
        """Record a new stream (committed at once) and return its id."""
        if source not in STREAM_SOURCES:
            raise ValueError(
                f"stream source must be one of {sorted(STREAM_SOURCES)}, not {source!r}"
            )
        sql = (
            "INSERT INTO streams (name, source, channel, started_at, model, adapter, writer)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        params = (name, source, channel, self._clock(), model, adapter, process_token())
        async with self._lock:
            try:
                async with self._db.execute(sql, params) as cursor:
                    stream_id = int(cursor.lastrowid or 0)
            except sqlite3.Error as exc:
                raise store_error(self.path, exc, "cannot start a stream") from exc
        self._streams.add(stream_id)
        return stream_id

    async def end_stream(self, stream_id: int) -> None:
        """Commit what is queued, then stamp the stream's ``ended_at``."""
        self._check_stream(stream_id)
        await self.flush()
        async with self._lock:
            try:
                await self._db.execute(
                    "UPDATE streams SET ended_at = ?, ended_cleanly = 1 WHERE id = ?",
                    (self._clock(), stream_id),
                )
            except sqlite3.Error as exc:
                raise store_error(self.path, exc, f"cannot end stream {stream_id}") from exc

    def add_utterance(self, stream_id: int, utterance: Utterance) -> None:
        """Queue one transcribed utterance (never blocks)."""
        row = (stream_id, utterance.start, utterance.end, utterance.text, self._clock())
        self._enqueue("utterances", stream_id, row)

    def add_chat(
        self, stream_id: int, message: ChatMessage, received_at: float | None = None
    ) -> None:
        """Queue one chat message; one whose ``message_id`` is already logged is skipped."""
        emotes = json.dumps(list(message.emotes), ensure_ascii=False)
        received = self._clock() if received_at is None else received_at
        # fmt: off
        row = (
            stream_id, message.offset, message.user, message.display_name, message.text,
            message.message_id, emotes, int(message.is_bot), message.source, received,
        )
        # fmt: on
        self._enqueue("chat", stream_id, row)

    def add_reply(self, stream_id: int, reply: Reply) -> None:
        """Queue one reply attempt, serialised now (``Reply`` is mutable)."""
        if reply.status not in REPLY_STATUSES:
            raise ValueError(
                f"reply status must be one of {sorted(REPLY_STATUSES)}, not {reply.status!r}"
            )
        candidates = [
            {"text": c.text, "allowed": c.allowed, "reason": c.reason, "score": c.score}
            for c in reply.candidates
        ]
        verdicts = Counter(c.reason for c in reply.candidates)
        # fmt: off
        row = (
            stream_id, reply.offset, reply.trigger, reply.prompt,
            json.dumps(candidates, ensure_ascii=False), reply.chosen,
            json.dumps(dict(verdicts), ensure_ascii=False), reply.status, reply.in_reply_to,
            reply.reply_to_user, reply.latency_s, reply.first_token_s, reply.model,
            reply.adapter, self._clock(),
        )
        # fmt: on
        self._enqueue("replies", stream_id, row)

    def add_feedback(
        self,
        stream_id: int,
        target_message_id: str,
        mark: str,
        by_user: str,
        source: str,
        target_text: str | None = None,
    ) -> None:
        """Queue a moderator's mark (``good``/``bad``) on a message (never blocks)."""
        if mark not in FEEDBACK_MARKS:
            raise ValueError(f"mark must be one of {sorted(FEEDBACK_MARKS)}, not {mark!r}")
        row = (target_message_id, target_text, mark, by_user, source, self._clock())
        self._enqueue("feedback", stream_id, row)

    def mark_deleted(self, stream_id: int, message_id: str) -> None:
        """Queue: a moderator deleted this chat message; it never becomes a target."""
        self._enqueue("deleted", stream_id, (self._clock(), message_id))

    async def wait_writable(self) -> None:
        """Return once fewer than ``max_pending`` rows are queued (at once, normally)."""
        await self._writable.wait()

    async def flush(self) -> None:
        """Commit every row enqueued before this call.

        Raises ``StoreError`` if the disk refuses; the rows stay queued and the
        writer keeps retrying them.
        """
        await self._commit_through(self._enqueued)

    async def close(self) -> None:
        """Stop the writer, commit everything queued, close the connection."""
        if self._closed:
            return
        self._closing = True
        for event in (self._stop, self._work, self._urgent, self._writable):
            event.set()
        writer = self._writer
        try:
            if writer is not None:
                # It leaves its loop (close() never cancels it); wait() does not raise
                # if something else cancelled it: it committed on its way out.
                await asyncio.wait([writer])
            await self.flush()
        except StoreError as exc:
            raise StoreError(f"{exc}; closing anyway: {self.pending} rows are lost") from exc
        finally:
            self._closed = True
            await self._db.close()
        if writer is not None and not writer.cancelled():
            writer.result()  # a bug in the writer surfaces here, not nowhere

    def _check_stream(self, stream_id: int) -> None:
        if stream_id not in self._streams:
            raise ValueError(f"unknown stream id {stream_id}; call start_stream() first")

    def _enqueue(self, kind: str, stream_id: int, row: tuple[Any, ...]) -> None:
        if self._closing:
            raise StoreError(f"{self.path}: the store is closed; this {kind} row was not logged")
        self._check_stream(stream_id)
        if len(self._queue) >= self._max_pending:
            why = f" (last error: {self._last_error})" if self._last_error else ""
            raise StoreError(
                f"{self.path}: {len(self._queue)} rows wait to be written{why}; this {kind} "
                "row was refused: await store.wait_writable() before adding"
            )
        self._queue.append((kind, row))
        self._enqueued += 1
        self._work.set()
        if len(self._queue) >= self._max_batch:
            self._urgent.set()
        if len(self._queue) >= self._max_pending:
            self._writable.clear()

    # -- the writer --------------------------------------------------------------

    async def _run_writer(self) -> None:
        """Commit queued rows every interval, or at once for a full batch, until closed."""
        try:
            while not self._closing:
                await self._work.wait()
                if len(self._queue) < self._max_batch:
                    await _wait(self._urgent, self._flush_interval_s)
                self._urgent.clear()
                if self._closing:
                    break
                try:
                    await self._commit_through(self._enqueued)
                except StoreError:
                    # Logged by _commit_next; retry after one interval (close() cuts it short).
                    await _wait(self._stop, self._flush_interval_s)
                if not self._queue:
                    self._work.clear()
        except asyncio.CancelledError:
            # Cancelled from outside (loop shutdown): commit what is queued, then go.
            with contextlib.suppress(StoreError):
                await self._commit_through(self._enqueued)
            raise

    async def _commit_through(self, target: int) -> None:
        """Commit batches, oldest first, until row number ``target`` is committed.

        Each batch runs as its own task behind ``shield``: a cancelled caller
        never leaves a transaction half done, nor a committed batch still queued.
        """
        while self._written < target:
            if self._inflight is None or self._inflight.done():
                self._inflight = asyncio.ensure_future(self._commit_next())
                self._inflight.add_done_callback(_retrieve)
            await asyncio.shield(self._inflight)

    async def _commit_next(self) -> None:
        """Commit up to ``max_batch`` queued rows in one transaction."""
        async with self._lock:
            batch = list(itertools.islice(self._queue, self._max_batch))
            if not batch:
                return
            groups: dict[str, list[tuple[Any, ...]]] = {}
            for kind, row in batch:
                groups.setdefault(kind, []).append(row)
            try:
                written = await self._write(groups)
            except sqlite3.Error as exc:
                error = store_error(self.path, exc, f"cannot write {len(batch)} log rows")
                if self._last_error is None:
                    log.error("%s (kept; retrying every %.2fs)", error, self._flush_interval_s)
                self._last_error = error
                raise error from exc
            for _ in batch:
                self._queue.popleft()
            self._written += len(batch)
            self._counts.update(written)
            self._counts["duplicates"] += len(groups.get("chat", ())) - written.get("chat", 0)
            if self._last_error is not None:
                log.warning("%s: writing again after: %s", self.path, self._last_error)
                self._last_error = None
            if len(self._queue) < self._max_pending:
                self._writable.set()

    async def _write(self, groups: dict[str, list[tuple[Any, ...]]]) -> dict[str, int]:
        """One transaction, one ``executemany`` per table; rows inserted per kind."""
        written: dict[str, int] = {}
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            for kind, rows in groups.items():
                async with self._db.executemany(_INSERT[kind], rows) as cursor:
                    written[kind] = max(cursor.rowcount, 0)
            await self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                try:
                    await self._db.execute("ROLLBACK")
                except sqlite3.Error as exc:  # SQLite may have rolled back itself
                    log.warning("%s: rollback failed: %s", self.path, exc)
            raise
        return written

    # -- queries -------------------------------------------------------------------

    async def count(self, table: str) -> int:
        """Committed rows in ``table`` (call ``flush()`` first to include queued ones)."""
        if table not in TABLES:
            raise ValueError(f"table must be one of {TABLES}, not {table!r}")
        rows = await self._fetch(f"SELECT count(*) AS n FROM {table}")
        return int(rows[0]["n"])

    async def replies(self, stream_id: int) -> list[dict[str, Any]]:
        """The committed replies of one stream; ``candidates`` and ``verdicts`` decoded."""
        rows = await self._fetch(
            "SELECT * FROM bot_replies WHERE stream_id = ? ORDER BY offset_s, id",
            (stream_id,),
        )
        for row in rows:
            row["candidates"] = json.loads(row["candidates"])
            row["verdicts"] = json.loads(row["verdicts"])
        return rows

    async def _fetch(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        async with self._lock:  # never read inside the writer's open transaction
            try:
                async with self._db.execute(sql, params) as cursor:
                    names = [column[0] for column in cursor.description]
                    rows = await cursor.fetchall()
            except sqlite3.Error as exc:
                raise store_error(self.path, exc, "cannot read the store") from exc
        return [dict(zip(names, row, strict=True)) for row in rows]


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a batch's outcome as seen; its caller, if still there, gets it too."""
    if not future.cancelled():
        future.exception()


_LAST_EVENT = """
SELECT max(s.started_at, coalesce(max(e.at), s.started_at)) FROM streams AS s, (
    SELECT max(created_at) AS at FROM utterances WHERE stream_id = :id
    UNION ALL SELECT max(received_at) FROM chat_messages WHERE stream_id = :id
    UNION ALL SELECT max(created_at) FROM bot_replies WHERE stream_id = :id
) AS e WHERE s.id = :id
"""


async def close_abandoned_streams(db: aiosqlite.Connection, path: Path) -> list[int]:
    """Close the streams left open by a process that died; return their ids.

    ``ended_at`` becomes the time of the stream's last logged event (its start
    if it logged none) and ``ended_cleanly`` 0. A stream whose writer still
    runs, or runs on another machine, stays open. One transaction, so two bots
    starting at once do not both close (and log) the same stream.
    """
    await db.execute("BEGIN IMMEDIATE")
    closed: list[tuple[int, str | None]] = []
    try:
        async with db.execute("SELECT id, writer FROM streams WHERE ended_at IS NULL") as cursor:
            open_streams = [(int(r[0]), r[1]) for r in await cursor.fetchall()]
        for stream_id, writer in open_streams:
            if writer is not None and token_alive(writer) is not False:
                continue
            async with db.execute(_LAST_EVENT, {"id": stream_id}) as cursor:
                row = await cursor.fetchone()
            await db.execute(
                "UPDATE streams SET ended_at = ?, ended_cleanly = 0 WHERE id = ?",
                (row[0] if row else None, stream_id),
            )
            closed.append((stream_id, writer))
        await db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            await db.execute("ROLLBACK")
        raise
    for stream_id, writer in closed:
        log.warning(
            "%s: stream %d was left open by process %s, which is gone (killed?); "
            "closed it at its last logged event",
            path,
            stream_id,
            writer or "(unknown)",
        )
    return [stream_id for stream_id, _ in closed]


async def _configure(db: aiosqlite.Connection, path: Path, busy_timeout_s: float) -> None:
    """Per-connection settings; WAL is stored in the file and kept from then on."""
    await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000):d}")
    async with db.execute("PRAGMA journal_mode = WAL") as cursor:
        row = await cursor.fetchone()
    mode = str(row[0]) if row else "?"
    if mode.lower() != "wal":
        log.warning("%s: journal_mode is %s, not WAL (file system without locks?)", path, mode)
    await db.execute("PRAGMA synchronous = FULL")
    await db.execute("PRAGMA foreign_keys = ON")
