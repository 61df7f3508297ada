"""Tests of name folding: one skeleton for every way of typing a name, in either script."""

from __future__ import annotations

import pytest

from bot.spelling import fold

ALIKE = [
    ["anna", "Anna", "ANNA", "анна", "Анна", "АННА"],
    ["bob", "Bob", "боб", "Боб"],
    ["ivan", "Ivan", "иван", "Иван"],
    ["zhenya", "Zhenya", "женя", "Женя"],
    ["elkin", "Elkin", "Ёлкин", "ёлкин", "елкин", "Yolkin"],
    ["elena", "Yelena", "Елена", "ЕЛЕНА"],
    ["yulia", "Yulia", "julia", "Julia", "iuliia", "Iuliia", "yuliya", "юлия", "Юлия"],
    ["maria", "mariya", "mariia", "Мария"],
    ["natalia", "natalya", "natalja", "Наталья", "Наталия"],
    ["sergey", "sergei", "sergej", "Сергей"],
    ["evgeniy", "evgeny", "evgenii", "yevgeny", "Евгений"],
    ["alexey", "aleksey", "alexei", "aleksei", "Алексей"],
    ["fedor", "fyodor", "Фёдор", "Федор"],
    ["shchukin", "schukin", "Щукин"],
    ["khabibullin", "habibullin", "Хабибуллин"],
    ["tsoy", "tsoi", "Цой"],
    ["tchaikovsky", "chaykovskiy", "Чайковский"],
    ["vladimir", "wladimir", "Владимир"],
    ["victor", "viktor", "Виктор"],
    ["jose", "josé", "JOSÉ", "jose\u0301"],  # an accent, precomposed or not
    ["zoe", "zoë"],
    ["strasse", "straße"],
    ["ольга", "Ольга", "olga"],
    ["anna_s", "Anna_S"],
    ["anna.smirnova", "анна.смирнова"],
]


@pytest.mark.parametrize("spellings", ALIKE, ids=[group[0] for group in ALIKE])
def test_spellings_of_one_name_fold_alike(spellings: list[str]) -> None:
    assert {fold(word) for word in spellings} == {fold(spellings[0])}


DIFFERENT = [
    ("anna", "ana"),  # a typo: "did you mean", not a match
    ("иван", "йован"),  # й is not и
    ("ivan", "yovan"),
    ("bob", "bobb"),
    ("anna", "anya"),
    ("elena", "alena"),
    ("op05000", "op05001"),
    ("support", "sales"),
]


@pytest.mark.parametrize(("one", "other"), DIFFERENT)
def test_different_names_stay_different(one: str, other: str) -> None:
    assert fold(one) != fold(other)


def test_decomposed_letters_are_the_letters_typed_on_a_phone() -> None:
    assert fold("и\u0306ван") == fold("йван") != fold("иван")  # NFD "й", as macOS pastes it
    assert fold("е\u0308лкин") == fold("ёлкин") == fold("елкин")
    assert fold("ӓнна") == fold("anna")  # a letter the table lacks: its accent goes


def test_digits_and_key_marks_are_kept() -> None:
    assert fold("user.15") == "user.15"
    assert fold("line-3") == "line-3"
    assert fold("op_7") == "op_7"


def test_other_scripts_are_kept_as_letters() -> None:
    assert fold("אנה") == "אנה"
    assert fold("Ελένη") == fold("ελένη") == "ελενη"


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("йван", "иван"),  # й starting a syllable is not и
        ("yvonne", "ivonne"),
        ("krylov", "krilov"),  # ы is "y"
    ],
)
def test_y_is_i_only_where_it_ends_a_syllable(one: str, other: str) -> None:
    assert fold(one) != fold(other)
    assert fold("aygul") == fold("aigul") == fold("Айгуль")
    assert fold("dmitry") == fold("dmitrii") == fold("Дмитрий")
