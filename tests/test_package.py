"""The package as a release ships it: a wheel built by ``python -m build``, installed into a
fresh virtualenv with the pinned versions, run from an empty folder."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.processes import CLEAN_ENV, ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (built,) = out.glob("handoff_bot-*.whl")
    return built


def test_the_wheel_carries_the_sample_the_sandbox_and_the_licence(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "bot/sandbox/config.yaml" in names
    assert {"bot/sandbox/demo.py", "bot/__main__.py", "handlers/transfer.py"} <= names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert not any(name.startswith("tests/") for name in names)


def test_the_installed_wheel_runs_the_demo_from_an_empty_folder(
    wheel: Path, tmp_path: Path
) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run(
        [*pip, "-c", str(ROOT / "constraints.txt"), str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    empty = tmp_path / "anywhere"
    empty.mkdir()
    command = str(env_dir / "bin" / "handoff-bot")
    env = {**CLEAN_ENV, "LANG": "en_US.UTF-8"}
    helped = subprocess.run(
        [command, "--help"], cwd=empty, env=env, capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: handoff-bot ")
    demo = subprocess.run(
        [command, "demo"],
        input="/transfer 2043 @anna\n",
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode == 0, demo.stderr
    assert "Config: the sample that ships with the bot" in demo.stdout
    assert "bot: ✅ Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova" in (
        demo.stdout.splitlines()
    )
    assert list(empty.iterdir()) == [], "nothing written where it ran"
    # the installed bot is the wheel's, not this checkout's
    where = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "import bot; print(bot.__file__)"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(env_dir) in where.stdout
