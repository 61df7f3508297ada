"""Who is who: operators and queues by name, resolved from a command's target words.

Built once from config. Names are kept folded (:func:`bot.spelling.fold`), so ``@анна``,
``@Anna`` and ``anna`` are one lookup: a dict hit (O(1)); only a miss pays for "did you mean".
Knows nothing of HTTP or Telegram.
"""

from __future__ import annotations

import difflib
import heapq
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from operator import itemgetter

from bot.config import Config
from bot.slips import SlipIndex
from bot.spelling import fold


class Kind(StrEnum):
    """What a target is in Bitrix24 terms."""

    OPERATOR = "operator"
    QUEUE = "queue"


@dataclass(frozen=True, slots=True)
class Target:
    """Where a dialog goes: an operator (``USER_ID``) or a queue (``QUEUE_ID``)."""

    kind: Kind
    bitrix_id: int
    name: str
    key: str | None = None

    @property
    def ref(self) -> str:
        """The raw form, ``user:15`` or ``queue:3``, as used in logs and the grammar."""
        prefix = "user" if self.kind is Kind.OPERATOR else "queue"
        return f"{prefix}:{self.bitrix_id}"


class ResolveError(Exception):
    """A target word that does not name exactly one entry."""

    def __init__(self, token: str, candidates: tuple[Target, ...]) -> None:
        super().__init__(token)
        self.token = token
        self.candidates = candidates


class UnknownName(ResolveError):
    """Nothing has this name; ``candidates`` are the closest names (may be empty)."""


class AmbiguousName(ResolveError):
    """Several entries fit; ``candidates`` lists them."""


class BadTarget(ResolveError):
    """The word cannot be a target at all (``user:abc``, ``@``)."""


@dataclass(frozen=True, slots=True)
class Reading:
    """What the words after the dialogs name: ``target``, by the first ``words`` of them."""

    target: Target
    words: int


_RAW = re.compile(r"^(user|queue):([0-9]{1,10})$", re.IGNORECASE)
_WORD = re.compile(r"[\w-]+")  # a word of a display name
_NAME = re.compile(r"[\w.-]+")  # a key, alias or username as typed (keys may hold dots)
MAX_NAME_WORDS = 5  # the longest full name tried: "Мария Анна Петрова-Водкина" is three


def _phrase(words: Iterable[str]) -> str:
    """A full name's lookup key: its folded words in any order ("Smirnova Anna" too)."""
    return " ".join(sorted(fold(word) for word in words))


_SHORTLIST = 64  # spellings compared closely for "did you mean"
# postings of letter triples counted per miss, the rarest first: in a directory of 100,000 a
# triple such as "ova" is in most names, and counting all of them would take tens of ms
_SCAN_BUDGET = 20_000


def _grams(word: str) -> set[str]:
    """The letter triples of a word, its edges included (``^an``, ``na$``): typo-tolerant
    keys. Pairs would do too, but in a large directory each pair is in thousands of names,
    so the few spellings worth comparing drown in the counting."""
    padded = f"^{word}$"
    return {padded[i : i + 3] for i in range(max(1, len(padded) - 2))}


class Directory:
    """Operators and queues by key, alias, Telegram username, full name and raw ID."""

    def __init__(
        self,
        operators: Iterable[Target],
        queues: Iterable[Target],
        *,
        names: dict[tuple[Kind, str], Target] | None = None,
    ) -> None:
        """``names``: the keys, aliases and usernames that reach each entry, as typed."""
        self.operators: tuple[Target, ...] = tuple(operators)
        self.queues: tuple[Target, ...] = tuple(queues)
        self._names: dict[tuple[Kind, str], Target] = {}  # folded key, alias or username
        self._other_names: dict[Target, list[str]] = {}  # as typed, for /operators
        for (kind, name), target in (names or {}).items():
            self._names.setdefault((kind, fold(name)), target)
            if name.lower() != (target.key or "").lower():
                self._other_names.setdefault(target, []).append(name.lower())
        self._by_id: dict[tuple[Kind, int], Target] = {}
        self._words: dict[tuple[Kind, str], list[Target]] = {}  # a folded word of a name
        self._phrases: dict[tuple[Kind, str], list[Target]] = {}  # a whole name, see _phrase
        full_names: dict[str, list[Target]] = {}  # folded, for "did you mean"
        for target in (*self.operators, *self.queues):
            self._by_id.setdefault((target.kind, target.bitrix_id), target)
            if target.key and (target.kind, target.key.lower()) not in (names or {}):
                self._names.setdefault((target.kind, fold(target.key)), target)
            words = [fold(word) for word in _WORD.findall(target.name)]
            for word in set(words):
                self._words.setdefault((target.kind, word), []).append(target)
            if len(words) > 1:
                self._phrases.setdefault((target.kind, " ".join(sorted(words))), []).append(target)
            full_names.setdefault(" ".join(words), []).append(target)
        # "did you mean": every folded spelling, and the letter triples that find it
        self._spellings: dict[str, list[Target]] = {}
        for (_, name), target in self._names.items():
            self._spellings.setdefault(name, []).append(target)
        for name, targets in full_names.items():
            self._spellings.setdefault(name, []).extend(targets)
        self._slips = SlipIndex(self._spellings)
        self._grams: dict[str, list[str]] = {}  # letter triple -> spellings that contain it
        for spelling in self._spellings:
            for gram in _grams(spelling):
                self._grams.setdefault(gram, []).append(spelling)

    @classmethod
    def from_config(cls, config: Config) -> Directory:
        """The directory of a validated config (names there are unique already)."""
        names: dict[tuple[Kind, str], Target] = {}
        operators = []
        for op in config.operators:
            target = Target(Kind.OPERATOR, op.bitrix_id, op.name, op.key)
            operators.append(target)
            for name in (op.key, *op.aliases, *([op.telegram] if op.telegram else [])):
                names[(Kind.OPERATOR, name.lower())] = target
        queues = []
        for q in config.queues:
            target = Target(Kind.QUEUE, q.bitrix_id, q.name, q.key)
            queues.append(target)
            for name in (q.key, *q.aliases):
                names[(Kind.QUEUE, name.lower())] = target
        return cls(operators, queues, names=names)

    def name_of(self, kind: Kind, bitrix_id: int) -> str | None:
        """The display name of a Bitrix24 user or queue ID, if the directory has it."""
        target = self._by_id.get((kind, bitrix_id))
        return target.name if target else None

    def by_id(self, kind: Kind, bitrix_id: int) -> Target:
        """A target for a raw ID, named from the directory when it is there."""
        found = self._by_id.get((kind, bitrix_id))
        if found is not None:
            return found
        return Target(
            kind, bitrix_id, f"{'user' if kind is Kind.OPERATOR else 'queue'} {bitrix_id}"
        )

    def resolve(self, token: str) -> Target:
        """Resolve a target of the grammar (a word, or a full name of several), or raise a
        :class:`ResolveError`."""
        word = unicodedata.normalize("NFC", token).strip()
        raw = _RAW.match(word)
        if raw:
            prefix, number = raw.group(1).lower(), int(raw.group(2))
            if number <= 0:
                raise BadTarget(word, ())
            return self.by_id(Kind.QUEUE if prefix == "queue" else Kind.OPERATOR, number)
        kinds, names = self._parse(word)
        hits = self._hits(kinds, names)
        if len(hits) == 1:
            return hits[0]
        if hits:
            raise AmbiguousName(word, tuple(sorted(hits, key=lambda t: t.name)))
        raise UnknownName(word, self.suggest(" ".join(names), kinds))

    def read(self, words: Sequence[str]) -> Reading:
        """The target the first of ``words`` name: the longest run of them that is someone's
        full name ("Anna Smirnova please"), else the first word alone; raises
        :class:`ResolveError` when that names nobody, or several."""
        for count in range(min(len(words), MAX_NAME_WORDS), 1, -1):
            phrase = " ".join(words[:count])
            try:
                kinds, names = self._parse(unicodedata.normalize("NFC", phrase))
            except BadTarget:  # "@anna @bob" is two names, not one
                continue
            hits = self._hits(kinds, names)
            if len(hits) == 1:
                return Reading(hits[0], count)
            if hits:
                raise AmbiguousName(phrase, tuple(sorted(hits, key=lambda t: t.name)))
        return Reading(self.resolve(words[0]), 1)

    @staticmethod
    def _parse(word: str) -> tuple[tuple[Kind, ...], list[str]]:
        """Which kinds a target may be (by its sigil), and its words, lower-cased."""
        kinds: tuple[Kind, ...]
        lowered = word.lower()
        if lowered.startswith("@"):
            kinds, name = (Kind.OPERATOR,), lowered[1:]
        elif lowered.startswith("#"):
            kinds, name = (Kind.QUEUE,), lowered[1:]
        elif lowered.startswith("queue:"):
            kinds, name = (Kind.QUEUE,), lowered[6:]
        elif lowered.startswith("user:"):
            raise BadTarget(word, ())  # user: takes a Bitrix24 ID only
        else:
            kinds, name = (Kind.OPERATOR, Kind.QUEUE), lowered
        names = name.split()
        if not names or not all(_NAME.fullmatch(n) for n in names):
            raise BadTarget(word, ())
        return kinds, names

    def _hits(self, kinds: tuple[Kind, ...], names: list[str]) -> list[Target]:
        """The entries ``names`` fit: a key, alias or username first (operators before
        queues), else every entry with that word, or that full name, in its name."""
        if len(names) > 1:
            key = _phrase(names)
            found = (t for kind in kinds for t in self._phrases.get((kind, key), ()))
            return list(dict.fromkeys(found))
        key = fold(names[0])
        for kind in kinds:
            hit = self._names.get((kind, key))
            if hit is not None:
                return [hit]
        by_word = (t for kind in kinds for t in self._words.get((kind, key), ()))
        return list(dict.fromkeys(by_word))

    def suggest(
        self, name: str, kinds: tuple[Kind, ...] = (Kind.OPERATOR, Kind.QUEUE), limit: int = 3
    ) -> tuple[Target, ...]:
        """The entries whose names are closest to ``name`` (in either script), best first.

        Names one slip away are what a thumb meant: when there are any, only they are offered.
        Else the names sharing the most letter triples with ``name`` are compared closely. Both
        are index look-ups, so a miss costs about the same among ten thousand names as ten.
        """
        word = fold(name)
        near, complete = self._slips.near(word)
        found = self._closest(word, near, kinds, limit)
        if len(found) == limit or (found and complete):
            return found
        return self._closest(word, [*near, *self._likely(word)], kinds, limit)

    def _closest(
        self, word: str, spellings: list[str], kinds: tuple[Kind, ...], limit: int
    ) -> tuple[Target, ...]:
        """At most ``limit`` entries of ``kinds`` among ``spellings``, the closest to ``word``
        first, none much unlike it."""
        close = difflib.get_close_matches(word, dict.fromkeys(spellings), n=limit * 3, cutoff=0.6)
        found: dict[Target, None] = {}  # ordered; a name thousands share fills it at once
        for spelling in close:
            for target in self._spellings[spelling]:
                if target.kind in kinds:
                    found.setdefault(target)
                    if len(found) == limit:
                        return tuple(found)
        return tuple(found)

    def _likely(self, word: str) -> list[str]:
        """At most :data:`_SHORTLIST` spellings sharing the most letter triples with ``word``,
        from at most :data:`_SCAN_BUDGET` postings: the rarest triples say the most."""
        postings = sorted((self._grams.get(gram, ()) for gram in _grams(word)), key=len)
        shared: Counter[str] = Counter()
        budget = _SCAN_BUDGET
        for spellings in postings:
            if budget <= 0:
                break
            shared.update(spellings[:budget])
            budget -= len(spellings)
        if len(shared) <= _SHORTLIST:
            return [spelling for spelling, _ in shared.most_common()]
        # what most_common(_SHORTLIST) gives, sooner: of tens of thousands counted, only
        # those with as many triples as the shortlist's last are sorted
        least = heapq.nlargest(_SHORTLIST, shared.values())[-1]
        best = [(spelling, n) for spelling, n in shared.items() if n >= least]
        best.sort(key=itemgetter(1), reverse=True)
        return [spelling for spelling, _ in best[:_SHORTLIST]]

    def spellings(self, target: Target) -> list[str]:
        """Every way to type ``target``: key first, then aliases and the Telegram username."""
        sigil = "@" if target.kind is Kind.OPERATOR else "#"
        others = sorted(self._other_names.get(target, ()))
        return [self.spelling(target), *(f"{sigil}{name}" for name in others)]

    def spelling(self, target: Target) -> str:
        """How to type ``target`` in a command: ``@anna``, ``#support`` or ``user:15``."""
        if target.key:
            return f"@{target.key}" if target.kind is Kind.OPERATOR else f"#{target.key}"
        return target.ref
