"""Spellings one slip away from a word: a letter wrong, missing, extra, or two letters swapped.

A thumb's typo is almost always one slip, and one slip leaves either the first half of a word
or its second half (past the middle letter) as it was. So the spellings worth checking are
those that begin with the word's first half or end with its second half: two ranges of a
sorted list each, found by bisection, however large the directory.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Final

# Past this many spellings sharing a half (a word of two or three letters in a directory of
# thousands), checking them would cost more than the count of letter triples it saves.
CHECK_LIMIT: Final = 2_000
_AFTER_ALL: Final = "\U0010ffff"  # sorts after every character a spelling can hold


def one_slip(word: str, other: str) -> bool:
    """Whether ``other`` is ``word`` itself or one slip from it: one letter changed, left out
    or added, or two neighbours swapped."""
    size = len(word)
    if len(other) < size:
        word, other, size = other, word, len(other)
    if len(other) - size > 1:
        return False
    at = 0  # the first place they differ
    while at < size and word[at] == other[at]:
        at += 1
    if len(other) > size:  # one letter added (or, read the other way, left out)
        return word[at:] == other[at + 1 :]
    if word[at + 1 :] == other[at + 1 :]:  # the same, or one letter changed
        return True
    swapped = word[at] == other[at + 1] and word[at + 1] == other[at]
    return swapped and word[at + 2 :] == other[at + 2 :]


class SlipIndex:
    """Spellings sorted, and sorted reversed, to find those one slip from a word."""

    __slots__ = ("_backward", "_forward")

    def __init__(self, spellings: Iterable[str]) -> None:
        """``spellings``: unique strings (the directory's folded names)."""
        self._forward = sorted(spellings)
        self._backward = sorted(spelling[::-1] for spelling in self._forward)

    def near(self, word: str) -> tuple[list[str], bool]:
        """The spellings one slip from ``word`` (or equal to it), and whether that list is
        complete: a half shared by more than :data:`CHECK_LIMIT` spellings is not checked."""
        half = len(word) // 2
        found: dict[str, None] = {}
        complete = True
        # a slip at or past the middle keeps the first half; one before it keeps what follows
        # the middle letter (a swap across the middle keeps it too)
        for spellings, part, turned in (
            (self._forward, word[:half], False),
            (self._backward, word[half + 1 :][::-1], True),
        ):
            start = bisect_left(spellings, part)
            end = bisect_left(spellings, part + _AFTER_ALL, start)
            if end - start > CHECK_LIMIT:
                complete = False
                continue
            for spelling in spellings[start:end]:
                if abs(len(spelling) - len(word)) <= 1:
                    candidate = spelling[::-1] if turned else spelling
                    if one_slip(word, candidate):
                        found[candidate] = None
        return list(found), complete
