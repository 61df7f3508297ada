"""Tests of the one-slip index: which spellings a thumb's single typo could have come from."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bot.slips
from bot.slips import SlipIndex, one_slip


def slips(word: str, other: str) -> int:
    """The optimal string alignment distance: letters changed, left out, added, or two
    neighbours swapped (the reference the index must agree with)."""
    rows = [[0] * (len(other) + 1) for _ in range(len(word) + 1)]
    for i in range(len(word) + 1):
        rows[i][0] = i
    for j in range(len(other) + 1):
        rows[0][j] = j
    for i in range(1, len(word) + 1):
        for j in range(1, len(other) + 1):
            rows[i][j] = min(
                rows[i - 1][j] + 1,
                rows[i][j - 1] + 1,
                rows[i - 1][j - 1] + (word[i - 1] != other[j - 1]),
            )
            if i > 1 and j > 1 and word[i - 1] == other[j - 2] and word[i - 2] == other[j - 1]:
                rows[i][j] = min(rows[i][j], rows[i - 2][j - 2] + 1)
    return rows[-1][-1]


@pytest.mark.parametrize(
    ("word", "other", "expected"),
    [
        ("anna", "anna", True),
        ("anan", "anna", True),  # swapped
        ("naan", "anna", False),  # swapped twice
        ("ana", "anna", True),  # left out
        ("annna", "anna", True),  # added
        ("anne", "anna", True),  # changed, last
        ("enna", "anna", True),  # changed, first
        ("nana", "anna", True),  # swapped, first
        ("emma", "anna", False),
        ("an", "anna", False),
        ("", "a", True),
        ("", "", True),
        ("ab", "ba", True),
        ("abc", "bca", False),
        ("smirnova", "smirnvoa", True),
        ("smirnova", "smirnov", True),
        ("smirnova", "smirnovaa", True),
        ("smirnova", "smyrnova", True),
        ("smirnova", "snirnova", True),
        ("smirnova", "smirmova", True),
        ("smirnova", "smimova", False),
    ],
)
def test_one_slip(word: str, other: str, expected: bool) -> None:
    assert one_slip(word, other) is expected
    assert one_slip(other, word) is expected
    assert (slips(word, other) <= 1) is expected


WORDS = st.text(alphabet="abc_", max_size=8)


@given(WORDS, WORDS)
@settings(max_examples=2000, deadline=None)
def test_one_slip_is_a_distance_of_at_most_one(word: str, other: str) -> None:
    assert one_slip(word, other) is (slips(word, other) <= 1)


@given(st.sets(WORDS, max_size=60), WORDS)
@settings(max_examples=1000, deadline=None)
def test_the_index_finds_every_spelling_one_slip_away(spellings: set[str], word: str) -> None:
    found, complete = SlipIndex(spellings).near(word)
    assert complete
    assert sorted(found) == sorted(s for s in spellings if slips(word, s) <= 1)


def test_a_half_shared_by_too_many_is_not_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the limit a half is skipped and the answer says it is not complete; what the other
    half finds is still given."""
    monkeypatch.setattr(bot.slips, "CHECK_LIMIT", 3)
    index = SlipIndex(["anna", "anne", "anny", "anya", "bella"])
    assert index.near("annx") == ([], False)  # "an" begins 4; nothing ends in "x"
    assert index.near("anxa") == (["anna", "anya"], False)  # 3 end in "a": checked
    assert index.near("xnna") == (["anna"], True)
    assert index.near("bela") == (["bella"], True)


def test_a_miss_among_twenty_thousand_checks_a_bounded_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Names built from the same few syllables: a typo is checked against the spellings that
    share one of its halves, never against all of them."""
    first = ("ka", "lo", "mi", "ra", "ne", "ti", "vo", "sa", "de", "ru")
    last = ("bor", "vin", "kel", "mas", "tun", "gor", "pel", "dar", "sol", "nik")
    spellings = [
        f"{first[i % 10]}{first[i // 10 % 10]}_{last[i // 100 % 10]}{last[i // 1000 % 10]}"
        f"ova{i // 10_000}"
        for i in range(20_000)
    ]
    index = SlipIndex(spellings)
    checked: list[str] = []

    def counting(word: str, other: str) -> bool:
        checked.append(other)
        return one_slip(word, other)

    monkeypatch.setattr(bot.slips, "one_slip", counting)
    for meant in spellings[137::997][:20]:
        at = len(meant) // 2 + 1
        typo = meant[:at] + "z" + meant[at + 1 :]
        checked.clear()
        found, complete = index.near(typo)
        assert complete
        assert meant in found
        assert 0 < len(checked) <= 2 * bot.slips.CHECK_LIMIT
        assert len(checked) < len(spellings) / 20
