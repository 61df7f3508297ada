"""/metrics scraped over HTTP after real commands, parsed with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.config import ConfigError
from bot.sandbox.portal import Fault
from bot.sandbox.telegram import FakeTelegram
from handlers.keyboards import ConfirmTap
from tests.conftest import make_portal
from tests.harness import CONFIG_YAML, OLGA, STRANGER, TEAM_CHAT, TOKEN, running_bot
from tests.test_crash import started, stop
from tests.test_e2e_audit import command
from tests.test_startup import free_port
from tests.test_webhook import webhook_bot

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parsed(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(url: str) -> Samples:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        return parsed(await response.text())


async def test_the_webhook_listener_serves_metrics_of_real_commands() -> None:
    async with webhook_bot() as h:
        before = await scrape(f"{h.url}/metrics")
        assert value(before, "handoff_inbox_backlog") == 0
        assert value(before, "handoff_bitrix24_degraded") == 0

        for update_id, text, user in (
            (1, "/transfer 2043 @anna", OLGA),
            (2, "/transfer 9999 @anna", OLGA),
            (3, "/transfer 2044 @bob", STRANGER),
        ):
            await h.post({**command(text, user=user), "update_id": update_id})
        await h.telegram.wait_for(lambda: len(h.telegram.messages_to(OLGA)) == 2)
        await h.telegram.wait_for(lambda: len(h.telegram.messages_to(STRANGER)) == 1)
        await h.telegram.wait_for(lambda: len(h.telegram.messages_to(TEAM_CHAT)) == 1)
        await h.app.inbox.wait_idle(5)
        after = await scrape(f"{h.url}/metrics")

    commands = "handoff_commands_total"
    assert value(after, commands, command="transfer", outcome="handled") == 2
    assert value(after, commands, command="transfer", outcome="refused") == 1
    actions = "handoff_dialog_actions_total"
    assert value(after, actions, action="transfer", outcome="moved", code="ok") == 1
    assert value(after, actions, action="transfer", outcome="failed", code="ACCESS_ERROR") == 1
    requests = [
        (labels, count)
        for (name, labels), count in after.items()
        if name == "handoff_bitrix24_request_seconds_count"
    ]
    sent = [call for call in h.portal.calls if not call.in_batch]  # HTTP requests, batches whole
    assert sum(count for _, count in requests) == len(sent), "one sample per request"
    assert value(after, "handoff_bitrix24_bucket_wait_seconds_count") >= len(sent)
    assert value(after, "handoff_announcement_posts_total", how="sent") == 1
    assert value(after, "handoff_inbox_backlog") == 0


async def test_announcements_coalesced_and_telegram_429s_are_counted() -> None:
    async with running_bot() as h:
        h.telegram.fail("sendMessage", status=429, retry_after=1, chat_id=OLGA)
        first = await h.say("/transfer 2043 @anna")
        assert first.plain_text.startswith("✅")
        # three moves in a burst: the team chat gets them in fewer posts than lines
        ask = await h.say("/transfer 2044 2045 2046 @bob")
        await h.tap(ask, ConfirmTap().pack())
        await h.telegram.wait_for(
            lambda: sum(line.count("\n") + 1 for line in h.team_chat_now()) == 4, timeout=15
        )
        samples = parsed((await h.app.metrics.handle(None)).text or "")  # type: ignore[arg-type]
    assert value(samples, "handoff_telegram_429_total", method="SendMessage") == 1
    posts = sum(
        count for (name, _), count in samples.items() if name == "handoff_announcement_posts_total"
    )
    coalesced = value(samples, "handoff_announcement_lines_coalesced_total")
    assert posts + coalesced == 4, "every line is either a post's own or shared one"
    assert coalesced >= 1


async def test_reloads_and_a_degraded_portal_are_counted(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    async with running_bot(config_file=config) as h:
        await h.app.reload()  # unchanged
        config.write_text(CONFIG_YAML.replace("language: auto", "language: ru"))
        await h.app.reload()  # changed
        config.write_text("operators: [")
        with pytest.raises(ConfigError):
            await h.app.reload()
        # the look, beside "is Anna online?"
        h.portal.inject("batch", Fault.error("NO_AUTH_FOUND"), carrying="user.get")
        await h.say("/transfer 2043 @anna")
        samples = parsed((await h.app.metrics.handle(None)).text or "")  # type: ignore[arg-type]
    reloads = "handoff_config_reloads_total"
    assert [value(samples, reloads, outcome=o) for o in ("unchanged", "changed", "failed")] == [
        1,
        1,
        1,
    ]
    assert value(samples, "handoff_bitrix24_degraded") == 1
    assert (
        value(
            samples,
            "handoff_bitrix24_errors_total",
            method="batch",  # the request that failed
            code="NO_AUTH_FOUND",
        )
        == 1
    )


async def test_polling_mode_serves_metrics_on_the_flag_address(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG_YAML.replace("${STORAGE_PATH:-:memory:}", "handoff.sqlite3"))
    port = free_port()
    portal = make_portal()
    telegram = FakeTelegram(TOKEN, bot_username="handoff_test_bot")
    flag = ("--metrics", f"127.0.0.1:{port}")
    async with portal, telegram, started(config, portal, telegram, *flag) as bot:
        await bot.wait_for(lambda: bot.count("metrics at http://127.0.0.1:") == 1)
        telegram.add_update(command("/transfer 2043 @anna"))
        await telegram.wait_for(lambda: bool(telegram.messages_to(OLGA)))
        await asyncio.sleep(0.2)  # the handler counts once its answer is sent
        samples = await scrape(f"http://127.0.0.1:{port}/metrics")
        await stop(bot)
    actions = "handoff_dialog_actions_total"
    assert value(samples, "handoff_commands_total", command="transfer", outcome="handled") == 1
    assert value(samples, actions, action="transfer", outcome="moved", code="ok") == 1
