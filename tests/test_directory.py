"""Tests of the directory: every target form, suggestions, ambiguity, bad targets, 10,000 names."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from bot.config import Config, parse_config
from bot.directory import (
    AmbiguousName,
    BadTarget,
    Directory,
    Kind,
    Reading,
    ResolveError,
    Target,
    UnknownName,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "config.yaml"

ANNA = Target(Kind.OPERATOR, 15, "Anna Smirnova", "anna")
BOB = Target(Kind.OPERATOR, 16, "Bob Lee", "bob")
SUPPORT = Target(Kind.QUEUE, 3, "Support line", "support")


def directory_of(text: str) -> Directory:
    return Directory.from_config(parse_config(dedent(text), {}))


@pytest.fixture(scope="module")
def sample() -> Directory:
    """The sample config's directory: anna (alias anya, telegram anna_s), bob; queue support."""
    return Directory.from_config(parse_config(SAMPLE.read_text(encoding="utf-8"), {}))


def resolve_error(directory: Directory, word: str) -> ResolveError:
    with pytest.raises(ResolveError) as info:
        directory.resolve(word)
    return info.value


def spelled(directory: Directory, targets: tuple[Target, ...]) -> list[str]:
    return [directory.spelling(t) for t in targets]


# ---- every target form ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("@anna", ANNA),
        ("anna", ANNA),
        ("ANNA", ANNA),
        ("@ANNA", ANNA),
        (" @anna ", ANNA),
        ("@Anya", ANNA),
        ("anya", ANNA),
        ("@anna_s", ANNA),
        ("@Anna_S", ANNA),
        ("anna_s", ANNA),
        ("@bob", BOB),
        ("bob", BOB),
        ("#support", SUPPORT),
        ("#SUP", SUPPORT),
        ("#sup", SUPPORT),
        ("queue:sup", SUPPORT),
        ("queue:support", SUPPORT),
        ("support", SUPPORT),
        ("sup", SUPPORT),
    ],
)
def test_names_resolve(sample: Directory, word: str, expected: Target) -> None:
    assert sample.resolve(word) == expected


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("user:15", ANNA),
        ("USER:15", ANNA),
        ("user:16", BOB),
        ("queue:3", SUPPORT),
        ("Queue:3", SUPPORT),
    ],
)
def test_raw_ids_known_to_the_directory_take_its_names(
    sample: Directory, word: str, expected: Target
) -> None:
    target = sample.resolve(word)
    assert target == expected
    assert target.name == expected.name


def test_unknown_raw_user_id_still_resolves_as_an_operator(sample: Directory) -> None:
    target = sample.resolve("user:99")
    assert target == Target(Kind.OPERATOR, 99, "user 99", None)
    assert target.ref == "user:99"


def test_unknown_raw_queue_id_still_resolves_as_a_queue(sample: Directory) -> None:
    target = sample.resolve("queue:42")
    assert target == Target(Kind.QUEUE, 42, "queue 42", None)
    assert target.ref == "queue:42"


def test_operator_sigil_does_not_find_a_queue(sample: Directory) -> None:
    error = resolve_error(sample, "@support")
    assert isinstance(error, UnknownName)
    assert all(t.kind is Kind.OPERATOR for t in error.candidates)


def test_queue_sigil_does_not_find_an_operator(sample: Directory) -> None:
    error = resolve_error(sample, "#bob")
    assert isinstance(error, UnknownName)
    assert all(t.kind is Kind.QUEUE for t in error.candidates)


@pytest.mark.parametrize(
    ("word", "expected"),
    [("smirnova", ANNA), ("Lee", BOB), ("line", SUPPORT), ("@smirnova", ANNA)],
)
def test_a_word_of_one_display_name_resolves(
    sample: Directory, word: str, expected: Target
) -> None:
    assert sample.resolve(word) == expected


def test_bare_name_is_an_operator_first_then_a_queue() -> None:
    sales_rep = Target(Kind.OPERATOR, 7, "Sam Sales", "sales")
    sales_line = Target(Kind.QUEUE, 4, "Sales line", "sales")
    directory = Directory([sales_rep], [sales_line])

    assert directory.resolve("sales") == sales_rep
    assert directory.resolve("@sales") == sales_rep
    assert directory.resolve("#sales") == sales_line
    assert directory.resolve("queue:sales") == sales_line


def test_a_key_wins_over_a_word_of_a_display_name() -> None:
    directory = directory_of(
        """\
        operators:
          - {key: mark, bitrix_id: 15, name: Support Guy}
        queues:
          - {key: support, bitrix_id: 3, name: Main line}
        """
    )
    assert directory.resolve("support").key == "support"


# ---- unknown names and suggestions ------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "suggestions"),
    [
        ("@ana", ["@anna"]),
        ("ana", ["@anna"]),
        ("@bobb", ["@bob"]),
        ("supprt", ["#support"]),
        ("#suport", ["#support"]),
        ("queue:supprt", ["#support"]),
    ],
)
def test_unknown_name_suggests_the_closest(
    sample: Directory, word: str, suggestions: list[str]
) -> None:
    error = resolve_error(sample, word)
    assert isinstance(error, UnknownName)
    assert error.token == word
    assert spelled(sample, error.candidates) == suggestions


@pytest.mark.parametrize("word", ["xqzzvw", "@qwertyuiop", "#zzz", "anything-else-at-all"])
def test_garbage_gets_no_suggestions(sample: Directory, word: str) -> None:
    error = resolve_error(sample, word)
    assert isinstance(error, UnknownName)
    assert error.candidates == ()


def test_at_most_three_suggestions() -> None:
    directory = directory_of(
        """\
        operators:
          - {key: maria, bitrix_id: 1, name: Maria One}
          - {key: marie, bitrix_id: 2, name: Marie Two}
          - {key: marta, bitrix_id: 3, name: Marta Three}
          - {key: mario, bitrix_id: 4, name: Mario Four}
          - {key: marina, bitrix_id: 5, name: Marina Five}
        """
    )
    error = resolve_error(directory, "@mari")
    assert isinstance(error, UnknownName)
    assert len(error.candidates) == 3
    assert len(set(error.candidates)) == len(error.candidates)


# ---- ambiguous names --------------------------------------------------------------------

TWO_ANNAS = """\
    operators:
      - {key: smirnova, bitrix_id: 15, name: Anna Smirnova}
      - {key: petrova, bitrix_id: 17, name: Anna Petrova}
      - {key: bob, bitrix_id: 16, name: Bob Lee}
    """


@pytest.mark.parametrize("word", ["anna", "Anna", "@anna"])
def test_a_first_name_shared_by_two_operators_is_ambiguous(word: str) -> None:
    directory = directory_of(TWO_ANNAS)
    error = resolve_error(directory, word)
    assert isinstance(error, AmbiguousName)
    assert error.token == word
    assert [(t.key, t.name) for t in error.candidates] == [
        ("petrova", "Anna Petrova"),
        ("smirnova", "Anna Smirnova"),
    ]


def test_the_keys_of_the_two_annas_still_resolve() -> None:
    directory = directory_of(TWO_ANNAS)
    assert directory.resolve("smirnova").bitrix_id == 15
    assert directory.resolve("@petrova").bitrix_id == 17
    assert directory.resolve("bob").bitrix_id == 16


def test_a_key_beats_a_shared_first_name() -> None:
    directory = directory_of(
        """\
        operators:
          - {key: anna, bitrix_id: 15, name: Anna Smirnova}
          - {key: petrova, bitrix_id: 17, name: Anna Petrova}
        """
    )
    assert directory.resolve("anna").bitrix_id == 15


# ---- words that cannot be targets -------------------------------------------------------


@pytest.mark.parametrize(
    "word", ["@", "#", "queue:", "user:abc", "user:0", "queue:0", "@a<b>", "@an @na", "@@x"]
)
def test_bad_targets(sample: Directory, word: str) -> None:
    error = resolve_error(sample, word)
    assert isinstance(error, BadTarget)
    assert error.candidates == ()


# ---- spellings --------------------------------------------------------------------------


def test_spellings_list_the_key_first_then_the_other_names(sample: Directory) -> None:
    assert sample.spellings(ANNA) == ["@anna", "@anna_s", "@anya"]
    assert sample.spellings(BOB) == ["@bob"]
    assert sample.spellings(SUPPORT) == ["#support", "#sup"]


def test_every_spelling_resolves_back(sample: Directory) -> None:
    for target in (*sample.operators, *sample.queues):
        for spelling in sample.spellings(target):
            assert sample.resolve(spelling) == target


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (ANNA, "@anna"),
        (SUPPORT, "#support"),
        (Target(Kind.OPERATOR, 99, "user 99"), "user:99"),
        (Target(Kind.QUEUE, 42, "queue 42"), "queue:42"),
    ],
)
def test_spelling(sample: Directory, target: Target, expected: str) -> None:
    assert sample.spelling(target) == expected


def test_spellings_of_a_raw_target(sample: Directory) -> None:
    assert sample.spellings(sample.resolve("user:99")) == ["user:99"]


def test_directory_lists_entries_in_config_order(sample: Directory) -> None:
    assert [t.key for t in sample.operators] == ["anna", "bob", "kate"]
    assert [t.key for t in sample.queues] == ["support"]
    assert sample.name_of(Kind.OPERATOR, 16) == "Bob Lee"
    assert sample.name_of(Kind.QUEUE, 16) is None


# ---- names in any script ----------------------------------------------------------------

RUSSIAN = """\
    operators:
      - {key: anna, bitrix_id: 15, name: Anna Smirnova, aliases: [anya], telegram: anna_s}
      - {key: bob, bitrix_id: 16, name: Bob Lee}
      - {key: елена, bitrix_id: 30, name: Елена Ёлкина}
      - {key: zhenya, bitrix_id: 31, name: Евгения Цой}
      - {key: yulia, bitrix_id: 32, name: Юлия Щукина}
      - {key: ivan, bitrix_id: 33, name: Иван Петров}
    queues:
      - {key: support, bitrix_id: 3, name: Support line, aliases: [sup]}
      - {key: продажи, bitrix_id: 5, name: Отдел продаж}
    """


@pytest.fixture(scope="module")
def russian() -> Directory:
    return directory_of(RUSSIAN)


@pytest.mark.parametrize(
    ("word", "key"),
    [
        ("@анна", "anna"),
        ("Анна", "anna"),
        ("@АННА", "anna"),
        ("@аня", "anna"),
        ("боб", "bob"),
        ("@Боб", "bob"),
        ("@елена", "елена"),
        ("@elena", "елена"),
        ("@Yelena", "елена"),
        ("@елкина", "елена"),
        ("@ёлкина", "елена"),
        ("@Elkina", "елена"),
        ("@женя", "zhenya"),
        ("@Zhenya", "zhenya"),
        ("@евгения", "zhenya"),
        ("@Tsoy", "zhenya"),
        ("@юлия", "yulia"),
        ("@julia", "yulia"),
        ("@iuliia", "yulia"),
        ("@shchukina", "yulia"),
        ("иван", "ivan"),
        ("@Петров", "ivan"),
        ("#prodazhi", "продажи"),
        ("#продажи", "продажи"),
        ("#саппорт", None),
    ],
)
def test_names_resolve_in_either_script(russian: Directory, word: str, key: str | None) -> None:
    if key is None:
        assert isinstance(resolve_error(russian, word), UnknownName)
    else:
        assert russian.resolve(word).key == key


@pytest.mark.parametrize(
    ("phrase", "key"),
    [
        ("Anna Smirnova", "anna"),
        ("anna smirnova", "anna"),
        ("Анна Смирнова", "anna"),
        ("Smirnova Anna", "anna"),  # surname first, as Russian forms have it
        ("@Anna Smirnova", "anna"),
        ("Елена Ёлкина", "елена"),
        ("Elena Elkina", "елена"),
        ("Yelena Yolkina", "елена"),
        ("Ёлкина Елена", "елена"),
        ("#Support line", "support"),
        ("Отдел продаж", "продажи"),
    ],
)
def test_full_names_resolve(russian: Directory, phrase: str, key: str) -> None:
    assert russian.resolve(phrase).key == key
    assert russian.read(phrase.split()) == Reading(russian.resolve(phrase), 2)


def test_a_full_name_two_people_share_is_ambiguous() -> None:
    directory = directory_of(
        """\
        operators:
          - {key: anna1, bitrix_id: 15, name: Anna Smirnova}
          - {key: anna2, bitrix_id: 17, name: Анна Смирнова}
        """
    )
    error = resolve_error(directory, "Anna Smirnova")
    assert isinstance(error, AmbiguousName)
    assert [t.key for t in error.candidates] == ["anna1", "anna2"]
    with pytest.raises(AmbiguousName):
        directory.read(["анна", "смирнова", "please"])


@pytest.mark.parametrize(
    ("words", "key", "count"),
    [
        (["@anna"], "anna", 1),
        (["@bob", "please"], "bob", 1),
        (["Anna", "Smirnova"], "anna", 2),
        (["Anna", "Smirnova", "please"], "anna", 2),
        (["Анна", "Смирнова", "пожалуйста"], "anna", 2),
        (["@anna", "@bob"], "anna", 1),
        (["anna", "bob"], "anna", 1),
        (["Anna", "Smirnova", "Bob", "Lee"], "anna", 2),
        (["Support", "line", "now"], "support", 2),
        (["anna", *["x"] * 1000], "anna", 1),
    ],
)
def test_read_takes_the_longest_full_name_else_the_first_word(
    russian: Directory, words: list[str], key: str, count: int
) -> None:
    reading = russian.read(words)
    assert (reading.target.key, reading.words) == (key, count)


def test_read_raises_for_the_first_word_when_nothing_fits(russian: Directory) -> None:
    with pytest.raises(UnknownName) as info:
        russian.read(["@ana", "please"])
    assert info.value.token == "@ana"
    assert spelled(russian, info.value.candidates) == ["@anna"]


@pytest.mark.parametrize(
    ("word", "suggestions"),
    [
        ("@ана", ["@anna"]),
        ("@Ана", ["@anna"]),
        ("@бобб", ["@bob"]),
        ("@елкна", ["@елена"]),
        ("@elkna", ["@елена"]),
        ("#suport", ["#support"]),
        ("#саппорт", ["#support"]),  # "sapport"
        ("@Anna Smirnva", ["@anna"]),
        ("Анна Смирнва", ["@anna"]),
    ],
)
def test_did_you_mean_works_across_scripts(
    russian: Directory, word: str, suggestions: list[str]
) -> None:
    error = resolve_error(russian, word)
    assert isinstance(error, UnknownName)
    assert spelled(russian, error.candidates) == suggestions


def test_spellings_list_cyrillic_names_as_written() -> None:
    directory = directory_of(
        """\
        operators:
          - {key: елена, bitrix_id: 30, name: Елена Ёлкина, aliases: [Ёлкина, lena]}
        """
    )
    [elena] = directory.operators
    assert directory.spellings(elena) == ["@елена", "@lena", "@ёлкина"]
    for spelling in directory.spellings(elena):
        assert directory.resolve(spelling) == elena


# ---- a big directory --------------------------------------------------------------------

BIG = 10_000


@pytest.fixture(scope="module")
def big() -> Directory:
    """Operators op00000..op09999 (bitrix_id i + 1, name "Given00042 Family00042"), one queue."""
    config = Config.model_validate(
        {
            "operators": [
                {"key": f"op{i:05d}", "bitrix_id": i + 1, "name": f"Given{i:05d} Family{i:05d}"}
                for i in range(BIG)
            ],
            "queues": [{"key": "support", "bitrix_id": 3, "name": "Support line"}],
        }
    )
    return Directory.from_config(config)


def test_big_directory_has_every_operator(big: Directory) -> None:
    assert len(big.operators) == BIG
    assert big.operators[0].key == "op00000"
    assert big.operators[-1].key == "op09999"


@pytest.mark.parametrize(
    ("word", "key", "bitrix_id"),
    [
        ("op00000", "op00000", 1),
        ("@op09999", "op09999", 10_000),
        ("OP05000", "op05000", 5001),
        ("@op04321", "op04321", 4322),
        ("given05000", "op05000", 5001),
        ("Family09999", "op09999", 10_000),
        ("user:5001", "op05000", 5001),
        ("#support", "support", 3),
    ],
)
def test_big_directory_resolves_first_last_and_middle(
    big: Directory, word: str, key: str, bitrix_id: int
) -> None:
    target = big.resolve(word)
    assert (target.key, target.bitrix_id) == (key, bitrix_id)


@pytest.mark.parametrize("word", ["@op050000", "opp05000", "@op05000x"])
def test_big_directory_miss_suggests_the_nearest(big: Directory, word: str) -> None:
    error = resolve_error(big, word)
    assert isinstance(error, UnknownName)
    assert 1 <= len(error.candidates) <= 3
    assert error.candidates[0].key == "op05000"
    assert all(t.kind is Kind.OPERATOR for t in error.candidates)


def test_big_directory_miss_of_garbage_has_no_suggestions(big: Directory) -> None:
    error = resolve_error(big, "@zzzzzzzz")
    assert isinstance(error, UnknownName)
    assert error.candidates == ()


def test_only_names_one_slip_away_are_offered_when_there_are_any() -> None:
    directory = directory_of(
        """\
        operators:
          - {key: tomas, bitrix_id: 1, name: Tomas One}
          - {key: toman, bitrix_id: 2, name: Toman Two}
          - {key: tamas, bitrix_id: 3, name: Tamas Three}
          - {key: thomas, bitrix_id: 4, name: Thomas Four}
        """
    )
    error = resolve_error(directory, "@tomaz")  # "tamas" and "thomas" are two slips away
    assert isinstance(error, UnknownName)
    assert sorted(spelled(directory, error.candidates)) == ["@toman", "@tomas"]
    error = resolve_error(directory, "@thoma")
    assert isinstance(error, UnknownName)
    assert spelled(directory, error.candidates) == ["@thomas"]


def test_did_you_mean_counts_a_bounded_number_of_names_and_compares_a_few(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A miss no name is one slip from, in a large directory, counts at most the scan budget
    of index entries, rarest letter triples first, and compares closely at most the
    shortlist: an index, not a scan. The misspelt key still comes first ("ana_smirnava_48",
    two slips: anna_smirnova_48)."""
    import collections
    import difflib

    import bot.directory

    first = ("anna", "boris", "olga", "pavel", "irina", "dmitry", "elena", "sergey")
    last = ("smirnova", "ivanov", "kuznetsova", "popov", "sokolova", "lebedev")
    lines = [
        f"  - {{key: {first[i % 8]}_{last[i // 8 % 6]}_{i}, bitrix_id: {i + 1}, name: N{i}}}"
        for i in range(3000)
    ]
    directory = directory_of("operators:\n" + "\n".join(lines) + "\n")
    counted: list[int] = []
    compared: list[int] = []

    class Counting(collections.Counter[str]):
        def update(self, items: Any = (), /, **kwargs: int) -> None:
            counted.append(len(items or ()))
            super().update(items, **kwargs)

    real_close = difflib.get_close_matches

    def close(word: str, possibilities: list[str], n: int, cutoff: float) -> list[str]:
        compared.append(len(possibilities))
        return real_close(word, possibilities, n=n, cutoff=cutoff)

    monkeypatch.setattr(bot.directory, "Counter", Counting)
    monkeypatch.setattr(bot.directory, "_SCAN_BUDGET", 2000)
    monkeypatch.setattr(bot.directory.difflib, "get_close_matches", close)
    with pytest.raises(UnknownName) as miss:
        directory.resolve("@ana_smirnava_48")
    assert 0 < sum(counted) <= 2000
    assert compared and max(compared) <= bot.directory._SHORTLIST
    assert miss.value.candidates[0].key == "anna_smirnova_48"


def test_did_you_mean_finds_a_one_letter_slip_among_twenty_thousand_similar_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Names built from the same few syllables: each letter triple is in thousands of them, so
    a count of shared triples (a fifth of its budget here, as at 100,000 names) can drown the
    misspelt name among the rest. Every name one slip from the typo is offered, so the name
    meant is; another one slip away may rank first."""
    import bot.directory

    monkeypatch.setattr(bot.directory, "_SCAN_BUDGET", 4000)
    first = ("ka", "lo", "mi", "ra", "ne", "ti", "vo", "sa", "de", "ru")
    last = ("bor", "vin", "kel", "mas", "tun", "gor", "pel", "dar", "sol", "nik")
    keys = []
    lines = []
    for i in range(20_000):
        given = first[i % 10] + first[i // 10 % 10]
        family = last[i // 100 % 10] + last[i // 1000 % 10] + f"ova{i // 10_000}"
        keys.append(f"{given}_{family}")
        lines.append(
            f"  - {{key: {keys[-1]}, bitrix_id: {i + 1}, name: {given.title()} {family.title()}}}"
        )
    directory = directory_of("operators:\n" + "\n".join(lines) + "\n")
    first_hits = offered = 0
    for key in keys[137::997][:20]:  # one letter wrong, as a thumb slips
        at = len(key) // 2 + 1  # in the family name
        slip = key[:at] + "z" + key[at + 1 :]
        error = resolve_error(directory, f"@{slip}")
        assert isinstance(error, UnknownName)
        keys_offered = [target.key for target in error.candidates]
        offered += key in keys_offered
        first_hits += keys_offered[:1] == [key]
    assert offered == 20
    assert first_hits >= 16
