"""The command line as users run it: the sandbox, start-up errors, a graceful stop."""

from __future__ import annotations

import asyncio
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from bot.bitrix24.codes import TRANSFER
from bot.sandbox.portal import Fault
from tests.conftest import ANNA, WEBHOOK_CODE, make_portal
from tests.harness import CONFIG_YAML, OLGA, TOKEN, fakes_env
from tests.processes import CLEAN_ENV, ROOT, bot_process


def run_cli(
    *args: str, stdin: str = "", env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**CLEAN_ENV, "LANG": "en_US.UTF-8", **(env or {})},
    )


def test_sandbox_shows_a_transfer_and_its_announcement() -> None:
    result = run_cli("demo", stdin="/transfer 2043 @anna\n/transfer 9999 @anna\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "bot: ✅ Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova" in lines
    assert (
        "[team chat] 🔁 Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova, by Olga"
        in lines
    )
    assert any(line.startswith("bot: ❌ Dialog 9999: No such dialog") for line in lines)
    assert "Traceback" not in result.stderr


def test_sandbox_exits_cleanly_on_empty_input() -> None:
    result = run_cli("demo", stdin="")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_run_without_token_names_the_variable_and_exits_2() -> None:
    result = run_cli("--config", "config.yaml")
    assert result.returncode == 2
    assert "TELEGRAM_BOT_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_with_a_broken_config_lists_problems_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "config.yaml"
    bad.write_text("operators:\n  - {key: anna, bitrix_id: zero, name: Anna}\n")
    result = run_cli("--config", str(bad))
    assert result.returncode == 2
    assert "operators[0].bitrix_id (line 2): must be a positive integer" in result.stderr
    assert "Traceback" not in result.stderr


def test_bot_config_env_var_picks_the_file(tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("languag: en\n")
    result = run_cli("check", env={"BOT_CONFIG": str(other)})
    assert result.returncode == 1
    assert "languag (line 1): unknown key (a typo?); did you mean 'language'?" in result.stderr


async def test_sigterm_lets_the_transfer_in_flight_finish_and_reply(tmp_path: Path) -> None:
    from bot.sandbox.telegram import FakeTelegram

    portal = make_portal()
    portal.inject("batch", Fault.delay(1.0, apply=True), carrying=TRANSFER)
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG_YAML)
    async with portal, FakeTelegram(TOKEN, bot_username="handoff_test_bot") as telegram:
        env = fakes_env(portal, telegram)
        async with bot_process(config, **env) as bot:
            telegram.send_message("/transfer 2043 @anna", user_id=OLGA)
            await telegram.wait_for(
                lambda: bool(portal.calls_to(TRANSFER)), timeout=30, interval=0.02
            )
            assert telegram.messages_to(OLGA) == [], "the transfer is still in flight"
            code = await bot.stop()  # while the portal is still answering
        logs = bot.stderr
        assert code == 0, logs
        [reply] = telegram.messages_to(OLGA)
        assert reply.plain_text.startswith("✅ Dialog 2043")
        assert portal.dialogs[2043].owner == ANNA
        assert WEBHOOK_CODE not in logs
        assert TOKEN.split(":")[1] not in logs
        assert "Traceback" not in logs


DEMO = "$ python -m bot demo"


def readme_transcripts() -> list[list[str]]:
    """Every code block of the README that is a sandbox session: it starts with "> ", or with
    the demo's command line when it takes options (``$ python -m bot demo --lang ru``)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [block.strip("\n").splitlines() for block in readme.split("```")[1::2]]
    return [
        block
        for block in blocks
        if block and (block[0].startswith("> ") or block[0].startswith(DEMO))
    ]


@pytest.mark.parametrize("transcript", readme_transcripts(), ids=lambda t: t[0])
def test_readme_transcripts_are_what_the_sandbox_prints(transcript: list[str]) -> None:
    options = transcript[0].removeprefix(DEMO).split() if transcript[0].startswith(DEMO) else []
    shown = transcript[1:] if options else transcript
    typed = [line[2:] for line in shown if line.startswith("> ")]
    result = run_cli("demo", *options, stdin="".join(f"{line}\n" for line in typed))
    assert result.returncode == 0, result.stderr
    assert session(result.stdout) == shown


def session(stdout: str) -> list[str]:
    """What the sandbox printed after its greeting: from the first typed line on."""
    lines = stdout.splitlines()
    typed = [i for i, line in enumerate(lines) if line.startswith("> ")]
    return lines[typed[0] :] if typed else []


def test_the_readme_has_transcripts_in_both_languages() -> None:
    transcripts = readme_transcripts()
    assert len(transcripts) >= 6
    assert any(t[0] == f"{DEMO} --lang ru" for t in transcripts)


async def test_sigkill_mid_transfer_then_redelivery_transfers_exactly_once(tmp_path: Path) -> None:
    from bot.sandbox.telegram import FakeTelegram
    from tests.test_e2e_audit import command

    portal = make_portal()
    portal.inject("batch", Fault.delay(2.0, apply=True), carrying=TRANSFER)
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG_YAML.replace("${STORAGE_PATH:-:memory:}", "handoff.sqlite3"))
    update = {**command("/transfer 2043 @anna"), "update_id": 777}

    async with portal, FakeTelegram(TOKEN, bot_username="handoff_test_bot") as telegram:
        env = fakes_env(portal, telegram)
        async with bot_process(config, **env) as first:
            telegram.add_update(update)
            await telegram.wait_for(
                lambda: bool(portal.calls_to(TRANSFER)),
                timeout=30,
                interval=0.02,  # the portal's state: the fake Bot API cannot wake us for it
            )
            first.process.kill()  # SIGKILL while the portal is still answering the transfer
            await first.process.wait()
        assert telegram.messages_to(OLGA) == [], "it died before it could reply"

        async with bot_process(config, **env) as second:
            telegram.add_update(update)  # Telegram delivers the unconfirmed update again
            await telegram.wait_for(lambda: bool(telegram.messages_to(OLGA)), timeout=30)
            await second.stop()
        [notice] = telegram.messages_to(OLGA)
        assert notice.plain_text.startswith("⚠️ I was restarted while carrying out this command")
        assert "• 2043 «Ivan Petrov — WhatsApp» · Anna Smirnova" in notice.plain_text
        assert len(portal.calls_to(TRANSFER)) == 1, "exactly one transfer"
        assert portal.dialogs[2043].owner == ANNA
        assert "Traceback" not in second.stderr


async def test_directory_sync_writes_a_file_the_config_can_include(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("include: directory.generated.yaml\n", encoding="utf-8")
    (tmp_path / "directory.generated.yaml").write_text("operators: []\n", encoding="utf-8")
    async with make_portal() as portal:
        env = {**CLEAN_ENV, "BITRIX24_WEBHOOK_URL": portal.url}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "directory",
            "sync",
            "--config",
            str(config),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert "+ operator anna.smirnova (15) Anna Smirnova" in out.decode()
    checked = run_cli("check", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "@anna.smirnova" in checked.stdout and "Pavel Orlov" not in checked.stdout


# ---- the command line: names, help, options, audit, check warnings -------------------------


def test_help_names_the_program_the_way_it_was_started() -> None:
    module = run_cli("--help")
    assert module.returncode == 0, module.stderr
    assert module.stdout.startswith("usage: python -m bot ")
    script = Path(sys.executable).with_name("handoff-bot")  # installed next to this Python
    assert script.exists(), "pip install -e . installs the handoff-bot script"
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, env=CLEAN_ENV
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: handoff-bot ")
    assert "python -m bot" not in result.stdout
    check_help = subprocess.run(
        [str(script), "check", "--help"], capture_output=True, text=True, timeout=60, env=CLEAN_ENV
    )
    assert check_help.stdout.startswith("usage: handoff-bot check ")


def test_directory_sync_has_a_help_of_its_own() -> None:
    result = run_cli("directory", "sync", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m bot directory sync [-h] [--config PATH]")
    assert "directory.generated.yaml" in result.stdout
    assert "{sync}" not in result.stdout, "that is the help of `directory`"
    bare = run_cli("directory")
    assert bare.returncode == 2 and "{sync}" in bare.stderr


def test_global_options_work_after_the_subcommand_too(tmp_path: Path) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text(CONFIG_YAML)
    checked = run_cli("check", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"{config}: OK")
    # after the subcommand wins over before it
    both = run_cli("--config", "nowhere.yaml", "check", "--config", str(config))
    assert both.returncode == 0, both.stderr
    # `run` takes the log options after it: it gets as far as the missing token
    ran = run_cli("run", "--log-level", "DEBUG", "--log-format", "json", "--config", str(config))
    assert ran.returncode == 2
    assert "TELEGRAM_BOT_TOKEN" in ran.stderr and "unrecognized" not in ran.stderr
    # an option a subcommand has no use for is refused, not silently ignored
    wrong = run_cli("check", "--listen", "0.0.0.0:8080")
    assert wrong.returncode == 2 and "unrecognized arguments: --listen" in wrong.stderr


def test_audit_never_creates_a_database(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("storage: {path: handoff.sqlite3}\n")
    result = run_cli("audit", "--config", str(config))
    assert result.returncode == 1
    assert result.stdout == ""
    database = tmp_path.resolve() / "handoff.sqlite3"
    assert result.stderr.startswith(f"no database at {database}: the bot has not run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"], "no file was created"


def test_audit_of_a_database_without_an_audit_trail_says_so(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("storage: {path: empty.sqlite3}\n")
    (tmp_path / "empty.sqlite3").write_bytes(b"")
    result = run_cli("audit", "--config", str(config))
    assert result.returncode == 1
    assert "no audit trail in this database yet" in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "empty.sqlite3").read_bytes() == b"", "read only: nothing written"


WARNING_FREE_ENV = {
    "TELEGRAM_BOT_TOKEN": TOKEN,
    "BITRIX24_WEBHOOK_URL": f"https://portal.example/rest/1/{WEBHOOK_CODE}/",
}


def warnings(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("warning:")]


def test_check_warns_when_nobody_may_use_the_bot_or_there_is_nobody_to_transfer_to(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("telegram: {token: '${TELEGRAM_BOT_TOKEN}'}\n")
    result = run_cli("check", "--config", str(config), env=WARNING_FREE_ENV)
    assert result.returncode == 0, result.stderr
    assert warnings(result) == [
        "warning: no supervisors: nobody may use the bot; "
        "list Telegram user IDs under supervisors:",
        "warning: no operators and no queues: nobody to transfer dialogs to; "
        "list them under operators: and queues: (or run directory sync)",
    ]
    queues_only = tmp_path / "queues.yaml"
    queues_only.write_text(
        "supervisors: [{id: 1, name: Olga}]\nqueues: [{key: sup, bitrix_id: 3, name: Support}]\n"
    )
    assert warnings(run_cli("check", "--config", str(queues_only))) == []


def test_check_warns_about_secrets_written_in_the_file_without_showing_them(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        CONFIG_YAML.replace(
            "${BITRIX24_WEBHOOK_URL}", f"https://b24.example/rest/1/{WEBHOOK_CODE}/"
        ).replace("${TELEGRAM_BOT_TOKEN}", f'"{TOKEN}"')
    )
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert warnings(result) == [
        "warning: telegram.token (line 9): the bot's token is written in the file: move it to "
        "the environment (export TELEGRAM_BOT_TOKEN=<token>) and write token: "
        "${TELEGRAM_BOT_TOKEN}",
        "warning: bitrix24.webhook_url (line 3): the webhook's secret code is written in the "
        "file: move the URL to the environment (export BITRIX24_WEBHOOK_URL="
        "https://<portal>/rest/<user_id>/<code>/) and write webhook_url: ${BITRIX24_WEBHOOK_URL}",
    ]
    output = result.stdout + result.stderr
    assert WEBHOOK_CODE not in output
    assert TOKEN.split(":")[1] not in output
    # the environment winning over the file does not take the secret out of the file
    assert len(warnings(run_cli("check", "--config", str(config), env=WARNING_FREE_ENV))) == 2


def test_check_is_quiet_about_secrets_read_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        CONFIG_YAML.replace(
            "${BITRIX24_WEBHOOK_URL}", "https://b24.example/rest/1/${B24_CODE}/"
        )  # only the code from the environment: fine too
    )
    env = {"TELEGRAM_BOT_TOKEN": TOKEN, "B24_CODE": WEBHOOK_CODE}
    result = run_cli("check", "--config", str(config), env=env)
    assert result.returncode == 0, result.stderr
    assert warnings(result) == []
    sample = run_cli("check", "--config", "config.yaml", env=WARNING_FREE_ENV)
    assert sample.returncode == 0, sample.stderr
    assert warnings(sample) == []


def test_version_is_the_installed_packages() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"python -m bot {importlib.metadata.version('handoff-bot')}"
