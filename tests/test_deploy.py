"""deploy/: the systemd unit, its env file and the README that installs them agree with the
bot, and the bot, started as the unit starts it, keeps inside the unit's sandbox."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

import bot.config
from bot.config import Config, load_config
from bot.sandbox.portal import PortalSimulator
from bot.sandbox.telegram import FakeTelegram, SentMessage
from bot.telegram_start import SERVICE_STORAGE
from tests.conftest import ANNA, BOB
from tests.harness import CONFIG_YAML, OLGA, PETR, TOKEN
from tests.processes import CLEAN_ENV, GUARD_S, ROOT, BotProcess

UNIT = ROOT / "deploy" / "handoff-bot.service"
ENV_EXAMPLE = ROOT / "deploy" / "handoff-bot.env.example"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="no systemd-analyze here (.ci/run installs it)"
)


def directives() -> dict[str, list[str]]:
    """The unit's ``Key=value`` lines, every value of a key in order (sections merged)."""
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def the(key: str) -> str:
    """The one value of ``key`` in the unit."""
    [value] = directives()[key]
    return value


def service_script() -> Path:
    """The ``handoff-bot`` script of the environment running the tests."""
    script = Path(sys.executable).parent / "handoff-bot"
    return script if script.exists() else Path(shutil.which("handoff-bot") or script)


def service_argv(config: Path) -> list[str]:
    """ExecStart as written, but with this environment's script and ``config`` for the file."""
    argv = shlex.split(the("ExecStart"))
    at = argv.index("--config") + 1
    return [str(service_script()), *argv[1:at], str(config), *argv[at + 1 :]]


def env_file(text: str) -> dict[str, str]:
    """``KEY=value`` lines as systemd's EnvironmentFile= (and ``set -a; .``) read them."""
    found = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith(("#", ";")):
            key, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", key), f"not KEY=value: {line!r}"
            found[key] = value
    return found


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Running it as a service")
    return text[start : text.index("\n## ", start + 1)]


def readme_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", readme_section(), re.DOTALL)


def state_directory() -> Path:
    return Path("/var/lib") / the("StateDirectory")


def configuration_directory() -> Path:
    return Path("/etc") / the("ConfigurationDirectory")


# ----------------------------------------------------------------------- the unit as files


@needs_systemd_analyze
def test_systemd_analyze_verify_finds_nothing_wrong_with_the_unit(tmp_path: Path) -> None:
    def verify(unit_text: str) -> str:
        unit = tmp_path / UNIT.name
        unit.write_text(unit_text)
        assert SYSTEMD_ANALYZE is not None
        done = subprocess.run(
            [SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)],
            capture_output=True,
            text=True,
            check=False,
        )
        about_it = [
            line
            for line in (done.stdout + done.stderr).splitlines()
            if UNIT.name in line or str(tmp_path) in line
        ]
        return "\n".join(about_it)

    # verify wants ExecStart's program to exist: the one this environment installed
    text = UNIT.read_text().replace(shlex.split(the("ExecStart"))[0], str(service_script()))
    assert verify(text) == ""
    # and it does read the file: a misspelt key is reported
    misspelt = text.replace("ProtectSystem=strict", "ProtectSystm=strict")
    assert "Unknown key" in verify(misspelt)


async def test_the_unit_runs_the_bot_with_its_config_and_exit_2_stops_the_restarts(
    tmp_path: Path,
) -> None:
    config = tmp_path / "etc" / "config.yaml"
    config.parent.mkdir()
    shutil.copy(ROOT / "config.yaml", config)
    elsewhere = tmp_path / "cwd"  # no config.yaml here: the one named must be the one read
    elsewhere.mkdir()
    process = await asyncio.create_subprocess_exec(
        *service_argv(config),
        cwd=elsewhere,
        env={k: v for k, v in CLEAN_ENV.items() if k not in bot_reads()},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), GUARD_S)
    # `run`, with that file: it got as far as the missing secrets, each one line
    assert err.decode().splitlines() == [
        "telegram.token is not set: export TELEGRAM_BOT_TOKEN=<token from @BotFather>",
        "bitrix24.webhook_url is not set: export BITRIX24_WEBHOOK_URL="
        "https://<portal>/rest/<user_id>/<code>/",
    ]
    assert out == b""
    # a config problem is exit 2, which the unit does not restart
    assert process.returncode == int(the("RestartPreventExitStatus")) == 2
    assert the("Restart") == "on-failure"


def bot_reads() -> set[str]:
    """The environment variables the bot reads: bot/config.py names each one ``ENV_...``."""
    return {v for k, v in vars(bot.config).items() if k.startswith("ENV_") and isinstance(v, str)}


def test_the_env_example_lists_exactly_the_variables_the_bot_reads() -> None:
    example = env_file(ENV_EXAMPLE.read_text())
    assert set(example) == bot_reads()
    assert all(value == "" for value in example.values()), "no secret in the repository"
    # each one explained just above it
    lines = ENV_EXAMPLE.read_text().splitlines()
    for name in example:
        assert lines[lines.index(f"{name}=") - 1].startswith("# "), name
    # where the unit reads it from, and where the README puts it, root's only
    env_path = configuration_directory() / "env"
    assert the("EnvironmentFile") == str(env_path)
    assert f"install -m 600 deploy/{ENV_EXAMPLE.name} {env_path}" in readme_blocks("sh")[0]


def test_the_readme_installs_what_the_unit_runs() -> None:
    install = readme_blocks("sh")[0]
    argv = shlex.split(the("ExecStart"))
    venv = Path(argv[0]).parent.parent
    config = configuration_directory() / "config.yaml"
    assert argv[0] == f"{venv}/bin/handoff-bot"
    assert f"python3 -m venv {venv}\n" in install
    assert f"{venv}/bin/pip install -c constraints.txt .  " in install  # not editable
    assert f"useradd --system --home-dir {state_directory()}" in install
    assert f"--shell /usr/sbin/nologin {the('User')}\n" in install
    assert the("Group") == the("User")
    assert f"install -m 640 -g {the('Group')} config.yaml {config}\n" in install
    assert f"deploy/{UNIT.name} /etc/systemd/system/{UNIT.name}\n" in install
    assert argv[argv.index("--config") + 1] == str(config)
    start = readme_blocks("sh")[1]
    assert f"--config {config} check --online" in start
    assert f"systemctl enable --now {UNIT.stem}" in start


def test_the_database_the_readme_configures_is_in_the_state_directory(tmp_path: Path) -> None:
    [storage] = readme_blocks("yaml")
    config = tmp_path / "config.yaml"
    config.write_text(storage)
    path = Path(load_config(config, env={}).storage.path)
    assert path.parent == state_directory()
    assert str(path) == SERVICE_STORAGE, "what the bot tells an admin who left it in /etc"
    [tokens] = re.findall(r"tokens_file: (\S+)`", readme_section())
    assert Path(tokens).parent == state_directory()
    # the state directory is the only one the unit lets it write
    assert the("ProtectSystem") == "strict"
    assert "ReadWritePaths" not in directives()


def test_systemd_waits_longer_than_the_bot_takes_to_stop() -> None:
    grace = Config().shutdown_grace_s
    timeout = the("TimeoutStopSec")
    seconds = int(timeout.removesuffix("s"))
    assert grace < seconds <= grace + 30
    said = " ".join(readme_section().split())
    assert f"`shutdown_grace_s` ({grace:g} s); the unit waits {seconds} s (`Timeout" in said
    assert shlex.split(the("ExecReload")) == ["/bin/kill", "-HUP", "$MAINPID"]


def test_the_license_is_mit_and_packaged() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    [name] = project["license-files"]
    text = (ROOT / name).read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 handoff bot contributors\n")


# ----------------------------------------------------------------- the bot inside the unit


@functools.cache
def syscall_set(name: str) -> frozenset[str]:
    """The system calls of a systemd set (``@system-service``), groups expanded."""
    assert SYSTEMD_ANALYZE is not None
    out = subprocess.run(
        [SYSTEMD_ANALYZE, "syscall-filter", name], capture_output=True, text=True, check=True
    ).stdout
    found: set[str] = set()
    for line in out.splitlines()[1:]:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            found |= syscall_set(entry) if entry.startswith("@") else {entry}
    return frozenset(found)


def filtered_syscalls() -> frozenset[str]:
    """What SystemCallFilter= allows: the sets allowed, less those denied (``~``)."""
    allowed: set[str] = set()
    denied: set[str] = set()
    for value in directives()["SystemCallFilter"]:
        into = denied if value.startswith("~") else allowed
        for name in value.removeprefix("~").split():
            into |= syscall_set(name) if name.startswith("@") else {name}
    return frozenset(allowed - denied)


_CALL = re.compile(r"^\d+ +([a-z0-9_]+)\((.*)$")
_PATH_ARG = re.compile(r'^(?:AT_FDCWD, )?"([^"]*)"')
_WRITES = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC")
_OWN_PROC = re.compile(r"^/proc/(self|thread-self|\d+)(/|$)")  # what ProcSubset=pid leaves
# read and not needed: prometheus_client looks for the boot time when imported, and goes on
# without it when the unit hides the file
_PROBED = frozenset({"/proc/stat"})
# what PrivateDevices=yes leaves
_DEVICES = re.compile(r"^/dev/(null|zero|full|random|urandom|tty|ptmx|pts/.*|shm/.*)$")


def sandbox_breaches(trace: str, state: Path) -> list[str]:
    """The calls in an strace log that the unit's sandbox would refuse."""
    allowed = filtered_syscalls()
    # SQLite gives a new -wal or -shm file the database's owner, but only when it runs as
    # root (robustFchown); the unit runs the bot as its own user
    as_root = os.geteuid() == 0
    families = set(the("RestrictAddressFamilies").split())
    breaches = []
    for line in trace.splitlines():
        call = _CALL.match(line)
        if call is None:
            continue
        name, args = call.groups()
        path_arg = _PATH_ARG.match(args)
        path = Path("/", path_arg.group(1)) if path_arg else None  # cwd is / for a service
        if name not in allowed and not (name == "fchown" and as_root):
            breaches.append(f"SystemCallFilter: {line}")
        if (name.startswith("mmap") and "PROT_WRITE" in args and "PROT_EXEC" in args) or (
            name.endswith("mprotect") and "PROT_EXEC" in args
        ):
            breaches.append(f"MemoryDenyWriteExecute: {line}")
        if name in ("socket", "socketpair") and args.split(",")[0] not in families:
            breaches.append(f"RestrictAddressFamilies: {line}")
        if path is None:
            continue
        if path.parts[1:2] == ("proc",) and not _OWN_PROC.match(str(path)):
            if str(path) in _PROBED:
                continue
            breaches.append(f"ProcSubset=pid: {line}")
        if path.parts[1:2] == ("dev",) and not _DEVICES.match(str(path)) and "ENOENT" not in args:
            breaches.append(f"PrivateDevices: {line}")
        writes = name in ("openat", "open", "creat") and any(f in args for f in _WRITES)
        changes = name.startswith(("unlink", "rename", "mkdir", "rmdir", "link", "symlink"))
        if (writes or changes) and not path.is_relative_to(state) and not _DEVICES.match(str(path)):
            breaches.append(f"ProtectSystem=strict, writes outside {state}: {line}")
    return breaches


async def first_reply(telegram: FakeTelegram, bot: BotProcess, chat_id: int) -> SentMessage:
    """The bot's first message to ``chat_id``; fails at once if the bot exits first."""
    waiting = asyncio.ensure_future(telegram.wait_for_messages(1, chat_id=chat_id, timeout=GUARD_S))
    await asyncio.wait({waiting, bot.reader}, return_when=asyncio.FIRST_COMPLETED)
    if not waiting.done():
        waiting.cancel()
        raise AssertionError(f"the bot exited first:\n{bot.stderr}")
    return waiting.result()[0]


def child_of(pid: int) -> int:
    """The process ``pid`` started: the bot, under strace."""
    return int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])


def can_trace() -> bool:
    if shutil.which("strace") is None:
        return False
    probe = subprocess.run(["strace", "-qq", "-o", os.devnull, "true"], check=False)
    return probe.returncode == 0


@needs_systemd_analyze
@pytest.mark.skipif(not can_trace(), reason="no strace here, or ptrace is not allowed")
async def test_the_bot_as_the_unit_runs_it_keeps_inside_the_sandbox(
    tmp_path: Path, portal: PortalSimulator
) -> None:
    """Commands in English and Russian, a reload and a stop, every system call traced:
    nothing in the trace is what the unit's filters and read-only paths would refuse."""
    etc, state = tmp_path / "etc", tmp_path / "state"  # /etc/handoff-bot, /var/lib/handoff-bot
    etc.mkdir()
    state.mkdir()
    config = etc / "config.yaml"
    config.write_text(CONFIG_YAML.replace("${STORAGE_PATH:-:memory:}", str(state / "h.sqlite3")))
    trace = tmp_path / "strace.log"
    async with FakeTelegram(TOKEN) as telegram:
        secrets = ENV_EXAMPLE.read_text()
        for name, value in (
            ("TELEGRAM_BOT_TOKEN", TOKEN),
            ("BITRIX24_WEBHOOK_URL", portal.url),
            ("TELEGRAM_API_URL", telegram.base_url),
        ):
            secrets = secrets.replace(f"\n{name}=\n", f"\n{name}={value}\n")
        env = {
            "PATH": os.environ["PATH"],
            "LANG": "C.UTF-8",
            # the service's venv holds its compiled modules; a test run would write them
            "PYTHONDONTWRITEBYTECODE": "1",
            **env_file(secrets),
        }
        process = await asyncio.create_subprocess_exec(
            *["strace", "-f", "-qq", "-o", str(trace), *service_argv(config)],
            cwd="/",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        bot = BotProcess(process)
        try:
            telegram.send_message("/transfer 2043 @anna", user_id=OLGA)
            telegram.send_message("/transfer 2044 @bob", user_id=PETR, language_code="ru")
            done = await first_reply(telegram, bot, OLGA)
            сделано = await first_reply(telegram, bot, PETR)
            main_pid = child_of(process.pid)  # systemd's $MAINPID
            reload_signal = shlex.split(the("ExecReload"))[1].removeprefix("-")
            os.kill(main_pid, signal.Signals[f"SIG{reload_signal}"])
            await bot.wait_for(lambda: bot.count("config reloaded") == 1)
            stopping = time.monotonic()
            os.kill(main_pid, signal.SIGTERM)
            code = await bot.finish()
            stopped_in = time.monotonic() - stopping
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert code == 0, bot.stderr
    assert stopped_in < int(the("TimeoutStopSec").removesuffix("s"))
    assert done.plain_text.startswith("✅ Dialog 2043"), done.plain_text
    assert сделано.plain_text.startswith("✅ Диалог 2044"), сделано.plain_text
    assert (portal.dialogs[2043].owner, portal.dialogs[2044].owner) == (ANNA, BOB)
    assert "Traceback" not in bot.stderr
    log = trace.read_text()
    assert "h.sqlite3" in log, "the trace covers the database"
    breaches = sandbox_breaches(log, state)
    assert not breaches, "\n".join(breaches)


def read_only(folder: Path) -> list[str]:
    """A command prefix that runs a program with ``folder`` mounted read-only, as
    ProtectSystem=strict mounts /etc; empty if this machine cannot."""
    remount = 'mount --make-rprivate / && mount --bind -o ro "$1" "$1" && shift && exec "$@"'
    prefix = ["unshare", "--mount", "sh", "-c", remount, "sh", str(folder)]
    works = subprocess.run([*prefix, "true"], check=False, capture_output=True).returncode == 0
    return prefix if works else []


async def test_a_storage_folder_the_bot_may_not_write_is_one_line_and_exit_2(
    tmp_path: Path,
) -> None:
    """storage.path left next to config.yaml, which the unit's ProtectSystem=strict makes
    read-only: said at start, before anything connects, and exit 2 (no restart loop)."""
    etc = tmp_path / "etc"
    etc.mkdir()
    config = etc / "config.yaml"
    config.write_text(CONFIG_YAML.replace("${STORAGE_PATH:-:memory:}", "handoff.sqlite3"))
    argv = service_argv(config)
    if os.geteuid() == 0:  # root writes anywhere, unless the mount is read-only, as there
        in_namespace = read_only(etc)
        if not in_namespace:
            pytest.skip("cannot make a read-only mount here")
        argv = [*in_namespace, *argv]
    else:
        etc.chmod(0o555)
    async with FakeTelegram(TOKEN) as telegram:
        process = await asyncio.create_subprocess_exec(
            *argv,
            env={
                **CLEAN_ENV,
                "TELEGRAM_BOT_TOKEN": TOKEN,
                "BITRIX24_WEBHOOK_URL": "http://127.0.0.1:9/rest/1/s3cr3tW3bh00kC0de/",
                "TELEGRAM_API_URL": telegram.base_url,
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(process.communicate(), GUARD_S)
        etc.chmod(0o755)
    assert err.decode().splitlines() == [
        f"storage.path {etc}/handoff.sqlite3: the bot may not write to {etc} "
        f"(read-only, or another user's); as a service, use {SERVICE_STORAGE}"
    ]
    assert process.returncode == 2
    assert telegram.calls == [], "checked before anything connects"
    assert not (etc / "handoff.sqlite3").exists()
