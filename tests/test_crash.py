"""The real bot process killed with -9 mid-burst, and stopped with SIGTERM: nothing a
supervisor sent is lost, nothing is done twice, every command gets one answer and an audit row.

Polling: the fake Bot API redelivers what the bot never confirmed, as Telegram does. Webhook:
the test plays Telegram, posting each update until a 200 says it was taken.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import aiohttp

from bot.sandbox.portal import Fault, PortalSimulator, SimDialog
from bot.sandbox.telegram import FakeTelegram
from tests.conftest import ANNA, BOB, WEBHOOK_CODE, make_portal
from tests.harness import CONFIG_YAML, CROWD, TOKEN, fakes_env, with_supervisors
from tests.processes import BotProcess, bot_process
from tests.test_e2e_audit import command

TRANSFER = "imopenlines.operator.transfer"
COMMANDS = 50
FIRST = 5000  # dialogs FIRST .. FIRST + COMMANDS - 1, one per supervisor
SECRET = "crash-test-secret_0"


def burst_portal() -> PortalSimulator:
    # slow enough that a kill finds transfers done, in flight and still waiting
    portal = make_portal(latency_s=0.15)
    for n in range(FIRST, FIRST + COMMANDS):
        portal.dialogs[n] = SimDialog(n, n, f"Guest {n}", owner=BOB, line_id=3)
    return portal


def write_config(folder: Path) -> Path:
    config = folder / "config.yaml"
    text = with_supervisors(COMMANDS, CONFIG_YAML).replace("announce_to: -1001234567890\n", "")
    config.write_text(text.replace("${STORAGE_PATH:-:memory:}", "handoff.sqlite3"))
    return config


def started(
    config: Path, portal: PortalSimulator, telegram: FakeTelegram, *args: str
) -> AbstractAsyncContextManager[BotProcess]:
    """``python -m bot`` as an admin runs it, on the two fakes; killed at the end if running."""
    env = fakes_env(portal, telegram, TELEGRAM_WEBHOOK_SECRET=SECRET)
    return bot_process(config, *args, **env)


def marked_sent(config: Path) -> bool:
    """Whether an update in the bot's database is marked sent."""
    with sqlite3.connect(config.parent / "handoff.sqlite3") as db:
        return bool(db.execute("SELECT count(*) FROM marks WHERE sent").fetchone()[0])


def portal_checked(bot: BotProcess) -> bool:
    """Whether the start-up check of the portal has logged what it found."""
    return any(" ok: " in line or " warning: " in line for line in bot.lines)


async def kill(bot: BotProcess) -> None:
    """``kill -9``: no handler runs, nothing is flushed."""
    bot.process.kill()
    await bot.process.wait()


async def stop(bot: BotProcess) -> str:
    """SIGTERM, then the exit code must be 0; returns the log."""
    code = await bot.stop()
    assert code == 0, (code, bot.stderr[-3000:])
    return bot.stderr


async def answered_then_stopped(telegram: FakeTelegram, bot: BotProcess) -> str:
    """Wait until every supervisor has an answer, a moment more (a second answer to anyone
    would show up now), then stop the bot; returns its log."""
    await telegram.wait_for(lambda: all(replies(telegram).values()), timeout=90, interval=0.1)
    await asyncio.sleep(1.0)
    return await stop(bot)


async def send_burst(telegram: FakeTelegram, pause_s: float) -> None:
    """Once the bot polls: each supervisor sends one transfer of their own dialog."""
    await telegram.wait_for(lambda: bool(telegram.calls_to("getUpdates")), timeout=30)
    for i in range(COMMANDS):
        telegram.send_message(f"/transfer {FIRST + i} @anna", user_id=CROWD + i)
        if pause_s:
            await asyncio.sleep(pause_s)


def replies(telegram: FakeTelegram) -> dict[int, list[str]]:
    """Each supervisor's messages from the bot, as they read them."""
    return {i: [m.plain_text for m in telegram.messages_to(CROWD + i)] for i in range(COMMANDS)}


def audited(config: Path) -> Counter[int]:
    """Audit rows per supervisor, read from the database after the bot stopped."""
    with sqlite3.connect(config.parent / "handoff.sqlite3") as db:
        return Counter(user for (user,) in db.execute("SELECT user_id FROM audit"))


def assert_nothing_lost_nothing_twice(
    portal: PortalSimulator, telegram: FakeTelegram, rows: Counter[int]
) -> Counter[str]:
    """Every command: exactly one reply that matches the portal, at most one transfer call,
    an audit row (``rows``: audit rows per supervisor). Returns how the replies read."""
    calls = Counter(int(c.params["CHAT_ID"]) for c in portal.calls_to(TRANSFER))
    assert max(calls.values(), default=0) <= 1, f"a dialog got two transfers: {calls}"
    kinds: Counter[str] = Counter()
    for i, texts in replies(telegram).items():
        dialog = FIRST + i
        moved = portal.dialogs[dialog].owner == ANNA
        if len(texts) == 2:
            # killed after Telegram took the answer and before the bot could note it: the
            # restart cannot know it arrived, so it tells again; never anything different
            first, again = texts
            assert first.startswith("✅") and moved, texts
            assert again.startswith("⚠️ I was restarted"), texts
            assert again.splitlines()[-1].endswith("Anna Smirnova"), texts
            kinds["told twice"] += 1
            continue
        assert len(texts) == 1, (dialog, texts)
        text = texts[0]
        if text.startswith("✅"):
            kinds["done"] += 1
            assert moved, text
        elif text.startswith("⚠️ I was restarted"):
            kinds["cut off"] += 1
            # the notice says where the dialog is now
            holder = "Anna Smirnova" if moved else "Bob Lee"
            assert text.splitlines()[-1].endswith(holder), text
        else:
            kinds[text[:40]] += 1
            assert not moved, text
    missing = [i for i in range(COMMANDS) if rows[CROWD + i] == 0]
    assert missing == [], "every command has an audit row"
    assert kinds["told twice"] <= 3, "only the few answers in flight at the kill"
    print(dict(kinds))  # the figures, for the record (pytest -s)
    return kinds


async def test_kill_9_mid_burst_in_polling_mode_loses_nothing_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    portal = burst_portal()
    async with portal, FakeTelegram(TOKEN, bot_username="handoff_test_bot") as telegram:
        async with started(config, portal, telegram) as first:
            await send_burst(telegram, pause_s=0.03)
            await telegram.wait_for(lambda: len(portal.moves) >= 10, timeout=30, interval=0.01)
            await kill(first)
        replied_before = sum(bool(t) for t in replies(telegram).values())
        assert replied_before < COMMANDS, "the kill came mid-burst"
        async with started(config, portal, telegram) as second:
            logs = await answered_then_stopped(telegram, second)
    assert_nothing_lost_nothing_twice(portal, telegram, audited(config))
    assert "Traceback" not in logs
    assert WEBHOOK_CODE not in logs and TOKEN.split(":")[1] not in logs


async def post_until_taken(
    http: aiohttp.ClientSession, url: str, update: dict[str, object]
) -> bool:
    """One delivery attempt as Telegram makes it: True once the bot answered 200."""
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    try:
        async with http.post(url, json=update, headers=headers) as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def test_kill_9_mid_burst_in_webhook_mode_loses_nothing_and_doubles_nothing(
    tmp_path: Path, unused_tcp_port: int
) -> None:
    config = write_config(tmp_path)
    portal = burst_portal()
    listen = f"127.0.0.1:{unused_tcp_port}"
    url = f"http://{listen}/tg"
    args = ("--webhook-url", "https://bot.example.com/tg", "--listen", listen)
    updates = [
        {**command(f"/transfer {FIRST + i} @anna", user=CROWD + i), "update_id": 9000 + i}
        for i in range(COMMANDS)
    ]
    taken: set[int] = set()

    async def deliver(http: aiohttp.ClientSession, pause_s: float) -> None:
        for update in updates:
            if update["update_id"] not in taken and await post_until_taken(http, url, update):
                taken.add(int(str(update["update_id"])))
            await asyncio.sleep(pause_s)

    async with (
        portal,
        FakeTelegram(TOKEN, bot_username="handoff_test_bot") as telegram,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
    ):
        async with started(config, portal, telegram, *args) as first:
            await telegram.wait_for(lambda: bool(telegram.calls_to("setWebhook")), timeout=30)
            sending = asyncio.create_task(deliver(http, 0.03))
            await telegram.wait_for(lambda: len(portal.moves) >= 10, timeout=30, interval=0.01)
            await kill(first)
            await sending
        assert 0 < len(taken) < COMMANDS, "the kill came mid-burst"
        async with started(config, portal, telegram, *args) as second:
            await telegram.wait_for(lambda: len(telegram.calls_to("setWebhook")) >= 2, timeout=30)
            # Telegram retries what was never answered 200
            while len(taken) < COMMANDS:
                await deliver(http, 0)
            logs = await answered_then_stopped(telegram, second)
    assert_nothing_lost_nothing_twice(portal, telegram, audited(config))
    assert "Traceback" not in logs


async def test_sigterm_mid_burst_answers_what_it_took_and_exits_0_in_time(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    portal = burst_portal()
    async with portal, FakeTelegram(TOKEN, bot_username="handoff_test_bot") as telegram:
        async with started(config, portal, telegram) as first:
            await send_burst(telegram, pause_s=0)
            await telegram.wait_for(lambda: len(portal.moves) >= 5, timeout=30, interval=0.01)
            stop_sent = asyncio.get_running_loop().time()
            logs = await stop(first)
            took_s = asyncio.get_running_loop().time() - stop_sent
        assert "Something went wrong" not in "".join(
            "".join(texts) for texts in replies(telegram).values()
        )
        assert took_s < 30 + 10, f"grace is 30 s; the stop took {took_s:.1f} s"
        assert "Traceback" not in logs
        answered_by_first = sum(bool(texts) for texts in replies(telegram).values())
        print(f"answered before exiting: {answered_by_first} of {COMMANDS} in {took_s:.1f} s")
        # what it did not finish, the next start does
        polls = len(telegram.calls_to("getUpdates"))
        async with started(config, portal, telegram) as second:
            await telegram.wait_for(
                lambda: len(telegram.calls_to("getUpdates")) > polls, timeout=30
            )
            await answered_then_stopped(telegram, second)
    kinds = assert_nothing_lost_nothing_twice(portal, telegram, audited(config))
    assert kinds["done"] >= 1


async def test_kill_9_while_a_lone_commands_first_look_is_out_tells_where_the_dialog_is(
    tmp_path: Path,
) -> None:
    # a command alone is marked sent as it is taken (one sync for the update and the mark):
    # killed while its first look is out, the next start never transfers, and says where the
    # dialog is now
    config = write_config(tmp_path)
    # the look outlasts the kill, however slow the machine: no timeout ends it first
    slow = config.read_text().replace("${TIMEOUT_S:-3}", "60").replace("${DEADLINE_S:-6}", "120")
    config.write_text(slow)
    portal = make_portal()
    portal.dialogs[FIRST] = SimDialog(FIRST, FIRST, f"Guest {FIRST}", owner=BOB, line_id=3)
    async with portal, FakeTelegram(TOKEN, bot_username="handoff_test_bot") as telegram:
        async with started(config, portal, telegram) as first:
            await telegram.wait_for(lambda: bool(telegram.calls_to("getUpdates")), timeout=30)
            # the start-up check of the portal is over: the command is the only one calling
            await telegram.wait_for(lambda: portal_checked(first), timeout=30)
            # the first look (beside "is Anna online?") hangs until the kill
            portal.inject("batch", Fault.delay(90, apply=False), carrying="user.get")
            telegram.send_message(f"/transfer {FIRST} @anna", user_id=CROWD)
            await telegram.wait_for(lambda: portal.pending_faults == 0, timeout=30)
            # the look hangs; the command is marked sent all the same (on disk, read by
            # another connection as a restart would)
            await telegram.wait_for(lambda: marked_sent(config), timeout=30)
            await kill(first)
        assert telegram.messages_to(CROWD) == []
        async with started(config, portal, telegram) as second:
            await telegram.wait_for(lambda: bool(telegram.messages_to(CROWD)), timeout=30)
            await asyncio.sleep(1.0)  # a second answer would show up now
            await stop(second)
    texts = [m.plain_text for m in telegram.messages_to(CROWD)]
    assert len(texts) == 1, texts
    assert texts[0].startswith("⚠️ I was restarted"), texts
    assert texts[0].splitlines()[-1].endswith("Bob Lee"), texts
    assert portal.calls_to(TRANSFER) == [], "never sent"
    assert portal.dialogs[FIRST].owner == BOB
    with sqlite3.connect(config.parent / "handoff.sqlite3") as db:
        assert [row[0] for row in db.execute("SELECT outcome FROM audit")] == ["CUT_OFF"]
