"""Webhook mode over real HTTP: the secret, exactly-once redelivery, and /healthz."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from bot.app import App, build_app, build_bot
from bot.config import parse_config
from bot.inbox import update_key
from bot.sandbox.portal import Fault, PortalSimulator
from bot.sandbox.telegram import FakeTelegram
from bot.storage import Mark
from bot.webhook import build_web_app, parse_listen
from tests.conftest import ANNA, make_portal
from tests.harness import CONFIG_YAML, OLGA, TOKEN, fakes_env
from tests.test_cli import run_cli
from tests.test_e2e_audit import command

SECRET = "s3cret-for-the-webhook_0"
TRANSFER = "imopenlines.operator.transfer"


@dataclass
class Hooked:
    url: str
    app: App
    portal: PortalSimulator
    telegram: FakeTelegram
    http: aiohttp.ClientSession

    async def post(self, update: dict[str, object], secret: str | None = SECRET) -> int:
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
        async with self.http.post(f"{self.url}/tg", json=update, headers=headers) as response:
            return response.status


@asynccontextmanager
async def webhook_bot() -> AsyncIterator[Hooked]:
    portal = make_portal()
    async with portal, FakeTelegram(TOKEN, bot_username="handoff_test_bot") as telegram:
        env = fakes_env(portal, telegram)
        config = parse_config(CONFIG_YAML, env)
        app = build_app(config)
        bot = build_bot(config, app.metrics)
        runner = web.AppRunner(build_web_app(app, bot, "/tg", SECRET))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with aiohttp.ClientSession() as http:
                yield Hooked(f"http://127.0.0.1:{port}", app, portal, telegram, http)
        finally:
            await runner.cleanup()
            await bot.session.close()


async def test_updates_without_the_secret_are_refused_and_do_nothing() -> None:
    async with webhook_bot() as h:
        update = {**command("/transfer 2043 @anna"), "update_id": 1}
        assert await h.post(update, secret=None) == 401
        assert await h.post(update, secret="wrong") == 401
        await h.app.inbox.wait_idle(5)
        assert h.portal.calls == []
        assert h.telegram.messages_to(OLGA) == []


async def test_the_same_update_posted_twice_makes_one_transfer() -> None:
    async with webhook_bot() as h:
        update = {**command("/transfer 2043 @anna"), "update_id": 2}
        assert await h.post(update) == 200
        assert await h.post(update) == 200  # Telegram retries when unsure it was received
        await h.telegram.wait_for(lambda: bool(h.telegram.messages_to(OLGA)))
        await h.app.inbox.wait_idle(5)
        assert len(h.portal.calls_to(TRANSFER)) == 1
        assert len(h.telegram.messages_to(OLGA)) == 1
        assert h.portal.dialogs[2043].owner == ANNA
        outcomes = [e.outcome for e in await h.app.services.storage.history(dialog="2043")]
        assert sorted(outcomes) == ["DUPLICATE", "ok"], "the suppressed redelivery is recorded"


async def test_a_body_that_is_not_an_update_gets_400_and_does_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with webhook_bot() as h:
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        for body in (b"not json at all", b'{"update_id": "x"}', b"[1, 2]"):
            async with h.http.post(f"{h.url}/tg", data=body, headers=headers) as response:
                assert response.status == 400, body
        assert await h.post({**command("/transfer 2043 @anna"), "update_id": 5}) == 200
        await h.telegram.wait_for(lambda: bool(h.telegram.messages_to(OLGA)))
        assert len(h.portal.calls_to(TRANSFER)) == 1, "only the real update did something"
    refusals = [r for r in caplog.records if "not an update" in r.getMessage()]
    assert len(refusals) == 3
    assert all(r.exc_info is None for r in caplog.records if r.name.startswith("bot"))


async def test_the_200_comes_only_once_the_update_is_kept() -> None:
    async with webhook_bot() as h:
        update = {**command("/transfer 2043 @anna"), "update_id": 6}
        assert await h.post(update) == 200
        # Telegram now forgets it: the inbox must already hold it
        bot_id = int(TOKEN.split(":")[0])
        mark = await h.app.services.storage.take(update_key(bot_id, 6), "{}")
        assert mark in (Mark.RUNNING, Mark.DONE)


async def healthz(h: Hooked) -> dict[str, str]:
    async with h.http.get(f"{h.url}/healthz") as response:
        assert response.status == 200
        body: dict[str, str] = json.loads(await response.text())
    assert set(body) == {"status", "since"}, "health only: no methods, codes or portal details"
    return body


async def test_healthz_says_ok_or_degraded_and_since_when(caplog: pytest.LogCaptureFixture) -> None:
    async with webhook_bot() as h:
        started = await healthz(h)
        assert started["status"] == "ok"
        # a dialog that does not exist is the portal working, not failing
        await h.post({**command("/transfer 9999 @anna"), "update_id": 3})
        await h.telegram.wait_for(lambda: len(h.telegram.messages_to(OLGA)) == 1)
        assert await healthz(h) == started

        h.portal.inject("imopenlines.dialog.get", Fault.error("NO_AUTH_FOUND"), times=1)
        await h.post({**command("/transfer 2043 @anna"), "update_id": 4})
        await h.telegram.wait_for(lambda: len(h.telegram.messages_to(OLGA)) == 2)
        degraded = await healthz(h)
        assert degraded["status"] == "degraded"
        assert degraded["since"] >= started["since"]
        assert "NO_AUTH_FOUND" not in json.dumps(degraded)
        assert any(
            "degraded" in r.getMessage() and "NO_AUTH_FOUND" in r.getMessage()
            for r in caplog.records
        ), "the reason goes to the log"

        await h.post({**command("/transfer 2043 @anna"), "update_id": 5})
        await h.telegram.wait_for(lambda: len(h.telegram.messages_to(OLGA)) == 3)
        recovered = await healthz(h)
        assert recovered["status"] == "ok"
        assert recovered["since"] >= degraded["since"]
        assert len(h.portal.calls_to(TRANSFER)) == 1


def test_webhook_mode_without_a_secret_refuses_to_start() -> None:
    env = {"TELEGRAM_BOT_TOKEN": TOKEN, "BITRIX24_WEBHOOK_URL": "https://x.bitrix24.ru/rest/1/abc/"}
    result = run_cli(
        "--webhook-url", "https://bot.example.com/tg", "--listen", "127.0.0.1:0", env=env
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "webhook mode needs a secret: export TELEGRAM_WEBHOOK_SECRET=<random letters and digits>"
    ]


def test_listen_address_forms() -> None:
    assert parse_listen("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert parse_listen("[::1]:8443") == ("::1", 8443)
    for bad in ("8080", "host:", "host:99999", ":80"):
        try:
            parse_listen(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
