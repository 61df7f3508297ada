"""``python -m bot demo`` as a person uses it: from any folder, in a terminal or from a pipe."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from bot.sandbox import STOPPED
from bot.sandbox.demo import SAMPLE_CONFIG, console_language
from tests.processes import CLEAN_ENV, GUARD_S, ROOT
from tests.test_cli import run_cli, session

MANY = "\n".join(
    f"  - {{key: op{n}, bitrix_id: {100 + n}, name: Operator {n}}}" for n in range(1, 12)
)


def many_operators(folder: Path) -> Path:
    """The sample config with eleven more operators: the picker needs two pages."""
    config = folder / "many.yaml"
    sample = SAMPLE_CONFIG.read_text(encoding="utf-8")
    config.write_text(sample.replace("queues:\n", f"{MANY}\nqueues:\n"), encoding="utf-8")
    return config


def test_the_repository_sample_is_the_packaged_one() -> None:
    assert (ROOT / "config.yaml").resolve() == SAMPLE_CONFIG.resolve(), "one copy only"


def test_demo_runs_from_an_empty_folder_with_the_packaged_sample(tmp_path: Path) -> None:
    result = run_cli("demo", stdin="/transfer 2043 @anna\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"Config: the sample that ships with the bot ({SAMPLE_CONFIG})" in lines[1]
    assert "bot: ✅ Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova" in lines
    assert list(tmp_path.iterdir()) == [], "the sandbox leaves nothing behind"


def test_demo_prefers_the_config_of_the_folder_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "supervisors: [{id: 5, name: Vera}]\noperators: [{key: zoe, bitrix_id: 77, name: Zoe}]\n"
    )
    result = run_cli("demo", stdin="/operators\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == "Config: config.yaml; /reload reads it again."
    assert "Vera" in result.stdout.splitlines()[0]


def test_demo_shows_the_bot_username_from_get_me() -> None:
    result = run_cli("demo", stdin="")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("Sandbox: the bot is @handoff_sandbox_bot;")


def test_next_shows_the_next_page_and_its_numbers_press_its_buttons(tmp_path: Path) -> None:
    config = many_operators(tmp_path)
    result = run_cli("demo", "--config", str(config), stdin="/transfer 2043\n9\n2\n")
    assert result.returncode == 0, result.stderr
    assert session(result.stdout) == [
        "> /transfer 2043",
        "bot: Dialog 2043 «Ivan Petrov — WhatsApp» is with Bob Lee. Move it to:",
        "     [1] # Support line  [2] 🟢 Anna Smirnova  [3] 🟢 Kate Roy  [4] 🟢 Operator 1  "
        "[5] 🟢 Operator 2  [6] 🟢 Operator 3  [7] 🟢 Operator 4  [8] 🟢 Operator 5  [9] Next »  "
        "[10] Cancel",
        "> 9",
        "bot (edited): Dialog 2043 «Ivan Petrov — WhatsApp» is with Bob Lee. Move it to:",
        "              [1] 🟢 Operator 6  [2] 🟢 Operator 7  [3] 🟢 Operator 8  [4] 🟢 Operator 9  "
        "[5] 🟢 Operator 10  [6] 🟢 Operator 11  [7] « Back  [8] Cancel",
        "> 2",
        "(Working…)",
        "bot (edited): ✅ Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Operator 7",
        "[team chat] 🔁 Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Operator 7, by Olga",
    ]


def test_lang_chooses_the_supervisors_telegram_language() -> None:
    typed = "/transfer 2043 @anna\n"
    russian = run_cli("demo", "--lang", "ru", stdin=typed)  # LANG is en_US here
    assert russian.returncode == 0, russian.stderr
    assert "bot: ✅ Диалог 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova" in (
        russian.stdout.splitlines()
    )
    by_locale = run_cli("demo", stdin=typed, env={"LANG": "ru_RU.UTF-8"})
    assert "bot: ✅ Диалог 2043" in by_locale.stdout


def test_the_locale_gives_the_default_language() -> None:
    assert console_language({"LANG": "ru_RU.UTF-8"}) == "ru"
    assert console_language({"LC_ALL": "en_GB.UTF-8", "LANG": "ru_RU.UTF-8"}) == "en"
    assert console_language({"LANG": "C.UTF-8"}) == "en"
    assert console_language({}) == "en"


def test_reload_in_the_demo_reads_the_sample_again(tmp_path: Path) -> None:
    result = run_cli("demo", stdin="/reload\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert session(result.stdout) == ["> /reload", "bot: Config reloaded: no changes."]


def test_reload_in_the_demo_shows_what_changed_in_the_file(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(SAMPLE_CONFIG.read_text(encoding="utf-8"), encoding="utf-8")
    process = demo_process(tmp_path, "--config", str(config))
    try:
        assert process.stdout is not None and process.stdin is not None
        assert "Sandbox:" in process.stdout.readline()
        with config.open("a", encoding="utf-8") as file:
            file.write("  - {key: night, bitrix_id: 9, name: Night line}\n")
        process.stdin.write("/reload\n")
        process.stdin.close()
        out = process.stdout.read()
        assert process.wait(GUARD_S) == 0
    finally:
        process.kill()
    assert session(out) == [
        "> /reload",
        "bot: Config reloaded.",
        "     + queue night (9) Night line",
    ], "the sandbox's own servers and storage are not changes"


def demo_process(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "demo", *args],
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**CLEAN_ENV, "LANG": "en_US.UTF-8"},
    )


def test_sigint_stops_the_demo_at_once_with_one_line(tmp_path: Path) -> None:
    process = demo_process(tmp_path)
    try:
        assert process.stdout is not None
        assert "Sandbox:" in process.stdout.readline()  # running, waiting for a line
        process.send_signal(signal.SIGINT)
        time.sleep(0.05)
        process.send_signal(signal.SIGINT)  # impatient: pressed again
        out, err = process.communicate(timeout=GUARD_S)
    finally:
        process.kill()
    assert process.returncode == 0
    assert err == f"{STOPPED}\n"
    assert "Traceback" not in out


def read_until(fd: int, wanted: str, timeout: float = GUARD_S) -> str:
    """What the terminal shows until ``wanted`` appears (or the program ends)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted.encode() not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the program ended: its terminal is gone
                break
            if not chunk:
                break
            seen += chunk
    return seen.decode(errors="replace")


def test_in_a_terminal_it_prompts_and_ctrl_c_quits_with_one_line(tmp_path: Path) -> None:
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the sandbox, in a terminal of its own
        os.chdir(tmp_path)
        os.execve(
            sys.executable,
            [sys.executable, "-m", "bot", "demo"],
            {**CLEAN_ENV, "LANG": "en_US.UTF-8", "PYTHONPATH": str(ROOT)},
        )
    try:
        shown = read_until(terminal, "\n> ")
        assert "Type commands; a number presses that button" in shown
        os.write(terminal, b"/transfer 2043 @anna\r")
        shown = read_until(terminal, "\n> ")
        lines = shown.replace("\r\n", "\n").splitlines()
        assert lines[0] == "/transfer 2043 @anna", "the terminal echoes what was typed"
        assert "bot: ✅ Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova" in lines
        assert "> /transfer" not in shown, "no echo of our own in a terminal"
        os.write(terminal, b"\x03")  # Ctrl-C, as the keyboard sends it
        after = read_until(terminal, "never shown")
        _, status = os.waitpid(pid, 0)
    finally:
        with_pid_gone(pid)
        os.close(terminal)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [line for line in after.replace("\r\n", "\n").splitlines() if line.strip("^C ")] == [
        STOPPED
    ]
    assert "Traceback" not in after


def with_pid_gone(pid: int) -> None:
    """Kill the child if a failed assertion left it running."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
