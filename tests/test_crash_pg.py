"""Two bot processes on one PostgreSQL behind a load balancer; one is killed with -9
mid-burst: the other adopts what it left (after its heartbeat stops), and nothing is lost or
done twice."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import aiohttp
import asyncpg

from bot.sandbox.telegram import FakeTelegram
from tests import test_postgres
from tests.harness import CROWD, TOKEN
from tests.processes import BotProcess
from tests.test_crash import (
    COMMANDS,
    FIRST,
    answered_then_stopped,
    assert_nothing_lost_nothing_twice,
    burst_portal,
    kill,
    post_until_taken,
    started,
    write_config,
)
from tests.test_e2e_audit import command

postgres = test_postgres.postgres  # the suite's throwaway PostgreSQL server


async def audit_rows(url: str) -> Counter[int]:
    db = await asyncpg.connect(url)
    try:
        return Counter(row["user_id"] for row in await db.fetch("SELECT user_id FROM audit"))
    finally:
        await db.close()


async def test_one_of_two_instances_killed_mid_burst_the_other_finishes_its_work(
    tmp_path: Path, postgres: str, unused_tcp_port_factory: Callable[[], int]
) -> None:
    config = write_config(tmp_path)
    config.write_text(
        config.read_text().replace(
            'storage: {path: "handoff.sqlite3"}', f'storage: {{url: "{postgres}"}}'
        )
    )
    ports = [unused_tcp_port_factory(), unused_tcp_port_factory()]
    urls = [f"http://127.0.0.1:{port}/tg" for port in ports]
    updates = [
        {**command(f"/transfer {FIRST + i} @anna", user=CROWD + i), "update_id": 9100 + i}
        for i in range(COMMANDS)
    ]
    taken: set[int] = set()
    portal = burst_portal()
    async with (
        portal,
        FakeTelegram(TOKEN, bot_username="handoff_test_bot") as telegram,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
    ):

        async def deliver(targets: list[str], pause_s: float) -> None:
            """Telegram's side: each update not yet taken, to the balancer's next instance."""
            balance = itertools.cycle(targets)
            for update in updates:
                update_id = int(str(update["update_id"]))
                if update_id not in taken and await post_until_taken(http, next(balance), update):
                    taken.add(update_id)
                await asyncio.sleep(pause_s)

        def instance(port: int) -> AbstractAsyncContextManager[BotProcess]:
            listen = f"127.0.0.1:{port}"
            webhook = ("--webhook-url", "https://bot.example.com/tg", "--listen", listen)
            return started(config, portal, telegram, *webhook)

        async with instance(ports[0]) as doomed, instance(ports[1]) as survivor:
            await telegram.wait_for(lambda: len(telegram.calls_to("setWebhook")) >= 2, timeout=30)
            sending = asyncio.create_task(deliver(urls, 0.03))
            await telegram.wait_for(lambda: len(portal.moves) >= 10, timeout=30, interval=0.01)
            await kill(doomed)
            await sending
            while len(taken) < COMMANDS:  # Telegram retries what was never answered 200
                await deliver(urls[1:], 0)
            # the survivor adopts the dead one's commands once its heartbeat is 20 s old
            logs = await answered_then_stopped(telegram, survivor)
    rows = await audit_rows(postgres)
    assert_nothing_lost_nothing_twice(portal, telegram, rows)
    assert "Traceback" not in logs
