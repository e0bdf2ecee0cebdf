"""Tests of the SQLite store on real files: schema, round trips, batching, failures.

Every test opens a real database under ``tmp_path`` and checks what another
SQLite client (plain ``sqlite3``) sees in the file, since that is what the
training scripts and a user with the sqlite3 shell will read.
Run: ``.venv/bin/python -m pytest -q tests/test_store.py``
"""

from __future__ import annotations

import asyncio
import json
import queue
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import aiosqlite
import pytest

from chatling.core.errors import StoreError
from chatling.core.events import Candidate, ChatMessage, Reply, Utterance
from chatling.store import Store
from chatling.store.migrations import SQL_DIR, load_migrations, migrate, split_statements

REPO = Path(__file__).resolve().parents[1]
CHILD = REPO / "tests" / "store_writer_child.py"


def rows(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read the file with a separate plain sqlite3 connection."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def wait_until(condition, timeout_s: float = 3.0) -> bool:
    """Give the background writer up to ``timeout_s`` to make ``condition`` true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another client that holds the database's write lock until closed."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    return conn


# -- schema and migrations ---------------------------------------------------------


@pytest.mark.asyncio
async def test_new_database_gets_tables_wal_and_version(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "chat.sqlite"  # the directory does not exist yet
    async with Store.open(path):
        pass
    objects = set(rows(path, "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite%'"))
    for table in ("streams", "utterances", "chat_messages", "bot_replies"):
        assert ("table", table) in objects
    assert rows(path, "SELECT name FROM sqlite_master WHERE type = 'view'") == []
    assert rows(path, "PRAGMA user_version") == [(len(load_migrations()),)]
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]


@pytest.mark.asyncio
async def test_reopen_applies_nothing_again_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite"
    async with Store.open(path) as store:
        stream_id = await store.start_stream("vod", "replay", "chan", "m", None)
        store.add_chat(stream_id, ChatMessage(1.0, "ann", "hi", message_id="a"))
    async with aiosqlite.connect(path, isolation_level=None) as db:
        assert await migrate(db, path) == []
    async with Store.open(path) as store:
        assert await store.count("chat_messages") == 1
        store.add_chat(stream_id, ChatMessage(2.0, "bob", "yo"))  # the old stream id still works
    assert rows(path, "SELECT user FROM chat_messages ORDER BY id") == [("ann",), ("bob",)]


@pytest.mark.asyncio
async def test_only_new_migrations_run_and_a_failing_one_changes_nothing(tmp_path: Path) -> None:
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    (sql_dir / "001_init.sql").write_text((SQL_DIR / "001_init.sql").read_text())
    path = tmp_path / "chat.sqlite"
    async with aiosqlite.connect(path, isolation_level=None) as db:
        assert await migrate(db, path, load_migrations(sql_dir)) == [1]
        (sql_dir / "002_broken.sql").write_text(
            "CREATE TABLE notes (text TEXT);\nINSERT INTO no_such_table VALUES (1);\n"
        )
        with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
            await migrate(db, path, load_migrations(sql_dir))
    # The failed step left neither its table nor its version behind.
    assert rows(path, "PRAGMA user_version") == [(1,)]
    assert rows(path, "SELECT name FROM sqlite_master WHERE name = 'notes'") == []

    (sql_dir / "002_notes.sql").write_text("CREATE TABLE notes (text TEXT); -- a; b\n")
    (sql_dir / "002_broken.sql").unlink()
    async with aiosqlite.connect(path, isolation_level=None) as db:
        assert await migrate(db, path, load_migrations(sql_dir)) == [2]
        assert await migrate(db, path, load_migrations(sql_dir)) == []
    assert rows(path, "PRAGMA user_version") == [(2,)]


@pytest.mark.asyncio
async def test_database_from_a_newer_chatling_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite"
    async with Store.open(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="newer") as caught:
        async with Store.open(path):
            pass
    assert str(path) in str(caught.value)
    assert rows(path, "PRAGMA user_version") == [(99,)]


def test_statement_splitter_respects_strings_comments_and_triggers() -> None:
    sql = (
        "-- header; with a semicolon\n"
        "CREATE TABLE t (a TEXT DEFAULT 'x;y'); CREATE TABLE u (b);\n"
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO u VALUES (1); END;\n"
        "-- trailing comment\n"
    )
    statements = split_statements(sql)
    assert len(statements) == 3
    assert statements[2].endswith("END;")
    with pytest.raises(StoreError, match=r"x\.sql.*';'"):
        split_statements("CREATE TABLE t (a)", "x.sql")


# -- opening bad files -----------------------------------------------------------


@pytest.mark.asyncio
async def test_a_file_that_is_not_sqlite_is_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_text("these are my notes, not a database\n" * 20)
    with pytest.raises(StoreError, match="not a database") as caught:
        async with Store.open(path):
            pass
    assert str(path) in str(caught.value)
    assert path.read_text().startswith("these are my notes")  # left untouched


@pytest.mark.asyncio
async def test_a_directory_in_the_way_gives_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the directory"):
        async with Store.open(blocker / "chat.sqlite"):
            pass


# -- round trips -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_each_event_type_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite"
    clock = iter(range(1000, 2000)).__next__
    candidates = [
        Candidate("hi there \N{WAVING HAND SIGN}", allowed=True, reason="ok", score=0.75),
        Candidate("bad words", allowed=False, reason="blocked_term", score=0.5),
        Candidate("also bad", allowed=False, reason="blocked_term", score=0.25),
    ]
    reply = Reply(
        offset=12.5, trigger="addressed", prompt="<prompt>", candidates=candidates,
        chosen="hi there \N{WAVING HAND SIGN}", status="posted", in_reply_to="msg-1",
        reply_to_user="ann", latency_s=0.8, first_token_s=0.2, model="smol", adapter="lora-1",
    )  # fmt: skip
    message = ChatMessage(
        offset=12.0, user="ann", text="@chatling hi Kappa", display_name="Ann",
        message_id="msg-1", emotes=("Kappa", "PogChamp"), is_bot=False, source="twitch",
    )  # fmt: skip
    async with Store.open(path, clock=lambda: float(clock())) as store:
        stream_id = await store.start_stream("Friday stream", "twitch", "annchan", "smol", "lora")
        store.add_utterance(stream_id, Utterance(10.0, 11.5, "hello chat"))
        store.add_chat(stream_id, message, received_at=1234.5)
        store.add_reply(stream_id, reply)
        reply.status = "failed"  # mutating afterwards must not change what was logged
        await store.flush()
        assert store.committed.utterances == store.committed.chat == store.committed.replies == 1
        logged = await store.replies(stream_id)
        await store.end_stream(stream_id)

    assert rows(path, "SELECT name, source, channel, model, adapter FROM streams") == [
        ("Friday stream", "twitch", "annchan", "smol", "lora")
    ]
    started, ended = rows(path, "SELECT started_at, ended_at FROM streams")[0]
    assert ended is not None and ended > started
    assert rows(path, "SELECT stream_id, start_s, end_s, text FROM utterances") == [
        (stream_id, 10.0, 11.5, "hello chat")
    ]
    chat = rows(
        path,
        "SELECT offset_s, user, display_name, text, message_id, emotes, is_bot, source,"
        " received_at FROM chat_messages",
    )
    assert chat == [
        (12.0, "ann", "Ann", "@chatling hi Kappa", "msg-1", '["Kappa", "PogChamp"]', 0, "twitch",
         1234.5)
    ]  # fmt: skip
    (row,) = logged
    assert row["candidates"] == [
        {"text": "hi there \N{WAVING HAND SIGN}", "allowed": True, "reason": "ok", "score": 0.75},
        {"text": "bad words", "allowed": False, "reason": "blocked_term", "score": 0.5},
        {"text": "also bad", "allowed": False, "reason": "blocked_term", "score": 0.25},
    ]
    assert row["verdicts"] == {"ok": 1, "blocked_term": 2}
    assert row["status"] == "posted"
    assert (row["trigger"], row["chosen"], row["in_reply_to"], row["reply_to_user"]) == (
        "addressed", "hi there \N{WAVING HAND SIGN}", "msg-1", "ann",
    )  # fmt: skip
    assert (row["latency_s"], row["first_token_s"], row["model"], row["adapter"]) == (
        0.8, 0.2, "smol", "lora-1",
    )  # fmt: skip
    # The raw column is JSON any client can read, with the emoji intact.
    raw = rows(path, "SELECT candidates FROM bot_replies")[0][0]
    assert json.loads(raw)[0]["text"] == "hi there \N{WAVING HAND SIGN}"


@pytest.mark.asyncio
async def test_bad_stream_and_status_are_refused_at_once(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "chat.sqlite") as store:
        with pytest.raises(ValueError, match="unknown stream id 7"):
            store.add_chat(7, ChatMessage(1.0, "ann", "hi"))
        with pytest.raises(ValueError, match="source"):
            await store.start_stream("x", "myspace", None, None, None)
        stream_id = await store.start_stream("x", "replay", None, None, None)
        with pytest.raises(ValueError, match="status"):
            store.add_reply(stream_id, Reply(1.0, "quiet", "p"))  # still "pending"
        assert store.pending == 0


@pytest.mark.asyncio
async def test_duplicate_message_ids_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite"
    async with Store.open(path) as store:
        stream_id = await store.start_stream("vod", "replay", None, None, None)
        store.add_chat(stream_id, ChatMessage(1.0, "ann", "first", message_id="m1"))
        store.add_chat(stream_id, ChatMessage(1.0, "ann", "first again", message_id="m1"))
        store.add_chat(stream_id, ChatMessage(2.0, "bob", "no id"))
        store.add_chat(stream_id, ChatMessage(3.0, "bob", "no id either"))
        await store.flush()
        assert store.committed.chat == 3
        assert store.committed.duplicates == 1
    # A resumed replay, in a new process, sends the same messages again.
    async with Store.open(path) as store:
        resumed = await store.start_stream("vod (resumed)", "replay", None, None, None)
        store.add_chat(resumed, ChatMessage(1.0, "ann", "first", message_id="m1"))
        store.add_chat(resumed, ChatMessage(5.0, "cat", "new", message_id="m2"))
        await store.flush()
        assert (store.committed.chat, store.committed.duplicates) == (1, 1)
    assert rows(path, "SELECT text FROM chat_messages ORDER BY id") == [
        ("first",), ("no id",), ("no id either",), ("new",)
    ]  # fmt: skip


# -- the training_pairs view of 001/002 is gone ----------------------------------


@pytest.mark.asyncio
async def test_a_log_made_by_the_old_migrations_upgrades_without_the_view(
    tmp_path: Path,
) -> None:
    """A log written before 004 still has the view; opening it drops the view, keeps
    every row, and the reader (``chatling.store.reader``) reads it as before."""
    from chatling.store.reader import connect_read_only, stream_lines, streams

    path = tmp_path / "old.sqlite"
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    old = [p for p in sorted(SQL_DIR.glob("*.sql")) if int(p.name[:3]) <= 3]
    assert [p.name[:3] for p in old] == ["001", "002", "003"]
    for file in old:
        (sql_dir / file.name).write_text(file.read_text())
    async with aiosqlite.connect(path, isolation_level=None) as db:
        assert await migrate(db, path, load_migrations(sql_dir)) == [1, 2, 3]
        await db.execute(
            "INSERT INTO streams (id, name, source, started_at, ended_at, ended_cleanly)"
            " VALUES (1, 'old', 'twitch', 10.0, 200.0, 1)"
        )
        await db.execute(
            "INSERT INTO utterances (stream_id, start_s, end_s, text, created_at)"
            " VALUES (1, 0.0, 5.0, 'hello chat', 15.0)"
        )
        await db.execute(
            "INSERT INTO chat_messages (stream_id, offset_s, user, text, message_id, source,"
            " received_at) VALUES (1, 8.0, 'ann', 'hi', 'm1', 'twitch', 18.0)"
        )
    assert rows(path, "SELECT name FROM sqlite_master WHERE type = 'view'") == [("training_pairs",)]
    assert rows(path, "SELECT user, transcript FROM training_pairs") == [("ann", "hello chat")]

    async with Store.open(path) as store:
        assert await store.count("chat_messages") == 1
        sid = await store.start_stream("new", "twitch")
        store.add_chat(sid, ChatMessage(1.0, "bob", "yo", message_id="m2"))
    assert rows(path, "PRAGMA user_version") == [(len(load_migrations()),)]
    assert rows(path, "SELECT name FROM sqlite_master WHERE type = 'view'") == []
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]
    with pytest.raises(sqlite3.OperationalError, match="no such table: training_pairs"):
        rows(path, "SELECT * FROM training_pairs")

    db = connect_read_only(path)
    try:
        logged = streams(db)
        lines = stream_lines(db, 1, frozenset())
    finally:
        db.close()
    assert [(s.id, s.name, s.ended_at) for s in logged] == [(1, "old", 200.0), (sid, "new", None)]
    assert [(m.user, m.text, m.is_bot) for m in lines.chat] == [("ann", "hi", False)]
    assert [(u.start, u.end, u.text) for u in lines.speech] == [(0.0, 5.0, "hello chat")]


# -- batching, failures, backpressure ---------------------------------------------


@pytest.mark.asyncio
async def test_rows_commit_on_flush_and_counters_move_only_after_commit(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite"
    async with Store.open(path, flush_interval_s=30.0) as store:  # the timer will not fire
        stream_id = await store.start_stream("s", "replay", None, None, None)
        store.add_utterance(stream_id, Utterance(0.0, 1.0, "hi"))
        store.add_chat(stream_id, ChatMessage(1.0, "ann", "hey"))
        await asyncio.sleep(0.05)
        assert store.pending == 2
        assert store.committed.utterances == store.committed.chat == 0
        assert rows(path, "SELECT count(*) FROM chat_messages") == [(0,)]
        await store.flush()
        assert store.pending == 0
        assert (store.committed.utterances, store.committed.chat) == (1, 1)
        assert rows(path, "SELECT count(*) FROM chat_messages") == [(1,)]


@pytest.mark.asyncio
async def test_background_writer_commits_within_the_flush_interval(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "chat.sqlite", flush_interval_s=0.05) as store:
        stream_id = await store.start_stream("s", "replay", None, None, None)
        store.add_chat(stream_id, ChatMessage(1.0, "ann", "hey"))
        assert await wait_until(lambda: store.committed.chat == 1, timeout_s=1.0)


@pytest.mark.asyncio
async def test_a_full_batch_commits_without_waiting_for_the_timer(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "chat.sqlite", flush_interval_s=30.0, max_batch=10) as store:
        stream_id = await store.start_stream("s", "replay", None, None, None)
        for i in range(25):
            store.add_chat(stream_id, ChatMessage(float(i), "ann", f"msg {i}"))
        # The tenth message wakes the writer, which then takes all that is queued.
        assert await wait_until(lambda: store.committed.chat == 25, timeout_s=2.0)
        assert store.pending == 0


@pytest.mark.asyncio
async def test_closing_commits_everything_queued(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite"
    async with Store.open(path, flush_interval_s=30.0) as store:
        stream_id = await store.start_stream("s", "replay", None, None, None)
        for i in range(1234):
            store.add_chat(stream_id, ChatMessage(float(i), "ann", f"msg {i}"))
    assert rows(path, "SELECT count(*) FROM chat_messages") == [(1234,)]
    with pytest.raises(StoreError, match="closed"):
        store.add_chat(stream_id, ChatMessage(1.0, "ann", "too late"))


@pytest.mark.asyncio
async def test_a_locked_database_keeps_rows_and_marks_the_store_unhealthy(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite"
    async with Store.open(path, flush_interval_s=0.05, busy_timeout_s=0.05) as store:
        stream_id = await store.start_stream("s", "replay", None, None, None)
        other = hold_write_lock(path)
        try:
            store.add_chat(stream_id, ChatMessage(1.0, "ann", "hey", message_id="m1"))
            store.add_utterance(stream_id, Utterance(0.0, 1.0, "hi"))
            with pytest.raises(StoreError, match="locked") as caught:
                await store.flush()
            assert str(path) in str(caught.value)
            assert not store.healthy and store.last_error is not None
            assert store.pending == 2 and store.committed.chat == 0
            await asyncio.sleep(0.2)  # the writer retries and fails too, dropping nothing
            assert store.pending == 2 and not store.healthy
        finally:
            other.rollback()
            other.close()
        assert await wait_until(lambda: store.healthy, timeout_s=2.0)  # the writer's retry
        assert store.pending == 0
        assert (store.committed.chat, store.committed.utterances) == (1, 1)
    assert rows(path, "SELECT text FROM chat_messages") == [("hey",)]


@pytest.mark.asyncio
async def test_a_full_disk_keeps_rows_until_space_returns(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite"
    async with Store.open(path, flush_interval_s=30.0) as store:
        stream_id = await store.start_stream("s", "replay", None, None, None)
        # SQLite's own cap on the file size gives the real "database or disk is full"
        # error without filling a disk; it is set on the store's connection.
        db = store._db
        async with db.execute("PRAGMA page_count") as cursor:
            (pages,) = await cursor.fetchone()
        await db.execute(f"PRAGMA max_page_count = {pages}")
        for i in range(2000):
            store.add_chat(stream_id, ChatMessage(float(i), "ann", "x" * 200))
        with pytest.raises(StoreError, match="full") as caught:
            await store.flush()
        assert str(path) in str(caught.value) and "free space" in str(caught.value)
        assert not store.healthy and store.pending == 2000 and store.committed.chat == 0
        await db.execute("PRAGMA max_page_count = 1073741823")
        await store.flush()
        assert store.healthy and store.pending == 0 and store.committed.chat == 2000
    assert rows(path, "SELECT count(*) FROM chat_messages") == [(2000,)]


@pytest.mark.asyncio
async def test_a_cancelled_writer_commits_what_is_queued_first(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite"
    async with Store.open(path, flush_interval_s=30.0) as store:
        stream_id = await store.start_stream("s", "replay", None, None, None)
        for i in range(10):
            store.add_chat(stream_id, ChatMessage(float(i), "ann", f"msg {i}"))
        writer = store._writer  # what loop shutdown does to every task still running
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer
        assert rows(path, "SELECT count(*) FROM chat_messages") == [(10,)]
        assert store.committed.chat == 10


@pytest.mark.asyncio
async def test_a_full_queue_refuses_loudly_and_wait_writable_blocks(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite"
    async with Store.open(
        path, flush_interval_s=0.05, max_batch=2, max_pending=4, busy_timeout_s=0.05
    ) as store:
        stream_id = await store.start_stream("s", "replay", None, None, None)
        other = hold_write_lock(path)
        try:
            for i in range(4):
                store.add_chat(stream_id, ChatMessage(float(i), "ann", f"msg {i}"))
            with pytest.raises(StoreError, match="wait_writable"):
                store.add_chat(stream_id, ChatMessage(9.0, "ann", "one too many"))
            waiter = asyncio.ensure_future(store.wait_writable())
            await asyncio.sleep(0.2)
            assert not waiter.done()
        finally:
            other.rollback()
            other.close()
        await asyncio.wait_for(waiter, timeout=2.0)
        store.add_chat(stream_id, ChatMessage(9.0, "ann", "now it fits"))
    assert rows(path, "SELECT count(*) FROM chat_messages") == [(5,)]


# -- durability ----------------------------------------------------------------------


def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@pytest.mark.parametrize(
    ("lines_before_kill", "extra_delay_s"), [(2, 0.0), (6, 0.011), (15, 0.029)]
)
def test_sigkill_mid_writing_loses_no_committed_row(
    tmp_path: Path, lines_before_kill: int, extra_delay_s: float
) -> None:
    path = tmp_path / "kill.sqlite"
    lines: queue.Queue = queue.Queue()
    reports: list[dict[str, int]] = []
    with subprocess.Popen(
        [sys.executable, str(CHILD), str(path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as child:  # fmt: skip
        reader = threading.Thread(target=_read_lines, args=(child.stdout, lines))
        reader.start()
        try:
            while len(reports) < lines_before_kill:
                line = lines.get(timeout=30)
                if line is None:
                    pytest.fail(f"writer child exited early: {child.stderr.read()}")
                reports.append(json.loads(line))
            threading.Event().wait(extra_delay_s)
            child.kill()  # SIGKILL: no handler, no flush, no close
        finally:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=30)
            reader.join(timeout=30)
    # Lines printed before the kill landed are promises too.
    while (line := lines.get_nowait()) is not None:
        if line.endswith("\n"):
            reports.append(json.loads(line))
    assert child.returncode == -9
    last = reports[-1]
    assert last["chat"] > 0

    assert Path(f"{path}-wal").exists()  # the kill left the log for the next reader to recover
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]
    assert rows(path, "SELECT count(*) FROM utterances")[0][0] >= last["utterances"]
    assert rows(path, "SELECT count(*) FROM chat_messages")[0][0] >= last["chat"]
    assert rows(path, "SELECT count(*) FROM bot_replies")[0][0] >= last["replies"]
    # And the file opens again as a store, ready to go on.
    copy = tmp_path / "again.sqlite"
    shutil.copy(path, copy)
    assert rows(copy, "PRAGMA user_version")[0][0] == len(load_migrations())


# -- streams left open by a killed writer ----------------------------------------------


def _kill_writer_child(path: Path, lines_before_kill: int = 2) -> None:
    """Run ``store_writer_child.py`` on ``path`` and SIGKILL it after some committed lines."""
    with subprocess.Popen(
        [sys.executable, str(CHILD), str(path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as child:  # fmt: skip
        try:
            for _ in range(lines_before_kill):
                if not child.stdout.readline():
                    pytest.fail(f"writer child exited early: {child.stderr.read()}")
        finally:
            child.kill()  # SIGKILL: end_stream never runs
            child.wait(timeout=30)
    assert child.returncode == -9


@pytest.mark.asyncio
async def test_a_stream_of_a_killed_writer_is_closed_at_its_last_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "killed.sqlite"
    _kill_writer_child(path)
    ((stream_id, ended, cleanly),) = rows(path, "SELECT id, ended_at, ended_cleanly FROM streams")
    assert ended is None and cleanly is None  # what the kill leaves: open forever, until now
    last = max(
        rows(path, f"SELECT max({col}) FROM {table}")[0][0]
        for table, col in (
            ("utterances", "created_at"), ("chat_messages", "received_at"),
            ("bot_replies", "created_at"),
        )
    )  # fmt: skip
    async with Store.open(path) as store:
        assert await store.count("streams") == 1
    assert rows(path, "SELECT ended_at, ended_cleanly FROM streams") == [(last, 0)]
    assert f"stream {stream_id} was left open" in caplog.text
    async with Store.open(path):  # closed once; a later start leaves it alone
        pass
    assert rows(path, "SELECT ended_at, ended_cleanly FROM streams") == [(last, 0)]


@pytest.mark.asyncio
async def test_a_live_writers_stream_stays_open_and_a_clean_end_is_marked(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    async with Store.open(path, clock=lambda: 100.0) as first:
        stream_id = await first.start_stream("live", "twitch", "chan", "m", None)
        async with Store.open(path):  # a second bot on the same file, while this one runs
            pass
        assert rows(path, "SELECT ended_at FROM streams") == [(None,)]
        await first.end_stream(stream_id)
    assert rows(path, "SELECT ended_at, ended_cleanly FROM streams") == [(100.0, 1)]


@pytest.mark.asyncio
async def test_migration_marks_old_ends_clean_and_closes_only_what_it_can_judge(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite"
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    for name in ("001_init.sql", "002_learning.sql"):
        (sql_dir / name).write_text((SQL_DIR / name).read_text())
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await migrate(db, path, load_migrations(sql_dir))
        await db.executemany(
            "INSERT INTO streams (id, name, source, started_at, ended_at) VALUES (?, ?, ?, ?, ?)",
            [(1, "ended", "replay", 10.0, 20.0), (2, "crashed before 003", "replay", 30.0, None)],
        )
        await db.execute(
            "INSERT INTO utterances (stream_id, start_s, end_s, text, created_at)"
            " VALUES (2, 0, 1, 'hi', 42.0)"
        )
    async with Store.open(path):
        pass
    async with Store.open(path) as store:
        sid = await store.start_stream("elsewhere", "replay")
    conn = sqlite3.connect(path)  # as if a bot on another machine wrote it (a shared disk)
    with conn:
        conn.execute("UPDATE streams SET writer = 'another-machine:1:1' WHERE id = ?", (sid,))
    conn.close()
    async with Store.open(path):
        pass
    assert rows(path, "SELECT id, ended_at, ended_cleanly FROM streams ORDER BY id") == [
        (1, 20.0, 1), (2, 42.0, 0), (sid, None, None),
    ]  # fmt: skip
