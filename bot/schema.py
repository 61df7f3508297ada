"""The storage schema's versions: a database says which version its tables are at, and opening
an older one brings it up to date in one transaction (a failed step leaves it as it was).

SQLite keeps the number in ``PRAGMA user_version``, PostgreSQL in a one-row ``schema_version``
table. Step *n* takes a database from version *n - 1* to *n*:

1. the tables as the release before the inbox wrote them;
2. the inbox: ``marks.payload`` and ``marks.sent``, and the index of the open marks.

Databases written before versions existed say 0 (or have no ``schema_version`` table) whatever
their shape, so every step finds out what is there already and adds only what is missing.
A database at a version newer than this code knows is refused, never used.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # asyncpg only where PostgreSQL is used
    from asyncpg import Connection
    from asyncpg.pool import PoolConnectionProxy

    PgConnection = Connection | PoolConnectionProxy


class SchemaTooNew(Exception):
    """The database was written by a newer release of the bot than this one."""

    def __init__(self, where: str, found: int, known: int) -> None:
        super().__init__(
            f"{where}: the database is at schema version {found}, this bot knows up to {known}:"
            " run the release that wrote it, or restore the backup taken before the upgrade"
        )
        self.found = found
        self.known = known


# ---- SQLite -------------------------------------------------------------------------------

SqliteStep = Callable[[sqlite3.Connection], None]

_SQLITE_TABLES = (
    """CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,          -- ISO 8601, UTC
    user_id INTEGER NOT NULL,
    chat_id INTEGER NOT NULL,
    action TEXT NOT NULL,        -- transfer | finish
    dialog TEXT NOT NULL,        -- the Bitrix24 CHAT_ID (or the number as typed if unknown)
    target TEXT NOT NULL,        -- user:15 | queue:3 | - (finish)
    outcome TEXT NOT NULL,       -- ok | already | duplicate | an error code | DUPLICATE_UPDATE
    latency_ms INTEGER NOT NULL,
    update_id INTEGER
)""",
    "CREATE INDEX IF NOT EXISTS audit_dialog ON audit (dialog, id)",
    "CREATE INDEX IF NOT EXISTS audit_target ON audit (target, id)",
    "CREATE INDEX IF NOT EXISTS audit_time ON audit (time)",
    """CREATE TABLE IF NOT EXISTS pending (
    key TEXT PRIMARY KEY,        -- <chat_id>:<message_id> of the message with the buttons
    data TEXT NOT NULL,          -- what the buttons stand for, as JSON
    created REAL NOT NULL,       -- Unix time
    claimed INTEGER NOT NULL DEFAULT 0
)""",
    """CREATE TABLE IF NOT EXISTS about (
    key TEXT PRIMARY KEY,        -- <chat_id>:<message_id> of a message of the bot
    dialogs TEXT NOT NULL,       -- the dialogs it is about, as JSON
    created REAL NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS marks (
    key TEXT PRIMARY KEY,        -- u:<bot_id>:<update_id>
    taken_at TEXT NOT NULL,
    boot TEXT NOT NULL,          -- which run of the bot holds it
    done INTEGER NOT NULL DEFAULT 0
)""",
)
_SQLITE_INBOX_COLUMNS = {
    "payload": "TEXT",  # the update as Telegram sent it (JSON), to finish it after a crash
    "sent": "INTEGER NOT NULL DEFAULT 0",  # 1 once a write to Bitrix24 may have gone out
}


def _sqlite_tables(db: sqlite3.Connection) -> None:
    for statement in _SQLITE_TABLES:
        db.execute(statement)


def _sqlite_inbox(db: sqlite3.Connection) -> None:
    # SQLite has no ADD COLUMN IF NOT EXISTS; the release before versions added them itself
    have = {row[1] for row in db.execute("PRAGMA table_info(marks)")}
    for column, kind in _SQLITE_INBOX_COLUMNS.items():
        if column not in have:
            db.execute(f"ALTER TABLE marks ADD COLUMN {column} {kind}")
    db.execute("CREATE INDEX IF NOT EXISTS marks_open ON marks (taken_at) WHERE done = 0")


SQLITE_STEPS: tuple[SqliteStep, ...] = (_sqlite_tables, _sqlite_inbox)
SCHEMA_VERSION = len(SQLITE_STEPS)
"""The version this code writes and reads."""


def sqlite_version(db: sqlite3.Connection) -> int:
    """The schema version an SQLite database is at (0: none yet, or written before versions)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate_sqlite(
    db: sqlite3.Connection, where: str, steps: Sequence[SqliteStep] = SQLITE_STEPS
) -> int:
    """Bring an SQLite database (in autocommit mode) up to the newest version in one
    transaction; returns the version it was at. Raises :class:`SchemaTooNew`."""
    # IMMEDIATE: a second process opening the file at the same moment waits, then finds it done
    db.execute("BEGIN IMMEDIATE")
    try:
        found = sqlite_version(db)
        if found > len(steps):
            raise SchemaTooNew(where, found, len(steps))
        for step in steps[found:]:
            step(db)
        if found < len(steps):
            db.execute(f"PRAGMA user_version = {len(steps):d}")
    except BaseException:
        if db.in_transaction:  # SQLite ends it itself after some errors (a full disk)
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return found


# ---- PostgreSQL ---------------------------------------------------------------------------

_PG_TABLES = """
CREATE TABLE IF NOT EXISTS audit (
    id BIGSERIAL PRIMARY KEY,
    time TIMESTAMPTZ NOT NULL,
    user_id BIGINT NOT NULL,
    chat_id BIGINT NOT NULL,
    action TEXT NOT NULL,
    dialog TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    latency_ms INTEGER NOT NULL,
    update_id BIGINT
);
CREATE INDEX IF NOT EXISTS audit_dialog ON audit (dialog, id);
CREATE INDEX IF NOT EXISTS audit_target ON audit (target, id);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time);
CREATE TABLE IF NOT EXISTS pending (
    key TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    claimed BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE IF NOT EXISTS about (
    key TEXT PRIMARY KEY,
    dialogs TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS boots (
    boot TEXT PRIMARY KEY,
    seen TIMESTAMPTZ NOT NULL    -- a heartbeat: a run not seen for a while has died
);
CREATE TABLE IF NOT EXISTS marks (
    key TEXT PRIMARY KEY,
    taken_at TIMESTAMPTZ NOT NULL,
    boot TEXT NOT NULL,
    done BOOLEAN NOT NULL DEFAULT FALSE
);
"""
_PG_INBOX = """
ALTER TABLE marks ADD COLUMN IF NOT EXISTS payload TEXT;
ALTER TABLE marks ADD COLUMN IF NOT EXISTS sent BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX IF NOT EXISTS marks_open ON marks (taken_at) WHERE NOT done;
"""
PG_STEPS: tuple[str, ...] = (_PG_TABLES, _PG_INBOX)
assert len(PG_STEPS) == SCHEMA_VERSION, "one step per version in both databases"

_PG_LOCK = 4242  # an advisory lock: several instances starting together migrate one at a time


async def postgres_version(db: PgConnection) -> int:
    """The schema version a PostgreSQL database is at (0: none yet, or written before
    versions)."""
    table = await db.fetchval("SELECT to_regclass('schema_version')")
    if table is None:
        return 0
    return int(await db.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))


async def migrate_postgres(db: PgConnection, where: str, steps: Sequence[str] = PG_STEPS) -> int:
    """Bring a PostgreSQL database up to the newest version in one transaction; returns the
    version it was at. Raises :class:`SchemaTooNew`."""
    async with db.transaction():
        await db.execute(f"SELECT pg_advisory_xact_lock({_PG_LOCK})")  # until the commit
        found = await postgres_version(db)
        if found > len(steps):
            raise SchemaTooNew(where, found, len(steps))
        for step in steps[found:]:
            await db.execute(step)
        if found < len(steps):
            await db.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),"
                " version INTEGER NOT NULL)"
            )
            await db.execute(
                "INSERT INTO schema_version (version) VALUES ($1)"
                " ON CONFLICT (only_row) DO UPDATE SET version = EXCLUDED.version",
                len(steps),
            )
    return found
