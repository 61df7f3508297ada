"""Schema versions in PostgreSQL, through the suite's real server: an old schema is brought up
to date in one transaction when the bot connects, keeping its rows; a newer one is refused."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from bot.sandbox.telegram import FakeTelegram
from bot.schema import PG_STEPS, SCHEMA_VERSION, SchemaTooNew, migrate_postgres
from bot.storage import AuditEntry, Mark, utc_now
from bot.storage_pg import PostgresStorage
from tests import test_postgres
from tests.conftest import make_portal
from tests.harness import CONFIG_YAML, TOKEN, fakes_env
from tests.processes import bot_process

postgres = test_postgres.postgres  # the suite's throwaway PostgreSQL server

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ENTRY = AuditEntry(
    datetime(2026, 10, 1, 8, 0, tzinfo=UTC), 5101, 5101, "transfer", "1999", "queue:3", "ok", 310, 4
)
FINISH = AuditEntry(
    datetime(2026, 10, 1, 8, 5, tzinfo=UTC), 5102, 5102, "finish", "1998", "-", "closed", 95, None
)

# the tables as the release before the inbox created them (git show 49e4808^:bot/storage_pg.py)
PRE_INBOX = """
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
    seen TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS marks (
    key TEXT PRIMARY KEY,
    taken_at TIMESTAMPTZ NOT NULL,
    boot TEXT NOT NULL,
    done BOOLEAN NOT NULL DEFAULT FALSE
);
"""
# what the release before versions added to it (git show 52df684:bot/storage_pg.py)
INBOX = """
ALTER TABLE marks ADD COLUMN IF NOT EXISTS payload TEXT;
ALTER TABLE marks ADD COLUMN IF NOT EXISTS sent BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX IF NOT EXISTS marks_open ON marks (taken_at) WHERE NOT done;
"""
_numbers = itertools.count()


@pytest.fixture
async def database(postgres: str) -> AsyncIterator[str]:
    """The URL of an empty database of its own on the suite's server."""
    name = f"schema_{next(_numbers)}"
    admin = await asyncpg.connect(postgres)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    yield postgres.rsplit("/", 1)[0] + f"/{name}"


async def old_database(url: str, schema: str) -> None:
    """Tables of an older release, with the rows it left: two audit rows, a done mark and an
    open one, a button and a note."""
    db = await asyncpg.connect(url)
    try:
        await db.execute(schema)
        for e in (ENTRY, FINISH):
            await db.execute(
                "INSERT INTO audit (time, user_id, chat_id, action, dialog, target, outcome,"
                " latency_ms, update_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                e.time,
                e.user_id,
                e.chat_id,
                e.action,
                e.dialog,
                e.target,
                e.outcome,
                e.latency_ms,
                e.update_id,
            )
        await db.executemany(
            "INSERT INTO marks (key, taken_at, boot, done) VALUES ($1, $2, 'old-run', $3)",
            [("u:4", utc_now(), True), ("u:5", utc_now(), False)],
        )
        now = utc_now().timestamp()
        await db.execute("INSERT INTO pending VALUES ('5101:7', '{}', $1, FALSE)", now)
        await db.execute("INSERT INTO about VALUES ('5101:8', '[1999]', $1)", now)
    finally:
        await db.close()


async def facts(url: str) -> dict[str, object]:
    """The schema version (None: no table), the columns of ``marks``, the tables."""
    db = await asyncpg.connect(url)
    try:
        has_version = await db.fetchval("SELECT to_regclass('schema_version')") is not None
        return {
            "version": (
                await db.fetchval("SELECT version FROM schema_version") if has_version else None
            ),
            "marks": sorted(
                r["column_name"]
                for r in await db.fetch(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = 'marks'"
                )
            ),
            "tables": sorted(
                r["tablename"]
                for r in await db.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                )
            ),
        }
    finally:
        await db.close()


CURRENT_MARKS = ["boot", "done", "key", "payload", "sent", "taken_at"]


async def test_a_schema_from_before_the_inbox_is_migrated_keeping_its_rows(database: str) -> None:
    await old_database(database, PRE_INBOX)
    assert (await facts(database))["version"] is None
    storage = PostgresStorage(database, "after-upgrade")
    await storage.open()
    try:
        assert await storage.since(EPOCH) == [ENTRY, FINISH]
        assert await storage.take("u:4", "{}") is Mark.DONE
        assert await storage.take("u:5", "{}") is Mark.RESUMED, "its run is gone, sent nothing"
        assert await storage.get_pending("5101:7", 0) == ("{}", False)
        assert await storage.about("5101:8") == "[1999]"
        assert await storage.take("u:6", '{"update_id": 6}') is Mark.NEW, "the inbox works"
        await storage.sending("u:6")
    finally:
        await storage.close()
    found = await facts(database)
    assert (found["version"], found["marks"]) == (SCHEMA_VERSION, CURRENT_MARKS)


async def test_a_schema_of_the_release_before_versions_gets_its_version(database: str) -> None:
    await old_database(database, PRE_INBOX + INBOX)
    db = await asyncpg.connect(database)
    await db.execute(
        "UPDATE marks SET payload = $1, sent = TRUE WHERE key = 'u:5'", '{"update_id": 5}'
    )
    await db.close()
    storage = PostgresStorage(database, "after-upgrade")
    await storage.open()
    try:
        assert await storage.since(EPOCH) == [ENTRY, FINISH]
        assert await storage.orphans() == [("u:5", '{"update_id": 5}')]
        assert await storage.take("u:5", "{}") is Mark.CUT_OFF, "it had sent: never again"
    finally:
        await storage.close()
    assert (await facts(database))["version"] == SCHEMA_VERSION


async def test_instances_starting_together_on_an_old_schema_migrate_it_once(database: str) -> None:
    await old_database(database, PRE_INBOX)
    instances = [PostgresStorage(database, f"boot-{n}") for n in range(3)]
    await asyncio.gather(*(s.open() for s in instances))
    try:
        for storage in instances:
            assert await storage.since(EPOCH) == [ENTRY, FINISH]
    finally:
        await asyncio.gather(*(s.close() for s in instances))
    assert (await facts(database))["version"] == SCHEMA_VERSION


async def test_a_schema_of_a_newer_release_is_refused_and_left_alone(database: str) -> None:
    storage = PostgresStorage(database, "newer-release")
    await storage.open()
    await storage.record([ENTRY])
    await storage.close()
    db = await asyncpg.connect(database)
    await db.execute("UPDATE schema_version SET version = $1", SCHEMA_VERSION + 1)
    await db.close()
    before = await facts(database)
    storage = PostgresStorage(database, "older-release")
    with pytest.raises(SchemaTooNew) as refused:
        await storage.open()
    assert str(refused.value) == (
        f"storage.url: the database is at schema version {SCHEMA_VERSION + 1},"
        f" this bot knows up to {SCHEMA_VERSION}: run the release that wrote it,"
        " or restore the backup taken before the upgrade"
    )
    assert "postgres@" not in str(refused.value), "the URL (and its password) is not in it"
    assert await facts(database) == before
    with pytest.raises(RuntimeError, match="not open"):
        await storage.since(EPOCH)  # never used


async def test_a_failed_postgres_migration_leaves_the_schema_as_it_was(database: str) -> None:
    await old_database(database, PRE_INBOX)
    before = await facts(database)
    db = await asyncpg.connect(database)
    try:
        breaks_halfway = "CREATE TABLE half_done (x INTEGER); SELECT 1 / 0"
        with pytest.raises(asyncpg.DivisionByZeroError):
            await migrate_postgres(db, "storage.url", (*PG_STEPS, breaks_halfway))
    finally:
        await db.close()
    # neither the inbox columns of step 2, the version, nor the half-done step 3
    assert await facts(database) == before
    storage = PostgresStorage(database, "after-upgrade")
    await storage.open()
    try:
        assert await storage.since(EPOCH) == [ENTRY, FINISH]
    finally:
        await storage.close()


async def test_the_bot_refuses_to_start_on_a_newer_schema(database: str, tmp_path: Path) -> None:
    storage = PostgresStorage(database, "newer-release")
    await storage.open()
    await storage.close()
    db = await asyncpg.connect(database)
    await db.execute("UPDATE schema_version SET version = $1", SCHEMA_VERSION + 1)
    await db.close()
    config = tmp_path / "config.yaml"
    config.write_text(
        CONFIG_YAML.replace(
            'storage: {path: "${STORAGE_PATH:-:memory:}"}', f"storage: {{url: '{database}'}}"
        )
    )
    portal = make_portal()
    async with portal, FakeTelegram(TOKEN, bot_username="handoff_test_bot") as telegram:
        env = fakes_env(portal, telegram)
        async with bot_process(config, **env) as process:
            code = await process.finish()
        assert telegram.calls_to("getUpdates") == [], "it never took an update"
    assert code == 2, process.stderr
    assert process.lines[-1] == (
        f"storage.url: the database is at schema version {SCHEMA_VERSION + 1},"
        f" this bot knows up to {SCHEMA_VERSION}: run the release that wrote it,"
        " or restore the backup taken before the upgrade"
    )
    assert "Traceback" not in process.stderr
    assert portal.calls == [], "nor called the portal"
