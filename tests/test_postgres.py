"""Several instances on one PostgreSQL: the suite starts a real server (Debian's postgresql,
installed by .ci/run) and two bots that receive the same update at the same moment."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bot.app import build_app, build_bot
from bot.config import load_config, parse_config
from bot.sandbox.telegram import FakeTelegram
from bot.storage import AuditEntry, Mark, open_storage, utc_now
from bot.storage_pg import PostgresStorage
from bot.webhook import build_web_app
from tests.conftest import ANNA, make_portal
from tests.harness import CONFIG_YAML, OLGA, TOKEN, fakes_env
from tests.test_e2e_audit import command

SECRET = "two-instances-secret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server on 127.0.0.1, run as the postgres user."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not binaries and os.geteuid() == 0:  # a fresh machine: bring Debian's package
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True, timeout=300)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "postgresql"],
            check=False,
            capture_output=True,
            timeout=600,
        )
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    assert binaries, "PostgreSQL is not installed: apt-get install postgresql (as .ci/run does)"
    pg = binaries[-1]
    base = tempfile.mkdtemp(prefix="handoff-pg-", dir="/tmp")
    shutil.chown(base, "postgres")
    port = _free_port()

    def as_postgres(*args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=120
        )

    as_postgres(f"{pg}/initdb", "-D", f"{base}/data", "-A", "trust", "-U", "postgres", "--no-sync")
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    as_postgres(
        f"{pg}/pg_ctl", "-D", f"{base}/data", "-w", "-o", options, "-l", f"{base}/log", "start"
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        as_postgres(f"{pg}/pg_ctl", "-D", f"{base}/data", "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


async def test_marks_are_taken_once_across_instances(postgres: str) -> None:
    one, two = PostgresStorage(postgres, "boot-one"), PostgresStorage(postgres, "boot-two")
    await one.open()
    await two.open()
    try:
        results = await asyncio.gather(one.take("u:1", "{}"), two.take("u:1", "{}"))
        assert sorted(results) == sorted([Mark.NEW, Mark.RUNNING]), "one wins, one waits"
        await one.done("u:1")
        assert await two.take("u:1", "{}") is Mark.DONE
        # a run that stopped beating its heart while holding a mark: cut off
        db = one._db()
        await db.execute(
            "INSERT INTO marks (key, taken_at, boot) VALUES ('u:2', $1, 'dead-run')", utc_now()
        )
        await db.execute(
            "INSERT INTO boots (boot, seen) VALUES ('dead-run', $1)",
            utc_now() - timedelta(minutes=5),
        )
        assert await two.take("u:2", "{}") is Mark.RESUMED, "adopted: it sent nothing"
    finally:
        await one.close()
        await two.close()


async def test_the_audit_trail_in_postgres(postgres: str) -> None:
    storage = PostgresStorage(postgres, "audit")
    await storage.open()
    try:
        when = utc_now()
        await storage.record(
            [AuditEntry(when, OLGA, OLGA, "transfer", "7043", "user:15", "ok", 12, 99)]
        )
        [entry] = await storage.history(dialog="7043")
        assert (entry.time, entry.target, entry.outcome, entry.update_id) == (
            when,
            "user:15",
            "ok",
            99,
        )
        assert [e.dialog for e in await storage.since(when)] == ["7043"]
    finally:
        await storage.close()


async def test_two_instances_receiving_one_update_transfer_once(postgres: str) -> None:
    portal = make_portal()
    async with portal, FakeTelegram(TOKEN, bot_username="handoff_test_bot") as telegram:
        env = fakes_env(portal, telegram)
        text = CONFIG_YAML.replace(
            'storage: {path: "${STORAGE_PATH:-:memory:}"}', f"storage: {{url: '{postgres}'}}"
        )
        config = parse_config(text, env)
        runners, urls = [], []
        for _ in range(2):
            app, bot = build_app(config), build_bot(config)
            runner = web.AppRunner(build_web_app(app, bot, "/tg", SECRET))
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            runners.append((runner, bot))
            urls.append(f"http://127.0.0.1:{runner.addresses[0][1]}/tg")
        update = {**command("/transfer 2043 @anna"), "update_id": 31337}
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        try:
            async with aiohttp.ClientSession() as http:

                async def post(url: str) -> int:
                    async with http.post(url, json=update, headers=headers) as answer:
                        return answer.status

                assert await asyncio.gather(*(post(u) for u in urls)) == [200, 200]
                await telegram.wait_for(lambda: bool(telegram.messages_to(OLGA)), timeout=10)
                await asyncio.sleep(0.5)  # room for a second (wrong) transfer to show up
        finally:
            for runner, bot in runners:
                await runner.cleanup()
                await bot.session.close()
        assert len(portal.calls_to("imopenlines.operator.transfer")) == 1
        assert len(telegram.messages_to(OLGA)) == 1
        assert portal.dialogs[2043].owner == ANNA


async def test_button_state_is_shared_and_a_tap_wins_once(postgres: str) -> None:
    from bot.command import DialogKind, DialogRef
    from bot.pending import Action, Pending, PendingStore, Taken

    one, two = PostgresStorage(postgres, "tap-one"), PostgresStorage(postgres, "tap-two")
    await one.open()
    await two.open()
    try:
        here, there = PendingStore(one), PendingStore(two)
        refs = (DialogRef(DialogKind.CHAT, 2043),)
        await here.put((5, 9), Pending(Action.PICK, refs, user_id=OLGA))
        assert (await there.get((5, 9))) is not None, "another instance sees the buttons"
        results = await asyncio.gather(
            here.take((5, 9), lambda _: True),
            there.take((5, 9), lambda _: True),
            return_exceptions=True,
        )
        assert sum(isinstance(r, Pending) for r in results) == 1
        assert sum(isinstance(r, Taken) for r in results) == 1
        await here.remember((5, 10), refs)
        assert await there.about((5, 10)) == refs
    finally:
        await one.close()
        await two.close()


async def test_a_config_file_naming_postgres_keeps_the_audit_trail_there(
    postgres: str, tmp_path: Path
) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        f"storage:\n  path: audit.sqlite3\n  url: '{postgres}'\n", encoding="utf-8"
    )
    writer = open_storage(load_config(config_file, env={}).storage, boot="x")
    reader = open_storage(load_config(config_file, env={}).storage, boot="x")
    direct = PostgresStorage(postgres, "check")  # the server itself, not through the config
    when = utc_now()
    entry = AuditEntry(when, OLGA, OLGA, "transfer", "8043", "queue:3", "ok", 7, 4242)
    await writer.open()
    await reader.open()
    await direct.open()
    try:
        await writer.record([entry])
        assert await reader.history(dialog="8043") == [entry]
        assert await direct.history(dialog="8043") == [entry]
    finally:
        for storage in (writer, reader, direct):
            await storage.close()
    assert isinstance(writer, PostgresStorage)
    assert isinstance(reader, PostgresStorage)
    assert not (tmp_path / "audit.sqlite3").exists(), "nothing went to SQLite"


async def test_storage_url_from_the_environment_wins_over_the_file(
    postgres: str, tmp_path: Path
) -> None:
    config_file = tmp_path / "config.yaml"
    # the file names a server that does not exist; the environment names the real one
    config_file.write_text(
        "storage: {url: 'postgresql://nobody@127.0.0.1:1/nowhere'}\n", encoding="utf-8"
    )
    config = load_config(config_file, env={"STORAGE_URL": postgres})
    storage = open_storage(config.storage, boot="env")
    assert isinstance(storage, PostgresStorage)
    direct = PostgresStorage(postgres, "check")
    await storage.open()
    await direct.open()
    try:
        entry = AuditEntry(utc_now(), OLGA, OLGA, "finish", "8044", "-", "ok", 3, 4243)
        await storage.record([entry])
        assert await direct.history(dialog="8044") == [entry]
    finally:
        await storage.close()
        await direct.close()


async def test_audit_export_reads_postgres_and_creates_nothing_there(
    postgres: str, tmp_path: Path
) -> None:
    import asyncpg

    from tests.test_cli import run_cli

    admin = await asyncpg.connect(postgres)
    try:
        await admin.execute("DROP DATABASE IF EXISTS audit_fresh")
        await admin.execute("CREATE DATABASE audit_fresh")
    finally:
        await admin.close()
    fresh = postgres.rsplit("/", 1)[0] + "/audit_fresh"
    config_file = tmp_path / "config.yaml"
    config_file.write_text("storage: {url: '${STORAGE_URL}'}\n", encoding="utf-8")

    empty = await asyncio.to_thread(
        run_cli, "audit", "--config", str(config_file), env={"STORAGE_URL": fresh}
    )
    assert empty.returncode == 1
    assert empty.stderr == "PostgreSQL (storage.url): no audit trail in this database yet\n"
    db = await asyncpg.connect(fresh)
    try:
        tables = await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await db.close()
    assert tables == [], "audit created no tables"

    storage = PostgresStorage(postgres, "audit-export")
    await storage.open()
    when = utc_now()
    try:
        await storage.record([AuditEntry(when, OLGA, -100, "finish", "8045", "-", "ok", 5, 4244)])
    finally:
        await storage.close()
    since = when.isoformat().replace("+00:00", "")
    result = await asyncio.to_thread(
        run_cli,
        "audit",
        "--since",
        since,
        "--config",
        str(config_file),
        env={"STORAGE_URL": postgres},
    )
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()  # other tests of this second may show too
    assert header == "time,user_id,chat_id,dialog,target,action,outcome,latency_ms,update_id"
    assert f"{when.isoformat()},{OLGA},-100,8045,-,finish,ok,5,4244" in rows
    assert "postgres@" not in result.stdout + result.stderr
