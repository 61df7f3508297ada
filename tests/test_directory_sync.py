"""Directory sync against the portal simulator over HTTP, with the real BitrixClient."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bot.directory_sync as ds
from bot.bitrix24.client import BitrixClient
from bot.config import parse_config
from bot.directory import Directory
from bot.directory_sync import (
    SyncedDirectory,
    SyncedEntry,
    SyncError,
    call_page,
    diff,
    fetch_directory,
    php_query,
    read_generated,
    render_yaml,
    sync,
    transliterate_key,
)
from bot.sandbox.portal import Fault, PortalSimulator, SimOperator, SimQueue, parse_php_query
from tests.conftest import ANNA, BOB, PAVEL, SALES, SUPPORT, bitrix_settings, make_portal

KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
FIRST = ["Анна", "Борис", "Юрий", "Наталья", "Щука", "Ёж", "Цветана", "Хасан"]
LAST = ["Смирнова", "Жуков", "Щукин", "Эйлер", "Чайка", "Ильин", "Шульц", "Якушева", "Гоголь"]
EXTRA = 120  # operators 100..219: with the 3 active ones of make_portal, 3 pages of user.get
INACTIVE_EXTRA = {105, 150, 219}
LINES = 250  # lines 1000..1249 next to 3 and 5: 2 pages of imopenlines.config.list.get
INACTIVE_LINES = {5, 1100}
USER_SCOPE = (
    "the webhook lacks the «user» scope: add it in Bitrix24 "
    "(Developer resources > Inbound webhook) and run sync again"
)
LINES_SCOPE = USER_SCOPE.replace("«user»", "«imopenlines»")


def extra_name(i: int) -> str:
    return f"{FIRST[i % len(FIRST)]} {LAST[i % len(LAST)]}"


def with_inactive_lines(portal: PortalSimulator, inactive: set[int]) -> None:
    """The simulator lists every line as active: mark some ``ACTIVE: "N"`` in its answers."""
    original: Callable[[dict[str, Any]], Any] = portal._methods[ds.LINES_GET]

    def lines(params: dict[str, Any]) -> Any:
        items = original(params)
        for item in items:
            if int(item["ID"]) in inactive:
                item["ACTIVE"] = "N"
        return items

    portal._methods[ds.LINES_GET] = lines


@pytest.fixture
async def big_portal() -> AsyncIterator[PortalSimulator]:
    async with make_portal() as sim:
        for i in range(EXTRA):
            op_id = 100 + i
            sim.operators[op_id] = SimOperator(
                op_id, extra_name(i), active=op_id not in INACTIVE_EXTRA
            )
        sim.operators[300] = SimOperator(300, "Support Line")  # the key of line 3, first
        sim.operators[301] = SimOperator(301, "★")  # nothing usable: user301
        sim.operators[302] = SimOperator(302, "1С Бухгалтерия")  # starts with a digit
        # transfers to these answer true and move nothing: they must not reach the directory
        sim.operators[303] = SimOperator(303, "Guest Partner", kind="extranet")
        sim.operators[304] = SimOperator(304, "Chat Bot", kind="bot")
        for i in range(LINES):
            sim.queues[1000 + i] = SimQueue(1000 + i, f"Линия {i}")
        with_inactive_lines(sim, INACTIVE_LINES)
        yield sim


@pytest.fixture
async def small_portal() -> AsyncIterator[PortalSimulator]:
    async with make_portal() as sim:
        yield sim


def client_for(portal: PortalSimulator) -> BitrixClient:
    return BitrixClient(bitrix_settings(portal.url))


def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def by_id(entries: tuple[SyncedEntry, ...]) -> dict[int, SyncedEntry]:
    return {e.bitrix_id: e for e in entries}


# ---- fetching -----------------------------------------------------------------------------


async def test_fetches_every_active_user_across_pages(big_portal: PortalSimulator) -> None:
    async with client_for(big_portal) as client:
        directory = await fetch_directory(client)
    active = {op.id for op in big_portal.operators.values() if op.active and op.kind == "employee"}
    assert {e.bitrix_id for e in directory.operators} == active
    assert PAVEL not in active and not INACTIVE_EXTRA & active
    assert not {303, 304} & active
    assert [e.bitrix_id for e in directory.operators] == sorted(active)
    pages = big_portal.calls_to("user.get")
    assert [c.params.get("start") for c in pages] == ["0", "50", "100"]
    assert all(
        c.in_batch and c.params["FILTER"] == {"ACTIVE": "true", "USER_TYPE": "employee"}
        for c in pages
    )
    ops = by_id(directory.operators)
    assert ops[ANNA] == SyncedEntry("anna.smirnova", ANNA, "Anna Smirnova")
    assert ops[100] == SyncedEntry("anna.smirnova-2", 100, "Анна Смирнова")
    assert ops[BOB].name == "Bob Lee"


async def test_fetches_active_lines_across_pages(big_portal: PortalSimulator) -> None:
    async with client_for(big_portal) as client:
        directory = await fetch_directory(client)
    lines = by_id(directory.queues)
    assert set(lines) == ({SUPPORT, SALES} | set(range(1000, 1000 + LINES))) - INACTIVE_LINES
    assert lines[1001] == SyncedEntry("liniya.1", 1001, "Линия 1")
    pages = big_portal.calls_to(ds.LINES_GET)
    assert [c.params["PARAMS"] for c in pages] == [
        {"limit": "200", "offset": "0"},
        {"limit": "200", "offset": "200"},
    ]
    assert all(c.params["OPTIONS"] == {"QUEUE": "Y"} for c in pages)


async def test_keys_are_valid_and_unique_across_kinds(big_portal: PortalSimulator) -> None:
    async with client_for(big_portal) as client:
        directory = await fetch_directory(client)
    keys = [e.key for e in (*directory.operators, *directory.queues)]
    assert all(KEY.match(k) for k in keys)
    assert len(set(keys)) == len(keys)
    ops, lines = by_id(directory.operators), by_id(directory.queues)
    assert ops[300].key == "support.line"
    assert lines[SUPPORT].key == "support.line-2"  # operators claim keys first
    assert ops[301] == SyncedEntry("user301", 301, "★")
    assert ops[302].key == "user.1s.bukhgalteriya"
    # the generated names resolve in the bot's own directory
    config = parse_config(render_yaml(directory, generated_at=datetime.now(UTC)), {})
    found = Directory.from_config(config).resolve("@anna.smirnova-2")
    assert found.bitrix_id == 100


async def test_call_page_returns_next(small_portal: PortalSimulator) -> None:
    async with client_for(small_portal) as client:
        result, following = await call_page(client, "user.get", {"FILTER": {"ACTIVE": True}})
    assert [u["ID"] for u in result] == ["15", "16", "27"]
    assert following is None


# ---- the file -----------------------------------------------------------------------------


SAMPLE = SyncedDirectory(
    operators=(
        SyncedEntry("anna.smirnova", 15, "Анна Смирнова"),
        SyncedEntry("yes", 16, 'Yes "quoted" \\ back'),
        SyncedEntry("cash", 17, "Cash $5 ${HOME} $$"),
    ),
    queues=(SyncedEntry("support.line", 3, "Support line: #1"),),
)


def test_render_yaml_validates_and_reads_back(tmp_path: Path) -> None:
    when = datetime(2026, 3, 16, 15, 10, 32, tzinfo=UTC)
    text = render_yaml(SAMPLE, generated_at=when)
    header = text.splitlines()[:4]
    assert all(line.startswith("#") for line in header)
    assert "Generated by `python -m bot directory sync` at 2026-03-16T15:10:32+00:00" in header[0]
    assert any("config.yaml" in line for line in header)
    config = parse_config(text, {"HOME": "/root"})
    assert [(o.key, o.bitrix_id, o.name) for o in config.operators] == [
        (e.key, e.bitrix_id, e.name) for e in SAMPLE.operators
    ]
    assert config.queues[0].name == "Support line: #1"
    path = tmp_path / ds.GENERATED_NAME
    path.write_text(text, encoding="utf-8")
    assert read_generated(path) == SAMPLE


def test_render_empty_lists() -> None:
    empty = SyncedDirectory((), ())
    config = parse_config(render_yaml(empty, generated_at=datetime.now(UTC)), {})
    assert config.operators == () and config.queues == ()


def test_read_generated_absent_or_broken(tmp_path: Path) -> None:
    assert read_generated(tmp_path / "nope.yaml") is None
    broken = tmp_path / "broken.yaml"
    broken.write_text("operators: [{key: 1}]\n", encoding="utf-8")
    assert read_generated(broken) is None
    broken.write_bytes(b"\xff\xfe")
    assert read_generated(broken) is None


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80))
def test_any_name_renders_and_reads_back(name: str) -> None:
    clean = ds._clean_name(name) or "user 7"
    key = transliterate_key(name)
    assert key == "" or re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", key)
    assert not key.endswith((".", "-", "_"))
    entry = SyncedEntry(ds._base_key("user", 7, name), 7, clean)
    text = render_yaml(SyncedDirectory((entry,), ()), generated_at=datetime.now(UTC))
    assert parse_config(text, {}).operators[0].name == clean


# ---- diff ---------------------------------------------------------------------------------


def test_diff_lines() -> None:
    old = SyncedDirectory(
        operators=(
            SyncedEntry("anna.smirnova", 15, "Anna Smirnova"),
            SyncedEntry("bob.lee", 16, "Bob Lee"),
            SyncedEntry("irina", 27, "Irina"),
        ),
        queues=(SyncedEntry("support", 3, "Support"),),
    )
    new = SyncedDirectory(
        operators=(
            SyncedEntry("anna.smirnova", 15, "Anna Smirnova"),
            SyncedEntry("robert.lee", 16, "Robert Lee"),
            SyncedEntry("irina-2", 27, "Irina"),
            SyncedEntry("oleg", 40, "Oleg"),
        ),
        queues=(SyncedEntry("support", 3, "Support desk"),),
    )
    assert diff(old, new) == [
        "~ operator 16: Bob Lee -> Robert Lee (key bob.lee -> robert.lee)",
        "~ operator 27: key irina -> irina-2",
        "+ operator oleg (40) Oleg",
        "~ queue 3: Support -> Support desk",
    ]
    assert diff(new, old)[-2:] == [
        "- operator oleg (40) Oleg",
        "~ queue 3: Support desk -> Support",
    ]
    assert diff(None, SyncedDirectory((), (SyncedEntry("a", 1, "A"),))) == ["+ queue a (1) A"]
    assert diff(old, old) == []


# ---- sync ---------------------------------------------------------------------------------


async def test_sync_writes_then_reports_changes(
    big_portal: PortalSimulator, tmp_path: Path
) -> None:
    out = tmp_path / ds.GENERATED_NAME
    async with client_for(big_portal) as client:
        first = await sync(client, out)
        assert len(first) == 3 + EXTRA - len(INACTIVE_EXTRA) + 3 + 2 + LINES - len(INACTIVE_LINES)
        assert all(line.startswith("+ ") for line in first)
        assert "+ operator anna.smirnova (15) Anna Smirnova" in first
        written = out.read_text(encoding="utf-8")
        parse_config(written, {})  # valid as config

        inode = out.stat().st_ino
        assert await sync(client, out) == []
        assert out.stat().st_ino == inode  # no changes: not rewritten

        big_portal.operators[BOB].name = "Robert Lee"
        del big_portal.operators[ANNA]  # anna.smirnova-2 (100) keeps its key
        big_portal.operators[400] = SimOperator(400, "Ольга Новикова")
        big_portal.queues[SALES].name = "Sales"  # inactive: still left out
        big_portal.queues[SUPPORT].name = "Support desk"
        del big_portal.queues[1249]
        changes = await sync(client, out)
    assert changes == [
        "- operator anna.smirnova (15) Anna Smirnova",
        "~ operator 16: Bob Lee -> Robert Lee (key bob.lee -> robert.lee)",
        "+ operator olga.novikova (400) Ольга Новикова",
        "~ queue 3: Support line -> Support desk (key support.line-2 -> support.desk)",
        "- queue liniya.249 (1249) Линия 249",
    ]
    again = read_generated(out)
    assert again is not None
    assert by_id(again.operators)[100].key == "anna.smirnova-2"
    assert names_in(tmp_path) == [ds.GENERATED_NAME]  # no temp files left


async def test_sync_keeps_permissions_and_leaves_no_temp(
    small_portal: PortalSimulator, tmp_path: Path
) -> None:
    out = tmp_path / ds.GENERATED_NAME
    out.write_text("operators: []\n", encoding="utf-8")
    out.chmod(0o640)
    async with client_for(small_portal) as client:
        changes = await sync(client, out)
    assert "+ queue support.line (3) Support line" in changes
    assert out.stat().st_mode & 0o777 == 0o640
    assert names_in(tmp_path) == [ds.GENERATED_NAME]


async def test_sync_cannot_write(small_portal: PortalSimulator, tmp_path: Path) -> None:
    out = tmp_path / "missing-dir" / ds.GENERATED_NAME
    async with client_for(small_portal) as client:
        with pytest.raises(SyncError, match=r"^cannot write .*missing-dir"):
            await sync(client, out)
    assert names_in(tmp_path) == []


async def test_failed_replace_keeps_the_old_file(
    small_portal: PortalSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / ds.GENERATED_NAME
    out.write_text("operators: []\n", encoding="utf-8")

    def refuse(src: str, dst: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    async with client_for(small_portal) as client:
        with pytest.raises(SyncError, match=r"^cannot write .*: Permission denied$"):
            await sync(client, out)
    assert names_in(tmp_path) == [ds.GENERATED_NAME]
    assert out.read_text(encoding="utf-8") == "operators: []\n"


async def test_no_active_users_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / ds.GENERATED_NAME
    async with (
        PortalSimulator(
            operators=[SimOperator(1, "Gone Person", active=False)],
            queues=[SimQueue(3, "Support")],
            dialogs=[],
            leak_per_s=1000.0,
            burst=1000,
        ) as portal,
        client_for(portal) as client,
    ):
        with pytest.raises(SyncError, match="no active employees"):
            await sync(client, out)
    assert not out.exists()


# ---- errors -------------------------------------------------------------------------------


async def test_user_scope_missing(small_portal: PortalSimulator, tmp_path: Path) -> None:
    small_portal.inject("batch", Fault.error("insufficient_scope"))
    out = tmp_path / ds.GENERATED_NAME
    async with client_for(small_portal) as client:
        with pytest.raises(SyncError) as caught:
            await sync(client, out)
    assert str(caught.value) == USER_SCOPE
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert not out.exists()


async def test_lines_scope_missing(small_portal: PortalSimulator) -> None:
    small_portal.inject("batch", Fault.delay(0.0))  # the user page goes through
    small_portal.inject("batch", Fault.error("insufficient_scope"))
    async with client_for(small_portal) as client:
        with pytest.raises(SyncError) as caught:
            await fetch_directory(client)
    assert str(caught.value) == LINES_SCOPE


async def test_scope_missing_inside_batch(small_portal: PortalSimulator) -> None:
    error = {"error": "insufficient_scope", "error_description": "higher privileges"}
    answer = {
        "result": {"result": [], "result_error": {"p": error}, "result_total": []},
        "time": {},
    }
    small_portal.inject("batch", Fault.json(200, answer))
    async with client_for(small_portal) as client:
        with pytest.raises(SyncError, match="«user» scope"):
            await fetch_directory(client)


async def test_other_error_is_one_line(small_portal: PortalSimulator) -> None:
    small_portal.inject("batch", Fault.error("NO_AUTH_FOUND"))
    async with client_for(small_portal) as client:
        with pytest.raises(SyncError) as caught:
            await fetch_directory(client)
    assert str(caught.value) == (
        "Bitrix24 user.get failed: NO_AUTH_FOUND (HTTP 401): Wrong authorization data"
    )


async def test_unknown_outcome_is_asked_again(
    small_portal: PortalSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ds, "_RETRY_DELAYS_S", (0.0, 0.0))
    small_portal.inject("batch", Fault.proxy_page(502))
    small_portal.inject("batch", Fault.raw(200, "<html>oops</html>"))
    async with client_for(small_portal) as client:
        directory = await fetch_directory(client)
    assert [e.bitrix_id for e in directory.operators] == [15, 16, 27]
    assert small_portal.pending_faults == 0


async def test_unknown_outcome_gives_up(
    small_portal: PortalSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ds, "_RETRY_DELAYS_S", (0.0,))
    small_portal.inject("batch", Fault.proxy_page(504), times=2)
    async with client_for(small_portal) as client:
        with pytest.raises(
            SyncError, match=r"^Bitrix24 user\.get failed: BAD_RESPONSE \(HTTP 504\)"
        ):
            await fetch_directory(client)


# ---- keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Анна Смирнова", "anna.smirnova"),
        ("Щукин Юрий", "shchukin.yuriy"),
        ("Ёлкина Жанна", "elkina.zhanna"),
        ("Наталья Хохлова", "natalya.khokhlova"),
        ("Цой Виктор", "tsoy.viktor"),
        ("Подъячев Эдуард", "podyachev.eduard"),
        ("Чайка Ыкчан", "chayka.ykchan"),
        ("Анна-Мария Шульц", "anna-mariya.shults"),
        ("Іван Їжак Євген Ґава", "ivan.yizhak.yevgen.gava"),
        ("José Núñez", "jose.nunez"),
        ("Straße Łódź", "strasse.lodz"),
        ("O'Neil", "oneil"),
        ("Sales & Support", "sales.support"),
        ("  --Support__line-- ", "support_line"),
        ("1С Линия", "1s.liniya"),
        ("★ ☎", ""),
        ("", ""),
        ("Я" * 80, "ya" * 32),
    ],
)
def test_transliterate_key(name: str, key: str) -> None:
    assert transliterate_key(name) == key


def test_keys_for_duplicates_and_fallbacks() -> None:
    raw = ds._Raw(
        operators=((15, "Anna Smirnova"), (16, "Анна Смирнова"), (17, ""), (18, "Я" * 80)),
        queues=((3, "Anna Smirnova"), (4, "★"), (5, "2nd line")),
    )
    directory = ds._build(raw, None)
    assert [e.key for e in directory.operators] == [
        "anna.smirnova",
        "anna.smirnova-2",
        "user17",
        "ya" * 32,
    ]
    assert directory.operators[2].name == "user 17"
    assert [e.key for e in directory.queues] == ["anna.smirnova-3", "line4", "line.2nd.line"]
    long = ds._build(ds._Raw(((1, "Я" * 80), (2, "Я" * 80)), ()), None)
    assert long.operators[1].key == "ya" * 31 + "-2"
    assert all(len(e.key) <= 64 for e in long.operators)


def test_previous_keys_stay_with_their_holders() -> None:
    raw = ds._Raw(operators=((16, "Анна Смирнова"), (20, "Anna Smirnova")), queues=())
    previous = SyncedDirectory((SyncedEntry("anna.smirnova-2", 16, "Анна Смирнова"),), ())
    directory = ds._build(raw, previous)
    assert [e.key for e in directory.operators] == ["anna.smirnova-2", "anna.smirnova"]


def test_php_query_is_understood_by_the_portal() -> None:
    query = php_query(
        {
            "FILTER": {"ACTIVE": True, "ID": [1, 2]},
            "PARAMS": {"limit": 200, "offset": 0},
            "OPTIONS": {"QUEUE": "Y"},
            "start": 50,
            "off": False,
        }
    )
    assert query.startswith("FILTER[ACTIVE]=true&FILTER[ID][0]=1")
    assert parse_php_query(query) == {
        "FILTER": {"ACTIVE": "true", "ID": {"0": "1", "1": "2"}},
        "PARAMS": {"limit": "200", "offset": "0"},
        "OPTIONS": {"QUEUE": "Y"},
        "start": "50",
        "off": "0",
    }
