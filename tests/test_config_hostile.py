"""Hostile config files: YAML bombs, aliases, endless or huge files, floods of problems.

Each is refused (or read) quickly and in bounded memory, with one clear line per problem and
never a traceback, through ``load_config`` and through ``python -m bot check``. Time is only
guarded by subprocess timeouts; memory is measured by the child process itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from bot import yamlsource
from bot.config import (
    MAX_FILE_BYTES,
    MAX_PROBLEMS,
    MORE_PROBLEMS,
    ConfigError,
    load_config,
    parse_config,
)
from bot.directory_sync import SyncedDirectory, SyncedEntry, render_yaml
from bot.yamlsource import ANCHORS_REFUSED, MAX_DEPTH

REPO_ROOT = Path(__file__).resolve().parents[1]
GUARD_S = 60  # a refused bomb takes milliseconds; expanding one took minutes and 4 GB

# "billion laughs": nine lines, 300 bytes, 9**9 (387 million) x's once expanded
BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['x'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)
BOMB_PROBLEM = f"a (line 1): {ANCHORS_REFUSED}"


def problems_of(path: Path) -> list[str]:
    """The problem lines of a bad config file, as ``load_config`` reports them."""
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    return [str(p) for p in caught.value.problems]


def text_problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, {})
    return [str(p) for p in caught.value.problems]


def run_check(config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BOT_CONFIG", "STORAGE_URL")}
    return subprocess.run(
        [sys.executable, "-m", "bot", "check", "--config", str(config)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=GUARD_S,
    )


# Loads a config in a fresh interpreter and reports its peak memory: the test process itself
# has run a whole suite, so its own figures would say nothing.
_MEASURE = """
import json, resource, sys
from pathlib import Path
from bot.config import ConfigError, load_config
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    config = load_config(Path(sys.argv[1]), env={})
    outcome = {"operators": len(config.operators)}
except ConfigError as err:
    outcome = {"problems": [str(p) for p in err.problems]}
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({**outcome, "grew_mb": (after - before) / 1024}))
"""


def measured_load(config: Path) -> dict[str, object]:
    """``load_config`` of ``config`` in a child process: its outcome and how much it grew."""
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(config)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=GUARD_S,
    )
    assert result.returncode == 0, result.stderr
    outcome: dict[str, object] = json.loads(result.stdout)
    return outcome


# ---- YAML bombs and every other use of anchors and aliases ------------------------------------


def test_the_bomb_is_small() -> None:
    assert len(BOMB.encode()) < 400
    assert BOMB.splitlines()[1] == "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]"


def test_a_yaml_bomb_is_refused_by_load_config(tmp_path: Path) -> None:
    bomb = tmp_path / "config.yaml"
    bomb.write_text(BOMB, encoding="utf-8")
    assert problems_of(bomb) == [BOMB_PROBLEM]


def test_a_yaml_bomb_is_refused_in_little_memory(tmp_path: Path) -> None:
    bomb = tmp_path / "config.yaml"
    bomb.write_text(BOMB, encoding="utf-8")
    outcome = measured_load(bomb)
    assert outcome["problems"] == [BOMB_PROBLEM]
    assert isinstance(outcome["grew_mb"], float)
    assert outcome["grew_mb"] < 20


def test_a_yaml_bomb_is_refused_by_the_cli(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB, encoding="utf-8")
    result = run_check(bomb)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"{bomb}: 1 problem", f"  - {BOMB_PROBLEM}"]
    assert "Traceback" not in result.stderr


def test_an_alias_in_an_included_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "directory.generated.yaml").write_text(
        "operators:\n"
        "  - key: anna\n"
        "    bitrix_id: 15\n"
        "    name: &who Anna Smirnova\n"
        "  - {key: bob, bitrix_id: 16, name: *who}\n",
        encoding="utf-8",
    )
    config_file = tmp_path / "config.yaml"
    config_file.write_text("language: en\ninclude: directory.generated.yaml\n", encoding="utf-8")
    assert problems_of(config_file) == [
        f"include (line 2): directory.generated.yaml: operators[0].name (line 4): {ANCHORS_REFUSED}"
    ]


def test_a_bomb_in_an_included_file_is_refused_by_the_cli(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(BOMB, encoding="utf-8")
    config_file = tmp_path / "config.yaml"
    config_file.write_text("include: [bomb.yaml]\n", encoding="utf-8")
    result = run_check(config_file)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{config_file}: 1 problem",
        f"  - include (line 1): bomb.yaml: {BOMB_PROBLEM}",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("language: &lang en\n", "language (line 1)", id="anchor-without-alias"),
        pytest.param("language: en\nannounce_to: *nowhere\n", "announce_to (line 2)", id="alias"),
        pytest.param("operators: &loop [*loop]\n", "operators (line 1)", id="self-reference"),
        pytest.param(
            "chats:\n  - &chat {id: -1001, name: Team}\n  - *chat\n",
            "chats[0] (line 2)",
            id="entry",
        ),
        pytest.param("? &k language\n: en\n", "(top level) (line 1)", id="anchored-key"),
    ],
)
def test_anchors_and_aliases_are_refused_where_they_are(text: str, expected: str) -> None:
    assert text_problems(text) == [f"{expected}: {ANCHORS_REFUSED}"]


def test_merge_keys_are_refused_and_the_rest_still_checked() -> None:
    text = "bitrix24:\n  <<: {timeout_s: 5}\n  burst: 0\n"
    assert text_problems(text) == [
        "bitrix24 (line 2): merge keys (<<) are not supported; write the keys out",
        "bitrix24.burst (line 3): must be at least 1",
    ]


def test_a_quoted_double_angle_key_is_only_a_key() -> None:
    assert text_problems('"<<": 1\n') == ["<< (line 1): unknown key (a typo?)"]


@pytest.mark.parametrize("loader", [yaml.SafeLoader, yaml.CSafeLoader], ids=["python", "libyaml"])
def test_both_yaml_parsers_read_alike(monkeypatch: pytest.MonkeyPatch, loader: type) -> None:
    # libyaml is used when PyYAML has it; the pure-Python parser must behave the same
    monkeypatch.setattr(yamlsource, "_Loader", loader)
    sample = parse_config((REPO_ROOT / "config.yaml").read_text(encoding="utf-8"), {})
    assert [o.key for o in sample.operators] == ["anna", "bob", "kate"]
    assert text_problems(BOMB) == [BOMB_PROBLEM]
    assert text_problems("language: en\nlanguage: ru\n") == [
        "language (line 2): key 'language' appears twice in the same section"
    ]
    assert text_problems("language: en\n---\nlanguage: ru\n") == [
        "(top level) (line 2): not valid YAML: one document only (a second one starts here)"
    ]


# ---- nesting, odd scalars, odd characters ---------------------------------------------------


def test_nesting_is_bounded() -> None:
    # the top-level mapping is the first level
    deepest = "messages: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n"
    assert text_problems(deepest) == ["messages (line 1): must be a section of key: value pairs"]
    too_deep = "messages: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n"
    assert text_problems(too_deep) == [
        "messages" + "[0]" * (MAX_DEPTH - 1) + " (line 1): "
        f"nested too deeply (more than {MAX_DEPTH} levels)"
    ]


def test_very_deep_nesting_is_one_problem() -> None:
    [problem] = text_problems("operators: " + "[" * 100_000 + "]" * 100_000 + "\n")
    # libyaml stops at its own limit, or the reader at MAX_DEPTH: either way one line
    assert "(line 1): " in problem
    assert "nested too deeply" in problem or "not valid YAML" in problem


QUOTE_IT = "put it in quotes if it is text"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "announce_to: 2026-13-45\n",
            f"announce_to (line 1): cannot be read as a date or time; {QUOTE_IT}",
            id="impossible-date",
        ),
        pytest.param(
            "language: en\nannounce_to: " + "9" * 5000 + "\n",
            f"announce_to (line 2): cannot be read as a whole number; {QUOTE_IT}",
            id="5000-digits",
        ),
        pytest.param(
            "bitrix24:\n  batch_calls: !!bool maybe\n",
            f"bitrix24.batch_calls (line 2): cannot be read as true or false; {QUOTE_IT}",
            id="explicit-bool",
        ),
    ],
)
def test_scalars_yaml_cannot_read_are_one_problem(text: str, expected: str) -> None:
    assert text_problems(text) == [expected]


def test_an_unreadable_scalar_is_not_echoed() -> None:
    secret = "987654321:FAKEtokenFAKEtokenFAKE_zz"
    [problem] = text_problems(f"telegram:\n  token: !!int {secret}\n")
    assert problem == f"telegram.token (line 2): cannot be read as a whole number; {QUOTE_IT}"


# plain scalars of every kind PyYAML's patterns tell apart, and text that starts like them
PLAIN_SCALARS = (
    "yes", "No", "OFF", "on", "On", "y", "n", "Y", "null", "Null", "NULL", "~", "true", "FALSE",
    "Trueish", "nullable", "onion", "offset", "Kate", "anna_smirnova", "123", "100042", "0123",
    "0", "00", "0x1F", "0o17", "1_000", "+5", "-5", "1.5", "1e3", ".inf", ".NaN", "12:30",
    "190:20:30", "2026-01-02", "2026-01-02T10:00:00Z", "\u0663", "\u00b9", "!text", "&text",
    "*text",
)  # fmt: skip


@pytest.mark.parametrize("loader", [yaml.SafeLoader, yaml.CSafeLoader], ids=["python", "libyaml"])
def test_plain_scalars_are_read_as_pyyaml_reads_them(
    monkeypatch: pytest.MonkeyPatch, loader: type
) -> None:
    # the reader decides most plain scalars without asking PyYAML: it must decide alike
    monkeypatch.setattr(yamlsource, "_Loader", loader)
    text = "".join(f"- {value}\n" for value in PLAIN_SCALARS if value[0] not in "!&*")
    text += "".join(f"- '{value}'\n" for value in PLAIN_SCALARS)
    expected = yaml.load(text, loader)
    read = yamlsource.parse_yaml(text).data
    assert [(type(v), v) for v in read] == [(type(v), v) for v in expected]


def test_a_control_character_is_reported_at_its_line() -> None:
    assert text_problems("language: en\nadmin_contact: Olga\x07\n") == [
        "(top level) (line 2): not valid YAML: unacceptable character #x0007: "
        "special characters are not allowed"
    ]


def test_a_second_document_is_refused() -> None:
    assert text_problems("language: en\n---\nlanguage: ru\n") == [
        "(top level) (line 2): not valid YAML: one document only (a second one starts here)"
    ]


def test_python_tags_are_never_constructed() -> None:
    assert text_problems("admin_contact: !!python/name:os.system x\n") == [
        "(top level) (line 1): not valid YAML: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/name:os.system'"
    ]
    # a tag on a list or a mapping is ignored: it is read as the plain list it is
    assert text_problems("admin_contact: !!python/object/apply:os.system [echo]\n") == [
        "admin_contact (line 1): must be non-empty text"
    ]


# ---- how large a file may be ----------------------------------------------------------------

TOO_LARGE = (
    "cannot be read: larger than 64 MB, far more than any config needs "
    "(100,000 operators take about 10 MB)"
)


def test_a_file_past_the_cap_is_refused_unread(tmp_path: Path) -> None:
    huge = tmp_path / "config.yaml"
    with huge.open("wb") as file:
        file.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    assert problems_of(huge) == [f"(top level): {TOO_LARGE}"]


def test_a_file_that_never_ends_is_refused() -> None:
    assert problems_of(Path("/dev/zero")) == [f"(top level): {TOO_LARGE}"]


def test_an_include_past_the_cap_is_refused(tmp_path: Path) -> None:
    with (tmp_path / "huge.yaml").open("wb") as file:
        file.truncate(MAX_FILE_BYTES + 1)
    config_file = tmp_path / "config.yaml"
    config_file.write_text("include: huge.yaml\n", encoding="utf-8")
    assert problems_of(config_file) == [f"include (line 1): huge.yaml: {TOO_LARGE}"]


def test_an_include_that_is_not_utf8_is_one_problem(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes(
        "operators: [{key: jose, name: Jos\xe9}]\n".encode("latin-1")
    )
    config_file = tmp_path / "config.yaml"
    config_file.write_text("include: latin1.yaml\n", encoding="utf-8")
    assert problems_of(config_file) == [
        "include (line 1): latin1.yaml: cannot be read: not UTF-8 text"
    ]


@pytest.mark.parametrize("section", ["5", "anna", "{anna: 15}"])
def test_an_include_whose_operators_are_not_a_list(tmp_path: Path, section: str) -> None:
    (tmp_path / "dir.yaml").write_text(f"operators: {section}\n", encoding="utf-8")
    config_file = tmp_path / "config.yaml"
    config_file.write_text("include: dir.yaml\n", encoding="utf-8")
    assert problems_of(config_file) == ["include (line 1): dir.yaml: operators must be a list"]


def directory_of(count: int) -> str:
    """A directory as `directory sync` writes it: Cyrillic names, transliterated keys."""
    first = ["Александр", "Екатерина", "Анна", "Иван", "Мария", "Ольга", "Константин"]
    last = ["Смирнова", "Иванов", "Кузнецова", "Попов", "Васильева", "Щукин", "Фёдоров"]
    entries = []
    for i in range(1, count + 1):
        name = f"{first[i % 7]} {last[i // 7 % 7]}"
        entries.append(SyncedEntry(f"user.{i}", i, name))
    lines = tuple(SyncedEntry(f"line{i}", i, f"Линия {i}") for i in range(1, 201))
    return render_yaml(SyncedDirectory(tuple(entries), lines), generated_at=datetime.now(UTC))


def test_a_100k_operator_directory_fits_well_under_the_cap_and_loads(tmp_path: Path) -> None:
    text = directory_of(100_000)
    size = len(text.encode())
    assert 4_000_000 < size < MAX_FILE_BYTES / 4  # about 7 MB
    (tmp_path / "directory.generated.yaml").write_text(text, encoding="utf-8")
    config_file = tmp_path / "config.yaml"
    config_file.write_text("include: directory.generated.yaml\n", encoding="utf-8")
    outcome = measured_load(config_file)
    assert outcome["operators"] == 100_000


# ---- 1 MB of anything: bounded time and memory, a bounded report ----------------------------

MB = 1_000_000
SHAPES = {
    # the densest YAML there is: two bytes a value
    "ints": "operators: [" + "1," * (MB // 2 - 8) + "1]\n",
    "empty-entries": "operators: [" + "{}," * (MB // 3 - 8) + "{}]\n",
    "block-list": "operators:\n" + "- 1\n" * (MB // 4 - 4),
    "unknown-keys": "".join(f"k{i:06d}: 1\n" for i in range(MB // 11)),
    "one-key-reused": "operators:\n"
    + "".join(f"- {{key: a, bitrix_id: {i + 1}, name: A}}\n" for i in range(MB // 38)),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_a_megabyte_of_trouble_is_reported_briefly_in_bounded_memory(
    tmp_path: Path, shape: str
) -> None:
    bad = tmp_path / "config.yaml"
    bad.write_text(SHAPES[shape], encoding="utf-8")
    assert 0.9 * MB < bad.stat().st_size <= MB
    outcome = measured_load(bad)
    problems = outcome["problems"]
    assert isinstance(problems, list)
    assert len(problems) <= MAX_PROBLEMS + 1
    assert all("(line " in p for p in problems[:-1])
    assert problems[-1] == f"(top level): {MORE_PROBLEMS}" or len(problems) <= MAX_PROBLEMS
    assert isinstance(outcome["grew_mb"], float)
    assert outcome["grew_mb"] < 300  # a few dozen MB; before: up to 1.3 GB


def test_many_problems_are_cut_at_the_cap_and_say_so(tmp_path: Path) -> None:
    bad = tmp_path / "config.yaml"
    bad.write_text("operators:\n" + "  - {}\n" * 100, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(bad, env={})
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{bad}: {MAX_PROBLEMS} problems, and more not listed"
    assert lines[1:4] == [
        "  - operators[0].key (line 2): is required",
        "  - operators[0].bitrix_id (line 2): is required",
        "  - operators[0].name (line 2): is required",
    ]
    assert lines[-1] == f"  - (top level): {MORE_PROBLEMS}"
    assert len(caught.value.problems) == MAX_PROBLEMS + 1


def test_a_megabyte_of_trouble_through_the_cli(tmp_path: Path) -> None:
    bad = tmp_path / "config.yaml"
    bad.write_text(SHAPES["empty-entries"], encoding="utf-8")
    result = run_check(bad)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"{bad}: {MAX_PROBLEMS} problems, and more not listed"
    assert len(lines) == MAX_PROBLEMS + 2
