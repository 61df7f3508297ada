"""The audit trail, /history, exactly-once marks and stale commands, end to end."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.directory import Target
from bot.inbox import update_key
from bot.sandbox.portal import Fault
from bot.storage import AuditEntry, Mark, SqliteStorage, utc_now
from tests.conftest import ANNA, make_portal
from tests.harness import CONFIG_YAML, OLGA, TOKEN, running_bot
from tests.test_cli import run_cli

TRANSFER = "imopenlines.operator.transfer"
DIALOG_GET = "imopenlines.dialog.get"
MOSCOW_YAML = CONFIG_YAML.replace("language: auto\n", "language: auto\ntimezone: Europe/Moscow\n")
BOT_ID = int(TOKEN.split(":")[0])


def command(
    text: str, user: int = OLGA, *, age_s: float = 0, message_id: int = 900
) -> dict[str, Any]:
    """A private-chat command as Telegram delivers it, sent ``age_s`` seconds ago."""
    return {
        "message": {
            "message_id": message_id,
            "date": int(time.time() - age_s),
            "chat": {"id": user, "type": "private", "first_name": "Olga"},
            "from": {"id": user, "is_bot": False, "first_name": "Olga", "language_code": "en"},
            "text": text,
            "entities": [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}],
        }
    }


async def test_every_attempt_is_recorded_before_the_reply() -> None:
    async with running_bot() as h:
        await h.say("/transfer 2043 9999 @anna")
        # the reply is out: its entries must already be there
        storage = h.app.services.storage
        [moved] = await storage.history(dialog="2043")
        [failed] = await storage.history(dialog="9999")
        assert (moved.action, moved.target, moved.outcome, moved.user_id) == (
            "transfer",
            "user:15",
            "ok",
            OLGA,
        )
        assert moved.update_id is not None and moved.latency_ms >= 0
        assert failed.outcome == "ACCESS_ERROR"
        assert [e.dialog for e in await storage.history(target="user:15")] == ["9999", "2043"]


async def test_history_by_dialog_and_by_name() -> None:
    async with running_bot() as h:
        await h.say("/transfer 2043 @anna")
        await h.say("/transfer 2043 #support")
        by_dialog = await h.say("/history 2043")
        lines = by_dialog.plain_text.splitlines()
        assert len(lines) == 2
        ivan = "2043 «Ivan Petrov — WhatsApp»"
        assert lines[0].endswith(f"UTC · {ivan} → Support line · moved · Olga")
        assert lines[1].endswith(f"UTC · {ivan} → Anna Smirnova · moved · Olga")
        by_name = await h.say("/history @anna")
        assert by_name.plain_text.splitlines()[0].endswith(f"{ivan} → Anna Smirnova · moved · Olga")
        nothing = await h.say("/history 7777")
        assert nothing.plain_text == "Nothing recorded about 7777."


async def test_history_reads_in_the_team_time_zone_with_names_and_words() -> None:
    async with running_bot(yaml_text=MOSCOW_YAML) as h:
        await h.say("/transfer 2043 @anna")
        await h.say("/transfer 9999 @anna")
        [entry] = await h.app.services.storage.history(dialog="2043")
        moscow = f"{entry.time + timedelta(hours=3):%d.%m %H:%M} MSK"  # UTC+3, all year
        looks = len(h.portal.calls_to(DIALOG_GET))
        by_dialog = await h.say("/history 2043")
        assert by_dialog.plain_text == (
            f"{moscow} · 2043 «Ivan Petrov — WhatsApp» → Anna Smirnova · moved · Olga"
        )
        ru = await h.say("/history 2043", language="ru")
        assert ru.plain_text == (
            f"{moscow} · 2043 «Ivan Petrov — WhatsApp» → Anna Smirnova · передан · Olga"
        )
        # a dialog that cannot be seen: its number alone, and why in words
        missing = await h.say("/history 9999")
        assert missing.plain_text.endswith("· 9999 → Anna Smirnova · no such dialog · Olga")
        assert len(h.portal.calls_to(DIALOG_GET)) == looks + 3, "one look per /history"


async def test_history_looks_at_each_dialog_once() -> None:
    async with running_bot() as h:
        for command in ("/transfer 2043 @anna", "/transfer 2043 @bob", "/transfer 2043 @anna"):
            await h.say(command)
        await h.say("/transfer 2044 2046 @anna")  # 2044 is hers already
        looks = len(h.portal.calls_to(DIALOG_GET))
        lines = (await h.say("/history @anna")).plain_text.splitlines()
        assert [line.split(" · ", 1)[1] for line in lines] == [
            "2046 «Oleg — VK» → Anna Smirnova · moved · Olga",
            "2044 «Maria — Telegram» → Anna Smirnova · was there already · Olga",
            "2043 «Ivan Petrov — WhatsApp» → Anna Smirnova · moved · Olga",
            "2043 «Ivan Petrov — WhatsApp» → Anna Smirnova · moved · Olga",
        ]
        assert all(" UTC · " in line for line in lines)
        assert len(h.portal.calls_to(DIALOG_GET)) == looks + 3, "three dialogs, three looks"
        finished = await h.say("/finish 2045")
        await h.tap(finished, "ok")
        assert (await h.say("/history 2045", language="ru")).plain_text.endswith(
            "· 2045 «Guest #17 — Live chat» · завершён · Olga"
        )


async def test_history_takes_one_dialog_or_one_name_at_a_time() -> None:
    async with running_bot() as h:
        for text in (
            "/history 2043 2044",
            "/history 2043, @anna",
            "/history @anna @bob",
            "/history anna 2043",
        ):
            reply = await h.say(text)
            assert reply.plain_text == (
                "One dialog or one name at a time.\n"
                "Whose history? Example: /history 2043 or /history @anna"
            )
        ru = await h.say("/history 2043 2044", language="ru")
        assert ru.plain_text.splitlines() == [
            "Только один диалог или одно имя за раз.",
            "Чья история? Пример: /history 2043 или /history @anna",
        ]
        bad = await h.say("/history user:abc")
        assert bad.plain_text.splitlines()[1:] == [
            "Whose history? Example: /history 2043 or /history @anna"
        ]
        assert h.portal.calls == []


async def test_history_of_a_queue_whose_name_has_a_number() -> None:
    # "Line 2" is one queue, not a name and a dialog
    yaml_text = CONFIG_YAML.replace("name: Support line", "name: Line 2")
    async with running_bot(yaml_text=yaml_text) as h:
        await h.say("/transfer 2043 #support")
        reply = await h.say("/history Line 2")
        assert reply.plain_text.endswith("· 2043 «Ivan Petrov — WhatsApp» → Line 2 · moved · Olga")
        # a slip in it gets "did you mean", not "one at a time"
        slip = await h.say("/history Lne 2")
        assert "Line 2" in slip.plain_text and "one name at a time" not in slip.plain_text


async def test_history_passes_a_name_of_several_words_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running_bot() as h:
        await h.say("/transfer 2043 @anna")
        directory = h.app.services.directory
        asked: list[str] = []
        resolve = directory.resolve

        def by_full_name(word: str) -> Target:
            # full names are another part's work (bot/directory.py): here, what reaches it
            asked.append(word)
            return resolve("@anna" if word == "Anna Smirnova" else word)

        monkeypatch.setattr(directory, "resolve", by_full_name)
        reply = await h.say("/history Anna Smirnova")
        assert asked == ["Anna Smirnova"]
        assert reply.plain_text.endswith(
            "· 2043 «Ivan Petrov — WhatsApp» → Anna Smirnova · moved · Olga"
        )


async def test_a_command_sent_while_the_bot_was_down_too_long_ago_is_not_carried_out() -> None:
    async with running_bot() as h:
        h.telegram.add_update(command("/transfer 2043 @anna", age_s=20 * 60))
        await h.telegram.wait_for(lambda: bool(h.telegram.messages_to(OLGA)))
        assert h.telegram.messages_to(OLGA)[0].plain_text == (
            "Not carried out: you sent this 20 min ago, while I was down. "
            "Send it again if it is still needed."
        )
        assert h.rest_calls() == []


async def test_a_recent_command_sent_while_the_bot_was_down_is_carried_out() -> None:
    async with running_bot() as h:
        h.telegram.add_update(command("/transfer 2043 @anna", age_s=5 * 60))
        await h.telegram.wait_for(lambda: bool(h.telegram.messages_to(OLGA)))
        assert h.telegram.messages_to(OLGA)[0].plain_text.startswith("✅ Dialog 2043")


async def left_by_a_dead_run(
    database: str, update: dict[str, Any], update_id: int, *, sent: bool
) -> None:
    """A run took ``update`` into its inbox and died before the end (no "done"); ``sent``:
    after it marked that a transfer may have gone out."""
    dead = SqliteStorage(database, boot="dead-run")
    key = update_key(BOT_ID, update_id)
    await dead.take(key, json.dumps({**update, "update_id": update_id}))
    if sent:
        await dead.sending(key)
    await dead.close()


async def test_an_update_cut_off_by_a_restart_is_not_run_again(tmp_path: Path) -> None:
    database = str(tmp_path / "handoff.sqlite3")
    portal = make_portal()
    async with portal:
        update = command("/transfer 2043 @anna")
        await left_by_a_dead_run(database, update, 4242, sent=True)
        portal.dialogs[2043].owner = ANNA  # what that run's transfer did
        async with running_bot(portal, env={"STORAGE_PATH": database}) as h:
            # Telegram delivers it again (it was never confirmed); the inbox has it too
            h.telegram.add_update({**update, "update_id": 4242})
            await h.telegram.wait_for(lambda: bool(h.telegram.messages_to(OLGA)))
            await h.settle()
            assert [m.plain_text.splitlines() for m in h.telegram.messages_to(OLGA)] == [
                [
                    "⚠️ I was restarted while carrying out this command, so I can't tell whether "
                    "it was done. Check before sending it again.",
                    "Now:",
                    "• 2043 «Ivan Petrov — WhatsApp» · Anna Smirnova",
                ]
            ], "told once, whichever of the two found it first"
            assert h.rest_calls() == [], "not run again"
            outcomes = [e.outcome for e in await h.app.services.storage.history(dialog="2043")]
            assert "CUT_OFF" in outcomes


async def test_a_command_a_dead_run_never_sent_is_carried_out_at_start(tmp_path: Path) -> None:
    database = str(tmp_path / "handoff.sqlite3")
    async with make_portal() as portal:
        await left_by_a_dead_run(database, command("/transfer 2043 @anna"), 77, sent=False)
        # no redelivery: Telegram was told it arrived; only the inbox knows it
        async with running_bot(portal, env={"STORAGE_PATH": database}) as h:
            await h.telegram.wait_for(lambda: bool(h.telegram.messages_to(OLGA)))
            await h.settle()
            assert [m.plain_text for m in h.telegram.messages_to(OLGA)] == [
                "✅ Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova"
            ]
            assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": ANNA}]
            [entry] = await h.app.services.storage.history(dialog="2043")
            assert (entry.outcome, entry.update_id) == ("ok", 77)


async def test_a_command_a_dead_run_may_have_sent_is_looked_at_not_resent(
    tmp_path: Path,
) -> None:
    database = str(tmp_path / "handoff.sqlite3")
    async with make_portal() as portal:
        await left_by_a_dead_run(database, command("/transfer 2043 2044 @bob"), 78, sent=True)
        async with running_bot(portal, env={"STORAGE_PATH": database}) as h:
            await h.telegram.wait_for(lambda: bool(h.telegram.messages_to(OLGA)))
            await h.settle()
            [notice] = h.telegram.messages_to(OLGA)
            assert notice.plain_text.splitlines()[1:] == [
                "Now:",
                "• 2043 «Ivan Petrov — WhatsApp» · Bob Lee",
                "• 2044 «Maria — Telegram» · Anna Smirnova",
            ]
            assert h.rest_calls() == []
            storage = h.app.services.storage
            for dialog in ("2043", "2044"):
                [entry] = await storage.history(dialog=dialog)
                assert (entry.outcome, entry.update_id) == ("CUT_OFF", 78)


async def test_a_command_taken_marked_sent_is_never_carried_out_again(tmp_path: Path) -> None:
    # a command alone is marked sent as it is taken (its first write follows at once, and one
    # sync keeps both): a run that died after taking it may have sent it
    database = str(tmp_path / "handoff.sqlite3")
    dead = SqliteStorage(database, boot="dead-run")
    assert await dead.take("u:1:5", "{}", sent=True) is Mark.NEW
    assert await dead.take("u:1:6", "{}") is Mark.NEW
    await dead.flush()
    await dead.close()
    fresh = SqliteStorage(database, boot="next-run")
    try:
        assert await fresh.take("u:1:5", "{}") is Mark.CUT_OFF
        assert await fresh.take("u:1:6", "{}") is Mark.RESUMED, "it sent nothing"
    finally:
        await fresh.close()


async def test_of_commands_taken_together_only_the_first_is_marked_sent_as_it_is_kept(
    tmp_path: Path,
) -> None:
    # the first is a command alone; the second, taken while the first is in hand, is marked
    # right before its own write (a crash before it leaves it to be carried out again)
    database = tmp_path / "handoff.sqlite3"
    async with make_portal() as portal:
        portal.inject(None, Fault.delay(1.0), times=10)  # every answer comes a second late
        async with running_bot(portal, env={"STORAGE_PATH": str(database)}) as h:
            h.telegram.send_message("/transfer 2043 @anna", user_id=OLGA)
            h.telegram.send_message("/transfer 2044 @bob", user_id=OLGA)

            def marks() -> list[tuple[str, int]]:
                with sqlite3.connect(database) as db:
                    return list(db.execute("SELECT key, sent FROM marks ORDER BY rowid"))

            await h.telegram.wait_for(lambda: len(marks()) == 2)
            assert [sent for _, sent in marks()] == [1, 0], "only the first, as it was kept"
            await h.telegram.wait_for(lambda: len(h.telegram.messages_to(OLGA)) == 2, timeout=20)
            assert [sent for _, sent in marks()] == [1, 1], "the second before its transfer"
            assert portal.dialogs[2043].owner == ANNA


async def test_a_command_left_too_long_ago_is_reported_not_carried_out(tmp_path: Path) -> None:
    database = str(tmp_path / "handoff.sqlite3")
    async with make_portal() as portal:
        old = command("/transfer 2043 @anna", age_s=60 * 60)
        await left_by_a_dead_run(database, old, 79, sent=False)
        async with running_bot(portal, env={"STORAGE_PATH": database}) as h:
            await h.telegram.wait_for(lambda: bool(h.telegram.messages_to(OLGA)))
            await h.settle()
            [notice] = h.telegram.messages_to(OLGA)
            assert notice.plain_text.startswith("Not carried out: you sent this 60 min ago")
            assert h.rest_calls() == []
            [entry] = await h.app.services.storage.history(dialog="2043")
            assert entry.outcome == "STALE"


async def test_audit_export_as_csv(tmp_path: Path) -> None:
    database = tmp_path / "handoff.sqlite3"
    storage = SqliteStorage(str(database), boot="test")
    when = utc_now()
    await storage.record(
        [
            AuditEntry(when, OLGA, OLGA, "transfer", "2043", "user:15", "ok", 120, 7),
            AuditEntry(when, OLGA, -100, "finish", "2044", "-", "ACCESS_DENIED", 80, 8),
        ]
    )
    await storage.close()
    config = tmp_path / "config.yaml"
    config.write_text("storage: {path: handoff.sqlite3}\n")  # next to the config
    result = run_cli(
        "audit", "--since", when.date().isoformat(), "--csv", "--config", str(config), cwd=Path("/")
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "time,user_id,chat_id,dialog,target,action,outcome,latency_ms,update_id",
        f"{when.isoformat()},{OLGA},{OLGA},2043,user:15,transfer,ok,120,7",
        f"{when.isoformat()},{OLGA},-100,2044,-,finish,ACCESS_DENIED,80,8",
    ]
    later = run_cli("audit", "--since", "2999-01-01", "--config", str(config))
    assert later.stdout.splitlines() == [
        "time,user_id,chat_id,dialog,target,action,outcome,latency_ms,update_id"
    ]
    bad = run_cli("audit", "--since", "yesterday", "--config", str(config))
    assert bad.returncode == 2 and "not a date" in bad.stderr
