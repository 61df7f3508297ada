"""Who is who: operators and queues by name, resolved from a command's target word.

Built once from config. Lookups are dict hits (O(1)); only a miss pays for "did you mean".
Knows nothing of HTTP or Telegram.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from bot.config import Config


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


_RAW = re.compile(r"^(user|queue):([0-9]{1,10})$", re.IGNORECASE)
_WORD = re.compile(r"[\w-]+")  # a word of a display name
_NAME = re.compile(r"[\w.-]+")  # a key, alias or username as typed (keys may hold dots)


_SHORTLIST = 64  # spellings compared closely for "did you mean"


def _grams(word: str) -> set[str]:
    """The letter pairs of a word, its edges included (``^a``, ``a$``): typo-tolerant keys."""
    padded = f"^{word}$"
    return {padded[i : i + 2] for i in range(len(padded) - 1)}


class Directory:
    """Operators and queues by key, alias, Telegram username and raw ID."""

    def __init__(
        self,
        operators: Iterable[Target],
        queues: Iterable[Target],
        *,
        names: dict[tuple[Kind, str], Target] | None = None,
    ) -> None:
        self.operators: tuple[Target, ...] = tuple(operators)
        self.queues: tuple[Target, ...] = tuple(queues)
        self._names: dict[tuple[Kind, str], Target] = dict(names or {})
        self._by_id: dict[tuple[Kind, int], Target] = {}
        self._words: dict[tuple[Kind, str], list[Target]] = {}
        for target in (*self.operators, *self.queues):
            self._by_id.setdefault((target.kind, target.bitrix_id), target)
            if target.key:
                self._names.setdefault((target.kind, target.key.lower()), target)
            for word in {w.lower() for w in _WORD.findall(target.name)}:
                self._words.setdefault((target.kind, word), []).append(target)
        self._other_names: dict[Target, list[str]] = {}
        for (_, name), target in self._names.items():
            if name != (target.key or "").lower():
                self._other_names.setdefault(target, []).append(name)
        self._spellings: dict[str, list[Target]] | None = None
        self._grams: dict[str, list[str]] = {}  # letter pair -> spellings that contain it
        self._spelling_index()  # now, not on the first typo: it takes a while for thousands

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
        """Resolve a target word of the grammar, or raise a :class:`ResolveError`."""
        word = token.strip()
        raw = _RAW.match(word)
        if raw:
            prefix, number = raw.group(1).lower(), int(raw.group(2))
            if number <= 0:
                raise BadTarget(word, ())
            return self.by_id(Kind.QUEUE if prefix == "queue" else Kind.OPERATOR, number)
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
        if not name or not _NAME.fullmatch(name):
            raise BadTarget(word, ())
        for kind in kinds:
            found = self._names.get((kind, name))
            if found is not None:
                return found
        by_word = {t for kind in kinds for t in self._words.get((kind, name), ())}
        if len(by_word) == 1:
            return by_word.pop()
        if by_word:
            raise AmbiguousName(word, tuple(sorted(by_word, key=lambda t: t.name)))
        raise UnknownName(word, self.suggest(name, kinds))

    def suggest(
        self, name: str, kinds: tuple[Kind, ...] = (Kind.OPERATOR, Kind.QUEUE), limit: int = 3
    ) -> tuple[Target, ...]:
        """The entries whose names are closest to ``name``, best first.

        Only spellings that share letter pairs with ``name`` are compared closely, so a miss
        costs about the same in a directory of ten thousand as in one of ten.
        """
        spellings = self._spelling_index()
        word = name.lower()
        shared: Counter[str] = Counter()
        for gram in _grams(word):
            shared.update(self._grams.get(gram, ()))
        likely = [spelling for spelling, _ in shared.most_common(_SHORTLIST)]
        close = difflib.get_close_matches(word, likely, n=limit * 3, cutoff=0.6)
        found: list[Target] = []
        for spelling in close:
            for target in spellings[spelling]:
                if target.kind in kinds and target not in found:
                    found.append(target)
        return tuple(found[:limit])

    def _spelling_index(self) -> dict[str, list[Target]]:
        if self._spellings is None:
            index: dict[str, list[Target]] = {}
            for (_, name), target in self._names.items():
                index.setdefault(name, []).append(target)
            for target in (*self.operators, *self.queues):
                index.setdefault(target.name.lower(), []).append(target)
            for spelling in index:
                for gram in _grams(spelling):
                    self._grams.setdefault(gram, []).append(spelling)
            self._spellings = index
        return self._spellings

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
