"""Schema versions: a database written by an older release is brought up to date when the bot
opens it, in one transaction, keeping every row; one written by a newer release is refused.

``fixtures/handoff-v2.sqlite3`` is a database as the release before versions wrote it
(``fixtures/make_handoff_v2.py`` made it); the pre-inbox shape is built here from that
release's CREATE statements.
"""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import bot.storage
from bot.config import StorageSettings
from bot.schema import SCHEMA_VERSION, SQLITE_STEPS, SchemaTooNew, migrate_sqlite
from bot.storage import AuditEntry, Mark, SqliteStorage
from bot.telegram_start import storage_problem
from tests.fixtures import make_handoff_v2 as made
from tests.harness import CONFIG_YAML, TOKEN
from tests.processes import bot_process

FIXTURE = Path(__file__).parent / "fixtures" / "handoff-v2.sqlite3"
WRITTEN = datetime(2026, 12, 3, 9, 16, 48, tzinfo=UTC)  # when make_handoff_v2.py ran
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# the tables as the release before the inbox created them (git show 49e4808^:bot/storage.py)
PRE_INBOX = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    chat_id INTEGER NOT NULL,
    action TEXT NOT NULL,
    dialog TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    latency_ms INTEGER NOT NULL,
    update_id INTEGER
);
CREATE INDEX IF NOT EXISTS audit_dialog ON audit (dialog, id);
CREATE INDEX IF NOT EXISTS audit_target ON audit (target, id);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time);
CREATE TABLE IF NOT EXISTS pending (
    key TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    created REAL NOT NULL,
    claimed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS about (
    key TEXT PRIMARY KEY,
    dialogs TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS marks (
    key TEXT PRIMARY KEY,
    taken_at TEXT NOT NULL,
    boot TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0
);
"""
OLD_ENTRY = AuditEntry(
    datetime(2026, 10, 1, 8, 0, tzinfo=UTC), 5101, 5101, "transfer", "1999", "queue:3", "ok", 310, 4
)


@pytest.fixture
def written_day(monkeypatch: pytest.MonkeyPatch) -> None:
    """The clock of the day the fixture was written: opening forgets marks, buttons and notes
    older than a week, and the fixture's must still be there, whenever the test runs."""
    monkeypatch.setattr(bot.storage, "utc_now", lambda: WRITTEN + timedelta(hours=1))


def pre_inbox_database(path: Path) -> None:
    """A database as the release before the inbox left it: an audit row, a done mark and an
    open one (no payload: that release kept none), a button and a note."""
    with sqlite3.connect(path) as db:
        db.executescript(PRE_INBOX)
        db.execute(
            "INSERT INTO audit (time, user_id, chat_id, action, dialog, target, outcome,"
            " latency_ms, update_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                OLD_ENTRY.time.isoformat(),
                OLD_ENTRY.user_id,
                OLD_ENTRY.chat_id,
                OLD_ENTRY.action,
                OLD_ENTRY.dialog,
                OLD_ENTRY.target,
                OLD_ENTRY.outcome,
                OLD_ENTRY.latency_ms,
                OLD_ENTRY.update_id,
            ),
        )
        now = bot.storage.utc_now()
        db.executemany(
            "INSERT INTO marks (key, taken_at, boot, done) VALUES (?, ?, 'old-run', ?)",
            [("u:4", now.isoformat(), 1), ("u:5", now.isoformat(), 0)],
        )
        db.execute("INSERT INTO pending VALUES ('5101:7', '{}', ?, 0)", (now.timestamp(),))
        db.execute("INSERT INTO about VALUES ('5101:8', '[1999]', ?)", (now.timestamp(),))
    db.close()


def shape(path: Path) -> dict[str, object]:
    """Every table's columns (name, type, not null, default) and every index, by name."""
    with sqlite3.connect(path) as db:
        names = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        tables = {n: sorted(r[1:5] for r in db.execute(f"PRAGMA table_info({n})")) for n in names}
        indexes = sorted(
            n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        )
    db.close()
    return {"tables": tables, "indexes": indexes}


def version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        found = int(db.execute("PRAGMA user_version").fetchone()[0])
    db.close()
    return found


async def opened(path: Path, boot: str = "after-upgrade") -> SqliteStorage:
    storage = SqliteStorage(str(path), boot)
    await storage.open()
    return storage


async def fresh_shape(tmp_path: Path) -> dict[str, object]:
    """The tables a database gets when this release creates it."""
    storage = await opened(tmp_path / "fresh.sqlite3")
    await storage.close()
    return shape(tmp_path / "fresh.sqlite3")


async def test_a_database_of_the_release_before_versions_keeps_every_row_and_mark(
    tmp_path: Path, written_day: None
) -> None:
    path = tmp_path / "handoff.sqlite3"
    shutil.copy(FIXTURE, path)
    assert version(path) == 0
    storage = await opened(path)
    try:
        assert version(path) == SCHEMA_VERSION
        assert await storage.since(EPOCH) == made.ENTRIES, "every audit row, values equal"
        assert [e.action for e in await storage.history(target="-")] == ["finish", "finish"]
        # the marks: the done one drops a redelivery; the two left open by the run that wrote
        # the file are finished now, the one that had sent is looked at, never sent again
        assert await storage.orphans() == [
            ("u:12345:700005", '{"update_id": 700005}'),
            ("u:12345:700006", '{"update_id": 700006}'),
        ]
        assert await storage.take("u:12345:700001", "{}") is Mark.DONE
        assert await storage.take("u:12345:700005", "{}") is Mark.CUT_OFF
        assert await storage.take("u:12345:700006", "{}") is Mark.RESUMED
        since = (WRITTEN - timedelta(minutes=15)).timestamp()
        assert await storage.get_pending("5102:42", since) == (
            '{"dialogs": [2044], "target": "queue:3"}',
            True,
        )
        assert await storage.claim_pending("5101:41", since) == (
            '{"dialogs": [2043], "target": "user:15"}'
        )
        assert await storage.about("-1001234567890:43") == "[2043, 2044]"
    finally:
        await storage.close()
    assert shape(path) == await fresh_shape(tmp_path), "the same tables as a new database"
    # opened again: nothing left to do, nothing lost
    storage = await opened(path, boot="second-start")
    try:
        assert len(await storage.since(EPOCH)) == len(made.ENTRIES)
    finally:
        await storage.close()


async def test_a_database_from_before_the_inbox_gains_the_inbox_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "handoff.sqlite3"
    pre_inbox_database(path)
    storage = await opened(path)
    try:
        assert version(path) == SCHEMA_VERSION
        assert await storage.since(EPOCH) == [OLD_ENTRY]
        assert await storage.take("u:4", "{}") is Mark.DONE
        assert await storage.orphans() == [], "that release kept no updates to finish"
        assert await storage.take("u:5", "{}") is Mark.RESUMED, "it sent nothing it noted"
        assert await storage.get_pending("5101:7", 0) == ("{}", False)
        assert await storage.about("5101:8") == "[1999]"
        # and the inbox works in it
        assert await storage.take("u:6", '{"update_id": 6}') is Mark.NEW
        await storage.sending("u:6")
    finally:
        await storage.close()
    assert shape(path) == await fresh_shape(tmp_path)


async def test_a_database_of_a_newer_release_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "handoff.sqlite3"
    storage = await opened(path, boot="newer-release")
    await storage.record([OLD_ENTRY])
    await storage.close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        db.execute("ALTER TABLE audit ADD COLUMN channel TEXT")  # something this code lacks
    db.close()
    before = shape(path)
    with pytest.raises(SchemaTooNew) as refused:
        await opened(path)
    line = str(refused.value)
    assert line == (
        f"storage.path {path}: the database is at schema version {SCHEMA_VERSION + 1},"
        f" this bot knows up to {SCHEMA_VERSION}: run the release that wrote it,"
        " or restore the backup taken before the upgrade"
    )
    assert (shape(path), version(path)) == (before, SCHEMA_VERSION + 1)
    # the bot says so before it contacts anything
    assert storage_problem(StorageSettings(path=str(path))) == line


def test_a_file_that_is_not_a_database_is_named_before_the_start(tmp_path: Path) -> None:
    path = tmp_path / "handoff.sqlite3"
    path.write_text("operators:\n  - anna\n" * 200)  # a config copied to the wrong name
    assert storage_problem(StorageSettings(path=str(path))) == (
        f"storage.path {path}: file is not a database"
    )


async def test_the_bot_refuses_to_start_on_a_newer_database(tmp_path: Path) -> None:
    path = tmp_path / "handoff.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 3}")
    db.close()
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG_YAML.replace("${STORAGE_PATH:-:memory:}", "handoff.sqlite3"))
    env = {
        "BITRIX24_WEBHOOK_URL": "https://portal.example.com/rest/1/code/",
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_URL": "http://127.0.0.1:9",  # nothing listens: it must not get that far
    }
    async with bot_process(config, **env) as process:
        code = await process.finish()
    assert code == 2
    assert process.lines == [
        f"storage.path {path}: the database is at schema version {SCHEMA_VERSION + 3},"
        f" this bot knows up to {SCHEMA_VERSION}: run the release that wrote it,"
        " or restore the backup taken before the upgrade"
    ]
    assert version(path) == SCHEMA_VERSION + 3


async def test_a_failed_migration_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "handoff.sqlite3"
    pre_inbox_database(path)
    before = shape(path)

    def breaks_halfway(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half_done (x INTEGER)")
        db.execute("INSERT INTO audit SELECT * FROM audit WHERE 0")
        raise sqlite3.OperationalError("disk I/O error")  # the step fails after writing

    db = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        migrate_sqlite(db, str(path), (*SQLITE_STEPS, breaks_halfway))
    assert not db.in_transaction
    db.close()
    # neither the inbox columns of step 2 nor the half-done step 3: as it was
    assert (shape(path), version(path)) == (before, 0)
    storage = await opened(path)  # and this release still opens it
    try:
        assert await storage.since(EPOCH) == [OLD_ENTRY]
    finally:
        await storage.close()
    assert version(path) == SCHEMA_VERSION
