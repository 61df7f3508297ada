"""``python -m bot check --online`` and the same check at start-up, against the simulator."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.app import App, build_app, build_bot
from bot.config import Config, mask_webhook, parse_config
from bot.directory_sync import GENERATED_NAME
from bot.portal_check import (
    Finding,
    check_in_background,
    check_portal,
    directory_sync_in_use,
    stops_the_bot,
)
from bot.sandbox.oauth import FakeOAuthServer
from bot.sandbox.portal import Fault, PortalSimulator
from bot.sandbox.telegram import FakeTelegram
from tests.conftest import ANNA, WEBHOOK_CODE, make_portal
from tests.harness import CONFIG_YAML, TOKEN, fakes_env
from tests.processes import CLEAN_ENV, ROOT, bot_process
from tests.test_cli import run_cli

GOOD_SCOPES = [
    "ok: scope imopenlines is granted (transfers)",
    "ok: scope user is granted (online marks, directory sync)",
]
ANNA_WARNING = (
    "warning: operator anna (Anna Smirnova, bitrix_id 15) is the webhook's own user: "
    "the portal refuses transfers to them; make the webhook as another user"
)
USER_NOTE = (
    "note: scope user is not granted: operators show no online marks, and "
    "`python -m bot directory sync` would need it"
)
USER_WARNING = (
    "warning: scope user is not granted, and directory sync is in use: "
    "`python -m bot directory sync` will fail until the webhook has it (and operators show no "
    "online marks)"
)
# failures are repeated while the deadline allows: keep it short
QUICK = {"TIMEOUT_S": "1", "DEADLINE_S": "1.5"}


def config_file(folder: Path, text: str = CONFIG_YAML) -> Path:
    path = folder / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


async def check_online(
    config: Path, webhook_url: str | None, env: dict[str, str] | None = None
) -> tuple[int, list[str], str]:
    """Run the CLI as a user would while the portal answers in this loop: the exit code, the
    lines of the online report (after the offline part), and all of stdout and stderr."""
    url = {"BITRIX24_WEBHOOK_URL": webhook_url} if webhook_url else {}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "bot", "check", "--online", "--config", str(config)),
        cwd=ROOT,
        env={**CLEAN_ENV, "LANG": "en_US.UTF-8", **url, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    stdout, stderr = out.decode(), err.decode()
    assert process.returncode is not None
    assert "Traceback" not in stdout + stderr
    report = stdout.rsplit("\n\n", 1)[-1].splitlines() if "\n\n" in stdout else []
    return process.returncode, report, stdout + stderr


def portal_line(url: str) -> str:
    return f"ok: the portal answers at {mask_webhook(url)}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: nothing listens there


# ---- the command line -----------------------------------------------------------------------


async def test_a_good_webhook_reports_its_user_and_scopes_in_one_request(tmp_path: Path) -> None:
    async with make_portal() as portal:
        code, report, output = await check_online(config_file(tmp_path), portal.url)
    assert code == 0, output
    assert report == [
        portal_line(portal.url),
        "ok: the webhook code is valid",
        "ok: the webhook acts as user 1, Webhook User (admin)",
        *GOOD_SCOPES,
    ]
    assert WEBHOOK_CODE not in output
    assert [call.method for call in portal.calls if not call.in_batch] == ["batch"]
    assert [call.method for call in portal.calls if call.in_batch] == ["profile", "scope"]


async def test_a_wrong_webhook_code_is_one_problem_and_is_never_printed(tmp_path: Path) -> None:
    async with make_portal() as portal:
        wrong = portal.url.replace(WEBHOOK_CODE, "wr0ngC0deTyped")
        code, report, output = await check_online(config_file(tmp_path), wrong)
    assert code == 1
    assert report == [
        "problem: HTTP 401 NO_AUTH_FOUND: the webhook code is wrong or the webhook was deleted; "
        "copy the inbound webhook's URL again into BITRIX24_WEBHOOK_URL"
    ]
    assert "wr0ngC0deTyped" not in output
    assert WEBHOOK_CODE not in output


@pytest.mark.parametrize("status", [301, 308])
async def test_a_moved_portal_names_the_new_address_masked(tmp_path: Path, status: int) -> None:
    async with make_portal() as portal:
        portal.move_to("https://new-name.bitrix24.ru", status)
        code, report, output = await check_online(config_file(tmp_path), portal.url, QUICK)
    assert code == 1
    assert report == [
        f"problem: the portal moved: {mask_webhook(portal.url)} answers HTTP {status} with a "
        "redirect to https://new-name.bitrix24.ru/rest/1/***/; "
        "update bitrix24.webhook_url / BITRIX24_WEBHOOK_URL"
    ]
    assert WEBHOOK_CODE not in output


async def test_without_the_imopenlines_scope_the_bot_cannot_work(tmp_path: Path) -> None:
    async with make_portal(scopes=["user", "crm"]) as portal:
        code, report, _ = await check_online(config_file(tmp_path), portal.url)
    assert code == 1
    assert report[3:] == [
        "problem: scope imopenlines is not granted: the bot cannot see or move dialogs; "
        "add it to the webhook in Bitrix24 (granted: crm, user)",
        "ok: scope user is granted (online marks, directory sync)",
    ]


async def test_a_webhook_user_who_is_an_operator_is_a_warning(tmp_path: Path) -> None:
    portal = make_portal(webhook_user_id=ANNA, webhook_user_name="Anna Smirnova")
    async with portal:
        code, report, _ = await check_online(config_file(tmp_path), portal.url)
    assert code == 0
    assert report == [
        portal_line(portal.url),
        "ok: the webhook code is valid",
        "ok: the webhook acts as user 15, Anna Smirnova (admin)",
        ANNA_WARNING,
        *GOOD_SCOPES,
    ]


@pytest.mark.parametrize("synced", [False, True], ids=["no-sync", "sync"])
async def test_a_missing_user_scope_matters_only_with_directory_sync(
    tmp_path: Path, synced: bool
) -> None:
    text = CONFIG_YAML
    if synced:
        (tmp_path / GENERATED_NAME).write_text("operators: []\n", encoding="utf-8")
        text = f"include: {GENERATED_NAME}\n{CONFIG_YAML}"
    async with make_portal(scopes=["imopenlines"]) as portal:
        code, report, _ = await check_online(config_file(tmp_path, text), portal.url)
    assert code == 0
    assert report[3:] == [GOOD_SCOPES[0], USER_WARNING if synced else USER_NOTE]


async def test_an_unreachable_portal_is_one_line_without_traceback(tmp_path: Path) -> None:
    port = closed_port()
    url = f"http://127.0.0.1:{port}/rest/1/{WEBHOOK_CODE}/"
    code, report, output = await check_online(config_file(tmp_path), url, QUICK)
    assert code == 1
    [line] = report
    assert line.startswith(f"problem: cannot connect to 127.0.0.1:{port}: "), line
    assert WEBHOOK_CODE not in output


def test_no_webhook_url_is_a_usage_error_naming_the_variable(tmp_path: Path) -> None:
    result = run_cli("check", "--online", "--config", str(config_file(tmp_path)))
    assert result.returncode == 2
    assert result.stderr == (
        "bitrix24.webhook_url is not set: "
        "export BITRIX24_WEBHOOK_URL=https://<portal>/rest/<user_id>/<code>/\n"
    )


def test_without_online_nothing_asks_the_portal(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/rest/1/{WEBHOOK_CODE}/"
    result = run_cli(
        "check", "--config", str(config_file(tmp_path)), env={"BITRIX24_WEBHOOK_URL": url}
    )
    assert result.returncode == 0, result.stderr
    assert "problem:" not in result.stdout and "ok: the portal" not in result.stdout


# ---- check_portal itself: the other ways a portal can fail ------------------------------------


def load(url: str, **env: str) -> Config:
    return parse_config(CONFIG_YAML, {"BITRIX24_WEBHOOK_URL": url, **QUICK, **env})


async def test_an_answer_that_is_not_bitrix24_json_is_a_problem() -> None:
    async with make_portal() as portal:
        portal.inject(None, Fault.raw(200, "<html><body>Welcome to nginx!</body></html>"), 10)
        findings = await check_portal(load(portal.url), None)
    assert findings == [
        Finding(
            "problem",
            f"{mask_webhook(portal.url)} answers HTTP 200 but not as Bitrix24 does "
            "(no Bitrix24 JSON): is bitrix24.webhook_url / BITRIX24_WEBHOOK_URL "
            "the portal's address?",
        )
    ]
    assert stops_the_bot(findings)


async def test_tls_to_a_plain_http_port_is_a_tls_problem() -> None:
    async with make_portal() as portal:
        url = portal.url.replace("http://", "https://")
        findings = await check_portal(load(url), None)
    host = portal.base_url.removeprefix("http://")
    assert findings == [
        Finding("problem", f"TLS with {host} failed: a bad or untrusted certificate")
    ]


async def test_a_portal_that_does_not_answer_in_time_is_a_problem() -> None:
    async with make_portal() as portal:
        portal.inject("batch", Fault.delay(5.0), 10)
        findings = await check_portal(load(portal.url, TIMEOUT_S="0.5", DEADLINE_S="0.8"), None)
    [finding] = findings
    host = portal.base_url.removeprefix("http://")
    assert finding.level == "problem"
    assert finding.text.startswith(f"{host} did not answer in time"), finding.text


async def test_an_oauth_refresh_token_that_is_revoked_is_invalid_grant(tmp_path: Path) -> None:
    async with make_portal(oauth_tokens=set()) as portal:
        portal.expire("old-access-token")
        server = FakeOAuthServer(
            client_id="local.app.42",
            client_secret="Cl1entS3cret",
            refresh_token="the-current-refresh-token",
            portal=portal,
        )
        async with server:
            text = CONFIG_YAML.replace(
                "  webhook_url: ${BITRIX24_WEBHOOK_URL}\n",
                f"  oauth:\n    portal: {portal.base_url}\n    server: {server.url}\n"
                "    client_id: local.app.42\n    client_secret: Cl1entS3cret\n"
                "    access_token: old-access-token\n    refresh_token: a-revoked-one\n"
                f"    tokens_file: {tmp_path / 'tokens.json'}\n",
            )
            findings = await check_portal(parse_config(text, QUICK), None)
    assert findings == [
        Finding(
            "problem",
            "OAuth: invalid_grant: the refresh token is expired or revoked: "
            "authorize the app again",
        )
    ]


async def test_a_command_failing_inside_the_batch_is_a_warning_not_a_stop() -> None:
    # what a portal answers to a batch whose first command (profile) failed
    answer = {
        "result": {
            "result": {"c1": ["imopenlines", "user"]},
            "result_error": {"c0": {"error": "INTERNAL_SERVER_ERROR", "error_description": ""}},
        }
    }
    async with make_portal() as portal:
        portal.inject("batch", Fault.json(200, answer))
        findings = await check_portal(load(portal.url), None)
    assert [str(f) for f in findings][2:] == [
        "warning: could not tell which user the webhook acts as (INTERNAL_SERVER_ERROR)",
        *GOOD_SCOPES,
    ]
    assert not stops_the_bot(findings)


def test_directory_sync_is_in_use_with_the_generated_file_or_an_include(tmp_path: Path) -> None:
    plain = config_file(tmp_path, "include: [people.yaml]\n")
    assert not directory_sync_in_use(plain)
    assert not directory_sync_in_use(None)
    included = config_file(tmp_path, f"include: [people.yaml, ./{GENERATED_NAME}]\n")
    assert directory_sync_in_use(included)
    (tmp_path / GENERATED_NAME).write_text("operators: []\n", encoding="utf-8")
    assert directory_sync_in_use(config_file(tmp_path, "language: en\n"))


# ---- at start-up --------------------------------------------------------------------------


@asynccontextmanager
async def started(portal: PortalSimulator) -> AsyncIterator[tuple[App, FakeTelegram]]:
    """The real bot polling a fake Bot API, built as ``run_polling`` builds it."""
    async with portal, FakeTelegram(TOKEN, bot_username="handoff_test_bot") as telegram:
        env = fakes_env(portal, telegram)
        config = parse_config(CONFIG_YAML, env)
        app, bot = build_app(config, check_portal=True), build_bot(config)
        polling = asyncio.create_task(app.poll(bot, handle_signals=False, polling_timeout=1))
        try:
            await telegram.wait_for(lambda: bool(telegram.calls_to("getUpdates")))
            yield app, telegram
        finally:
            if not polling.done():
                await app.dispatcher.stop_polling()
            await polling


def check_records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "bot.portal_check"]


async def test_start_up_logs_each_finding_and_warns_of_the_operator(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.portal_check")
    portal = make_portal(webhook_user_id=ANNA, webhook_user_name="Anna Smirnova")
    async with started(portal) as (app, _):
        assert app.portal_check is not None
        await asyncio.wait_for(app.portal_check, 10)
    info, warning = logging.INFO, logging.WARNING
    assert check_records(caplog) == [
        (info, portal_line(portal.url)),
        (info, "ok: the webhook code is valid"),
        (info, "ok: the webhook acts as user 15, Anna Smirnova (admin)"),
        (warning, ANNA_WARNING),
        *((info, line) for line in GOOD_SCOPES),
    ]


async def test_shutdown_cancels_a_start_up_check_still_waiting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.portal_check")
    portal = make_portal()
    portal.inject("batch", Fault.delay(30.0))
    loop = asyncio.get_running_loop()
    async with started(portal) as (app, telegram):
        # the portal's state: the fake Bot API cannot wake us for it
        await telegram.wait_for(lambda: bool(portal.calls_to("batch")), interval=0.02)
        stopping = loop.time()
    assert loop.time() - stopping < 5, "shutdown did not wait for the portal"
    assert app.portal_check is not None and app.portal_check.cancelled()
    assert check_records(caplog) == []


async def test_a_check_that_breaks_down_logs_one_line_without_traceback(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: Any) -> list[Finding]:
        raise RuntimeError(f"bad URL http://portal.example/rest/1/{WEBHOOK_CODE}/ here")

    monkeypatch.setattr("bot.portal_check.check_portal", broken)
    caplog.set_level(logging.INFO, logger="bot.portal_check")
    await check_in_background(load("http://127.0.0.1:1/rest/1/x/"), None)
    [record] = [r for r in caplog.records if r.name == "bot.portal_check"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "problem: the portal check failed: "
        "RuntimeError: bad URL http://portal.example/rest/1/***/ here"
    )
    assert record.exc_info is None


@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_the_running_bot_logs_the_check_at_start_up(tmp_path: Path, mode: str) -> None:
    portal = make_portal(webhook_user_id=ANNA, webhook_user_name="Anna Smirnova")
    config = config_file(tmp_path)
    async with portal, FakeTelegram(TOKEN, bot_username="handoff_test_bot") as telegram:
        env = fakes_env(portal, telegram, TELEGRAM_WEBHOOK_SECRET="hook-secret_0")
        webhook = ["--webhook-url", "https://bot.example.test/tg"]
        webhook += ["--listen", f"127.0.0.1:{closed_port()}"]
        async with bot_process(config, *(webhook if mode == "webhook" else []), **env) as bot:
            await bot.wait_for(lambda: bot.count(GOOD_SCOPES[-1]) > 0, timeout=30)
            code = await bot.stop()
    logs, lines = bot.stderr, bot.lines
    assert code == 0, logs
    checked = [line.split(" ", 2)[2] for line in lines if " bot.portal_check: " in line]
    assert checked == [
        f"INFO bot.portal_check: {portal_line(portal.url)}",
        "INFO bot.portal_check: ok: the webhook code is valid",
        "INFO bot.portal_check: ok: the webhook acts as user 15, Anna Smirnova (admin)",
        f"WARNING bot.portal_check: {ANNA_WARNING}",
        *(f"INFO bot.portal_check: {line}" for line in GOOD_SCOPES),
    ]
    assert WEBHOOK_CODE not in logs
    assert "Traceback" not in logs
