"""Start-up before serving: Telegram unreachable (waited out), a refused token, a missing
storage folder, a webhook left over from webhook mode. The process tests run ``python -m bot``
as users do; the others call :mod:`bot.telegram_start` directly."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from pathlib import Path

import pytest
from aiogram.utils.backoff import BackoffConfig

from bot.config import StorageSettings
from bot.sandbox.portal import PortalSimulator
from bot.sandbox.telegram import FakeTelegram
from bot.telegram_start import TokenRefused, reach_telegram, storage_problem, until_stopped
from tests.conftest import ANNA, WEBHOOK_CODE, make_portal
from tests.harness import CONFIG_YAML, OLGA, TOKEN
from tests.processes import GUARD_S, BotProcess, bot_process

WRONG_TOKEN = "4242424242:AAE_wrong-token-the-fake-does-not-know"
RETRY = "Telegram not reachable (attempt "
FAST = BackoffConfig(min_delay=0.01, max_delay=0.05, factor=2.0, jitter=0.0)
COMMAND = "/transfer 2043 @anna"


def free_port() -> int:
    """A port nothing listens on (for now): connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG_YAML)
    return config


def env_for(api_url: str, portal_url: str, token: str = TOKEN) -> dict[str, str]:
    return {
        "TELEGRAM_API_URL": api_url,
        "TELEGRAM_BOT_TOKEN": token,
        "BITRIX24_WEBHOOK_URL": portal_url,
    }


def assert_clean(bot: BotProcess, *secrets: str) -> None:
    """No traceback, no secret, in anything the process wrote."""
    output = bot.stdout + bot.stderr
    assert "Traceback" not in output, output
    for secret in (TOKEN.split(":")[1], WEBHOOK_CODE, *secrets):
        assert secret not in output


async def test_unreachable_telegram_is_retried_a_line_per_attempt_sighup_or_not_until_sigterm(
    tmp_path: Path,
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    portal_url = f"https://portal.invalid/rest/1/{WEBHOOK_CODE}/"  # never reached
    async with bot_process(write_config(tmp_path), **env_for(closed, portal_url)) as bot:
        await bot.wait_for(lambda: bot.count(RETRY) >= 1)
        bot.process.send_signal(signal.SIGHUP)  # `systemctl reload` now must not end it
        await bot.wait_for(lambda: bot.count(RETRY) >= 2)
        assert bot.process.returncode is None
        code = await bot.stop()
    assert code == 0, bot.stderr
    assert_clean(bot)
    retries = [line for line in bot.lines if RETRY in line]
    assert len(retries) >= 2
    assert bot.count(f"{RETRY}1)") == 1 and bot.count(f"{RETRY}2)") == 1
    assert "getMe: ClientConnectorError: Cannot connect to host 127.0.0.1" in retries[0]
    assert "retrying in 1.0 s" in retries[0]
    assert bot.count("stopped while waiting for Telegram") == 1


async def test_telegram_coming_up_later_is_waited_for_and_then_the_bot_serves(
    tmp_path: Path,
) -> None:
    port = free_port()
    telegram = FakeTelegram(TOKEN)
    async with make_portal() as portal:
        env = env_for(f"http://127.0.0.1:{port}", portal.url)
        async with bot_process(write_config(tmp_path), **env) as bot:
            await bot.wait_for(lambda: bot.count(RETRY) >= 2)
            await telegram.start(port=port)  # the network is up at last
            try:
                telegram.send_message(COMMAND, user_id=OLGA)
                await telegram.wait_for_messages(1, chat_id=OLGA, timeout=GUARD_S)
                code = await bot.stop()
            finally:
                await telegram.close()
    assert code == 0, bot.stderr
    assert_clean(bot)
    [reply] = telegram.messages_to(OLGA)
    assert reply.plain_text.startswith("✅ Dialog 2043")
    assert portal.dialogs[2043].owner == ANNA
    assert bot.count("Telegram answered on attempt") == 1


async def test_a_token_telegram_refuses_is_one_line_naming_the_variable_and_exit_2(
    tmp_path: Path,
) -> None:
    async with (
        FakeTelegram(TOKEN) as telegram,
        bot_process(
            write_config(tmp_path),
            **env_for(
                telegram.base_url, f"https://portal.invalid/rest/1/{WEBHOOK_CODE}/", WRONG_TOKEN
            ),
        ) as bot,
    ):
        code = await bot.finish()
    assert code == 2, bot.stderr
    assert bot.count("TELEGRAM_BOT_TOKEN") == 1
    assert bot.count("Telegram refused the bot token (401 Unauthorized)") == 1
    assert bot.count(RETRY) == 0
    assert_clean(bot, WRONG_TOKEN.split(":")[1])
    assert [call.method for call in telegram.calls] == ["getMe"]


async def test_a_storage_folder_that_does_not_exist_is_one_line_and_exit_2(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-such-folder" / "handoff.sqlite3"
    async with (
        FakeTelegram(TOKEN) as telegram,
        bot_process(
            write_config(tmp_path),
            **env_for(telegram.base_url, f"https://portal.invalid/rest/1/{WEBHOOK_CODE}/"),
            STORAGE_PATH=str(missing),
        ) as bot,
    ):
        code = await bot.finish()
    assert code == 2, bot.stderr
    assert bot.lines == [
        f"storage.path {missing}: the folder {missing.parent} does not exist; create it"
    ]
    assert telegram.calls == [], "checked before anything connects"


async def test_a_webhook_left_set_is_deleted_and_the_command_queued_meanwhile_answered(
    tmp_path: Path, portal: PortalSimulator
) -> None:
    async with FakeTelegram(TOKEN) as telegram:
        other = telegram.make_bot()
        try:  # webhook mode ran before, then stopped; a command came in meanwhile
            await other.set_webhook("https://hooks.example.com/tg/s3cret-path")
        finally:
            await other.session.close()
        telegram.send_message(COMMAND, user_id=OLGA)
        assert telegram.pending_updates == 1
        env = env_for(telegram.base_url, portal.url)
        async with bot_process(write_config(tmp_path), **env) as bot:
            await telegram.wait_for_messages(1, chat_id=OLGA, timeout=GUARD_S)
            code = await bot.stop()
    assert code == 0, bot.stderr
    assert_clean(bot, "s3cret-path")
    [deleted] = [line for line in bot.lines if "a webhook to" in line]
    assert "a webhook to hooks.example.com was set" in deleted
    assert "1 pending updates kept" in deleted
    [call] = telegram.calls_to("deleteWebhook")
    assert call.params.get("drop_pending_updates") in (False, "false", None)
    [reply] = telegram.messages_to(OLGA)
    assert reply.plain_text.startswith("✅ Dialog 2043")
    assert not any(c.status == 409 for c in telegram.calls_to("getUpdates"))


# ------------------------------------------------------------------ without a process


async def test_server_errors_are_retried_with_one_warning_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with FakeTelegram(TOKEN) as telegram:
        telegram.fail("getMe", status=502, times=2)
        bot = telegram.make_bot()
        try:
            with caplog.at_level(logging.WARNING, logger="bot.telegram_start"):
                me = await reach_telegram(bot, polling=True, backoff=FAST)
        finally:
            await bot.session.close()
    assert me.username == telegram.bot_username
    warnings = [r.getMessage() for r in caplog.records if r.name == "bot.telegram_start"]
    assert len(warnings) == 2
    assert warnings[0].startswith("Telegram not reachable (attempt 1): getMe: Bad Gateway;")
    assert telegram.calls_to("deleteWebhook") == [], "no webhook: nothing to delete"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, "Telegram refused the bot token (401 Unauthorized): check TELEGRAM_BOT_TOKEN"),
        (404, "(404 Not Found): TELEGRAM_BOT_TOKEN is malformed, or TELEGRAM_API_URL is not"),
    ],
)
async def test_a_refused_token_is_not_retried(status: int, expected: str) -> None:
    async with FakeTelegram(TOKEN) as telegram:
        telegram.fail("getMe", status=status)
        bot = telegram.make_bot()
        try:
            with pytest.raises(TokenRefused) as refused:
                await reach_telegram(bot, polling=True, backoff=FAST, api_url=telegram.base_url)
        finally:
            await bot.session.close()
    assert expected in str(refused.value)
    assert TOKEN.split(":")[1] not in str(refused.value)
    assert len(telegram.calls_to("getMe")) == 1


async def test_sigterm_while_waiting_for_telegram_stops_the_wait() -> None:
    telegram = FakeTelegram(TOKEN)
    await telegram.start()
    bot = telegram.make_bot()
    await telegram.close()  # unreachable from now on
    loop = asyncio.get_running_loop()
    try:
        wait = until_stopped(reach_telegram(bot, polling=True, backoff=FAST))
        # the handler is in place once until_stopped has started: signal on its first retry
        loop.call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(wait, GUARD_S) is None
    finally:
        await bot.session.close()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the handler is removed again"


def test_storage_problem_names_a_missing_folder_only(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "h.sqlite3"
    assert storage_problem(StorageSettings(path=str(missing))) == (
        f"storage.path {missing}: the folder {missing.parent} does not exist; create it"
    )
    (tmp_path / "file").write_text("")
    inside_a_file = tmp_path / "file" / "h.sqlite3"
    assert storage_problem(StorageSettings(path=str(inside_a_file))) == (
        f"storage.path {inside_a_file}: {inside_a_file.parent} is not a folder"
    )
    assert storage_problem(StorageSettings(path=str(tmp_path / "h.sqlite3"))) is None
    assert storage_problem(StorageSettings(path=":memory:")) is None
    postgres = StorageSettings.model_validate({"path": str(missing), "url": "postgresql://h/db"})
    assert storage_problem(postgres) is None
