"""Numbered SQL migrations for the chatling store.

Each file ``sql/NNN_name.sql`` moves the schema from version ``NNN - 1`` to
``NNN``. A migration runs in ONE ``BEGIN IMMEDIATE`` transaction together with
the ``PRAGMA user_version`` bump, so a crash or a bad statement leaves the
database at the previous version, never half-migrated. Re-opening a database
applies only the files numbered above its ``user_version``; a database made by
a newer chatling (a version above the last file here) is refused with a
``StoreError`` instead of being written with a schema this code does not know.

Statements are split with ``sqlite3.complete_statement`` and run one by one
because ``executescript`` would commit the surrounding transaction first.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from chatling.core.errors import StoreError

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent / "sql"
_FILE_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered schema step, already split into statements."""

    version: int
    name: str
    path: Path
    statements: tuple[str, ...]


def split_statements(sql: str, path: Path | str = "<sql>") -> tuple[str, ...]:
    """Split a script into complete statements (comments and trigger bodies respected)."""
    statements: list[str] = []
    start = 0
    for index, char in enumerate(sql):
        if char == ";" and sqlite3.complete_statement(sql[start : index + 1]):
            statement = sql[start : index + 1].strip()
            if _has_code(statement):
                statements.append(statement)
            start = index + 1
    if _has_code(sql[start:]):
        raise StoreError(f"{path}: the last statement does not end with ';'; add it")
    return tuple(statements)


def _has_code(text: str) -> bool:
    """Whether ``text`` holds anything but blank lines, ``--`` comments and ``;``."""
    for line in text.splitlines():
        stripped = line.split("--", 1)[0].strip().strip(";").strip()
        if stripped:
            return True
    return False


def load_migrations(directory: Path = SQL_DIR) -> list[Migration]:
    """Read ``NNN_name.sql`` files in order; numbers must run 1, 2, 3... without gaps."""
    migrations: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise StoreError(f"{path}: migration files must be named NNN_name.sql; rename it")
        version = int(match.group(1))
        expected = len(migrations) + 1
        if version != expected:
            raise StoreError(f"{path}: expected migration number {expected:03d}; renumber it")
        statements = split_statements(path.read_text(encoding="utf-8"), path)
        migrations.append(Migration(version, match.group(2), path, statements))
    return migrations


async def schema_version(db: aiosqlite.Connection) -> int:
    """The version recorded in the database header (0 for a new file)."""
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def migrate(
    db: aiosqlite.Connection, path: Path, migrations: list[Migration] | None = None
) -> list[int]:
    """Bring the database at ``path`` to the newest version; return the versions applied.

    ``db`` must be in autocommit mode (``isolation_level=None``): this function
    owns the transactions.
    """
    migrations = load_migrations() if migrations is None else migrations
    latest = migrations[-1].version if migrations else 0
    current = await schema_version(db)
    if current > latest:
        raise StoreError(
            f"{path}: schema version {current} is newer than this chatling knows "
            f"(up to {latest}); upgrade chatling, or set CHATLING_STORAGE__DB_PATH to another file"
        )
    applied: list[int] = []
    for migration in migrations:
        if migration.version <= current:
            continue
        if await _apply(db, migration):
            applied.append(migration.version)
            log.info("%s: applied migration %s", path, migration.path.name)
    return applied


async def _apply(db: aiosqlite.Connection, migration: Migration) -> bool:
    """Run one migration and its version bump in one transaction; False if already there."""
    await db.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have migrated between our first read and the lock.
        if await schema_version(db) >= migration.version:
            await db.execute("ROLLBACK")
            return False
        for statement in migration.statements:
            await db.execute(statement)
        await db.execute(f"PRAGMA user_version = {migration.version:d}")
        await db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            await db.execute("ROLLBACK")
        raise
    return True
