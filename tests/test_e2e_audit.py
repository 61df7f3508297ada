"""The audit trail, /history, exactly-once marks and stale commands, end to end."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bot.inbox import update_key
from bot.storage import AuditEntry, SqliteStorage, utc_now
from tests.conftest import ANNA, make_portal
from tests.harness import OLGA, TOKEN, running_bot
from tests.test_cli import run_cli

TRANSFER = "imopenlines.operator.transfer"
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
        assert lines[0].endswith("· 2043 → Support line · ok · Olga")
        assert lines[1].endswith("· 2043 → Anna Smirnova · ok · Olga")
        by_name = await h.say("/history @anna")
        assert by_name.plain_text.splitlines()[0].endswith("· 2043 → Anna Smirnova · ok · Olga")
        nothing = await h.say("/history 7777")
        assert nothing.plain_text == "Nothing recorded about 7777."


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
