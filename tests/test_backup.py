"""``python -m bot backup FILE``: a consistent copy of the SQLite database while the real bot
takes a burst of commands, and the cases where it refuses."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import pytest

from bot.backup import BackupRefused, backup
from bot.config import StorageSettings
from bot.sandbox.telegram import FakeTelegram
from bot.schema import SCHEMA_VERSION
from bot.storage import AuditEntry, SqliteStorage, utc_now
from tests.harness import CONFIG_YAML, TOKEN
from tests.processes import CLEAN_ENV, ROOT
from tests.test_cli import run_cli
from tests.test_crash import (
    COMMANDS,
    answered_then_stopped,
    assert_nothing_lost_nothing_twice,
    audited,
    burst_portal,
    send_burst,
    started,
    write_config,
)

BOT_ID = TOKEN.split(":")[0]
ENV = {
    "BITRIX24_WEBHOOK_URL": "https://portal.example.com/rest/1/code/",
    "TELEGRAM_BOT_TOKEN": TOKEN,
}
ENTRY = AuditEntry(utc_now(), 5101, 5101, "finish", "2045", "-", "ok", 230, 7)


async def backup_process(config: Path, file: Path) -> tuple[int, str, str]:
    """``python -m bot backup FILE`` as a separate process: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "--config",
        str(config),
        "backup",
        str(file),
        cwd=ROOT,
        env={**CLEAN_ENV, "LANG": "en_US.UTF-8"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def read(path: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        rows = db.execute(query).fetchall()
    db.close()
    return rows


async def test_a_backup_taken_while_the_bot_takes_a_burst_is_whole_and_consistent(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    database = tmp_path / "handoff.sqlite3"
    portal = burst_portal()
    copies: list[tuple[Path, int, str, str]] = []
    async with (
        portal,
        FakeTelegram(TOKEN, bot_username="handoff_test_bot") as telegram,
        started(config, portal, telegram) as bot,
    ):
        burst = asyncio.create_task(send_burst(telegram, pause_s=0.1))
        await telegram.wait_for(lambda: len(portal.moves) >= 5, timeout=30, interval=0.01)
        for n in range(3):  # one after another, while the commands go on
            copy = tmp_path / "backups" / f"copy-{n}.sqlite3"
            copy.parent.mkdir(exist_ok=True)
            copies.append((copy, *await backup_process(config, copy)))
        await burst
        logs = await answered_then_stopped(telegram, bot)
    # the bot noticed nothing: every command answered once, audited, nothing done twice
    assert_nothing_lost_nothing_twice(portal, telegram, audited(config))
    assert "Traceback" not in logs and "locked" not in logs
    final = read(database, "SELECT * FROM audit ORDER BY id")
    assert len(final) == COMMANDS
    counts = []
    for copy, code, out, err in copies:
        assert (code, err) == (0, ""), err
        rows = read(copy, "SELECT * FROM audit ORDER BY id")
        assert out == (
            f"wrote {copy}: a copy of {database} ({copy.stat().st_size / 1024:,.0f} KB,"
            f" {len(rows)} audit rows, schema version {SCHEMA_VERSION})\n"
        )
        assert read(copy, "PRAGMA integrity_check") == [("ok",)]
        assert read(copy, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        assert read(copy, "PRAGMA journal_mode") == [("delete",)], "one file, no -wal beside it"
        # the database as of one moment: the rows written by then, none half-written
        assert rows and rows == final[: len(rows)]
        marks = {key for (key,) in read(copy, "SELECT key FROM marks")}
        assert {f"u:{BOT_ID}:{row[-1]}" for row in rows} <= marks, "each row's update marked"
        counts.append(len(rows))
    assert counts == sorted(counts)
    assert counts[0] < COMMANDS, "the first copy was taken mid-burst"
    assert not list((tmp_path / "backups").glob(".*")), "no partial file left"
    print(f"audit rows in the copies: {counts} of {COMMANDS}")


def config_with(folder: Path, storage: str) -> Path:
    config = folder / "config.yaml"
    config.write_text(
        CONFIG_YAML.replace('storage: {path: "${STORAGE_PATH:-:memory:}"}', f"storage: {storage}")
    )
    return config


async def written_database(path: Path) -> None:
    storage = SqliteStorage(str(path), "before-backup")
    await storage.open()
    await storage.record([ENTRY])
    await storage.close()


def test_no_database_yet_is_refused(tmp_path: Path) -> None:
    config = config_with(tmp_path, "{path: handoff.sqlite3}")
    result = run_cli("--config", str(config), "backup", str(tmp_path / "copy.sqlite3"), env=ENV)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"no database at {tmp_path / 'handoff.sqlite3'} (storage.path): nothing to back up\n"
    )
    assert not (tmp_path / "copy.sqlite3").exists()


def test_postgres_is_refused_with_a_pointer_to_pg_dump(tmp_path: Path) -> None:
    config = config_with(tmp_path, "{url: 'postgresql://bot:s3cret-pw@db.internal/handoff'}")
    result = run_cli("--config", str(config), "backup", str(tmp_path / "copy.sqlite3"), env=ENV)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "the storage is PostgreSQL (storage.url): back it up with pg_dump,"
        " e.g. pg_dump --format=custom --file=handoff.dump <database>\n"
    )
    assert "s3cret-pw" not in result.stderr


async def test_an_existing_file_is_replaced_only_with_force(tmp_path: Path) -> None:
    config = config_with(tmp_path, "{path: handoff.sqlite3}")
    await written_database(tmp_path / "handoff.sqlite3")
    copy = tmp_path / "copy.sqlite3"
    copy.write_text("last week's backup")
    refused = run_cli("--config", str(config), "backup", str(copy), env=ENV)
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == f"{copy} exists: name another file, or add --force to replace it\n"
    assert copy.read_text() == "last week's backup"
    forced = run_cli("--config", str(config), "backup", str(copy), "--force", env=ENV)
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.startswith(f"wrote {copy}: a copy of {tmp_path / 'handoff.sqlite3'} (")
    assert forced.stdout.endswith(f", 1 audit rows, schema version {SCHEMA_VERSION})\n")
    assert read(copy, "SELECT action, dialog, outcome FROM audit") == [("finish", "2045", "ok")]


async def test_the_database_itself_a_missing_folder_or_memory_are_refused(
    tmp_path: Path,
) -> None:
    database = tmp_path / "handoff.sqlite3"
    await written_database(database)
    settings = StorageSettings(path=str(database))
    with pytest.raises(BackupRefused, match="is the database itself: name another file"):
        backup(settings, database, force=True)
    assert read(database, "SELECT dialog FROM audit") == [("2045",)]
    with pytest.raises(BackupRefused, match=r"the folder .*nowhere does not exist"):
        backup(settings, tmp_path / "nowhere" / "copy.sqlite3")
    with pytest.raises(BackupRefused, match="no database on disk"):
        backup(StorageSettings(path=":memory:"), tmp_path / "copy.sqlite3")
