"""/reload and SIGHUP: the new config swaps in, a bad one is refused, the old stays."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from bot.config import parse_config
from bot.reload import describe_changes
from bot.sandbox.portal import SimOperator
from tests.conftest import make_portal
from tests.harness import CONFIG_YAML, PETR, running_bot

WITH_ADMIN = CONFIG_YAML.replace(
    "supervisors:\n", "admins:\n  - {id: 111111111, name: Olga}\nsupervisors:\n", 1
)
CAROL = "  - {key: carol, bitrix_id: 30, name: Carol King}\n"


def edited(text: str) -> str:
    return text.replace("queues:\n", CAROL + "queues:\n", 1).replace(
        "{key: bob, bitrix_id: 16, name: Bob Lee}", "{key: bob, bitrix_id: 16, name: Robert Lee}"
    )


async def test_reload_swaps_in_the_new_directory(tmp_path: Path) -> None:
    portal = make_portal()
    portal.operators[30] = SimOperator(30, "Carol King")
    config = tmp_path / "config.yaml"
    async with running_bot(portal, yaml_text=WITH_ADMIN, config_file=config) as h:
        unknown = await h.say("/transfer 2043 @carol")
        assert unknown.plain_text.startswith("I don't know «@carol»")
        config.write_text(edited(WITH_ADMIN), encoding="utf-8")
        reply = await h.say("/reload")
        assert reply.plain_text.splitlines() == [
            "Config reloaded.",
            "+ operator carol (30) Carol King",
            "~ operator 16: bob Bob Lee → bob Robert Lee",
        ]
        moved = await h.say("/transfer 2043 @carol")
        assert moved.plain_text == (
            "✅ Dialog 2043 «Ivan Petrov — WhatsApp»: Robert Lee → Carol King"
        )


async def test_a_bad_file_is_refused_and_the_old_config_stays(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    async with running_bot(yaml_text=WITH_ADMIN, config_file=config) as h:
        config.write_text(WITH_ADMIN + "languag: en\n", encoding="utf-8")
        reply = await h.say("/reload")
        lines = reply.plain_text.splitlines()
        assert lines[0] == "Config not reloaded; the old one stays in force:"
        assert lines[1].startswith("• languag (line ")
        assert "did you mean 'language'?" in lines[1]
        still = await h.say("/transfer 2043 @anna")
        assert still.plain_text.startswith("✅ Dialog 2043")


async def test_only_admins_may_reload(tmp_path: Path) -> None:
    async with running_bot(yaml_text=WITH_ADMIN, config_file=tmp_path / "c.yaml") as h:
        reply = await h.say("/reload", user=PETR, first_name="Petr")
        assert reply.plain_text == "Only the bot's admins can reload its config."


async def test_sighup_reloads(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    async with running_bot(yaml_text=WITH_ADMIN, config_file=config) as h:
        config.write_text(edited(WITH_ADMIN), encoding="utf-8")
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if (
                h.app.services.directory.name_of(h.app.services.directory.resolve("@bob").kind, 16)
                == "Robert Lee"
            ):
                break
            await asyncio.sleep(0.05)
        reply = await h.say("/operators")
        assert "Robert Lee" in reply.plain_text and "Carol King" in reply.plain_text


def test_describe_changes_names_what_needs_a_restart() -> None:
    old = parse_config(CONFIG_YAML, {})
    new = parse_config(
        CONFIG_YAML.replace("timeout_s: ${TIMEOUT_S:-3}", "timeout_s: 9").replace(
            "language: auto", "language: ru"
        ),
        {},
    )
    assert describe_changes(old, new) == [
        "~ language changed",
        "! bitrix24 changed: takes effect after a restart",
    ]
    assert describe_changes(old, old) == []


async def test_reload_builds_everything_in_a_thread_and_only_swaps_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The config file, the directory and the services of a reload are built off the event
    loop's thread (a directory of ten thousand would hold up every command meanwhile)."""
    import threading

    import bot.app
    import bot.services

    built_in: list[str] = []
    real_load, real_directory = bot.app.load_config, bot.services.Directory.from_config

    def load(*args: Any, **kwargs: Any) -> Any:
        built_in.append(f"config:{threading.current_thread() is threading.main_thread()}")
        return real_load(*args, **kwargs)

    def directory(config: Any) -> Any:
        built_in.append(f"directory:{threading.current_thread() is threading.main_thread()}")
        return real_directory(config)

    monkeypatch.setattr(bot.app, "load_config", load)
    monkeypatch.setattr(bot.services.Directory, "from_config", staticmethod(directory))
    config = tmp_path / "config.yaml"
    async with running_bot(make_portal(), yaml_text=WITH_ADMIN, config_file=config) as h:
        config.write_text(edited(WITH_ADMIN), encoding="utf-8")
        before = h.app.services
        built_in.clear()
        reply = await h.say("/reload")
        assert reply.plain_text.startswith("Config reloaded.")
        assert built_in == ["config:False", "directory:False"]
        assert h.app.services is not before
        assert h.app.services.directory.resolve("@carol").bitrix_id == 30


def _retired_services(operators: int) -> Any:
    """What a reload retires, as far as :func:`release` looks: a config and its directory."""
    from types import SimpleNamespace

    from bot.directory import Directory

    lines = "".join(
        f"  - {{key: op{i}, bitrix_id: {i + 1}, name: Op{i} Smith, aliases: [a{i}]}}\n"
        for i in range(operators)
    )
    config = parse_config(f"operators:\n{lines}", {})
    return SimpleNamespace(config=config, directory=Directory.from_config(config))


def test_release_frees_the_retired_config_and_directory() -> None:
    import gc
    import weakref

    from bot.reload import release

    retired = [_retired_services(1_000)]
    directory = weakref.ref(retired[0].directory)
    gc.disable()  # freed by reference counts alone: nothing is left for a collection
    try:
        release(retired, lambda old: (old.config, old.directory))
        assert retired == []
        assert directory() is None
    finally:
        gc.enable()


def test_release_changes_nothing_a_command_still_uses() -> None:
    from bot.reload import release

    retired = [_retired_services(1_000)]
    in_use = retired[0]  # a command that started before the swap holds the old services
    release(retired, lambda old: (old.config, old.directory))
    assert len(in_use.config.operators) == 1_000
    assert in_use.directory.resolve("@op999").bitrix_id == 1_000
    assert in_use.directory.resolve("a500").name == "Op500 Smith"
    assert [t.bitrix_id for t in in_use.directory.suggest("op99q")][:1] == [100]
