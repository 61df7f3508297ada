"""Directory sync: active employees and open lines from Bitrix24 into ``directory.generated.yaml``.

``python -m bot directory sync`` reads every active employee (``user.get``) and every active
open line (``imopenlines.config.list.get``), gives each a key derived from its name
(transliterated to ASCII: "Анна Смирнова" -> ``anna.smirnova``) and writes the result next to
the config, in the config's own ``operators:`` / ``queues:`` schema. Hand-written aliases and
Telegram usernames stay in ``config.yaml``; this file is overwritten by every sync.

Paging: :meth:`BitrixClient.call` returns only ``result``, while paging needs the answer's
``next``. Each page is therefore asked for as the single command of a ``batch``, whose answer
carries ``result_next`` / ``result_total`` per command (:func:`call_page`).

A key, once given, stays with its holder across syncs as long as their name still gives it,
so that ``@anna.smirnova-2`` does not silently become someone else when a namesake leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

from bot.bitrix24.client import BitrixClient
from bot.bitrix24.codes import BAD_RESPONSE
from bot.bitrix24.errors import BitrixError, Retry
from bot.config import ConfigError, parse_config
from bot.spelling import CYRILLIC, LATIN, fold

__all__ = [
    "GENERATED_NAME",
    "SyncError",
    "SyncedDirectory",
    "SyncedEntry",
    "call_page",
    "diff",
    "fetch_directory",
    "generated_path",
    "php_query",
    "read_generated",
    "render_yaml",
    "sync",
    "transliterate_key",
]

GENERATED_NAME: Final = "directory.generated.yaml"
USER_GET: Final = "user.get"
EMPLOYEE: Final = "employee"  # USER_TYPE of staff, as opposed to extranet users
LINES_GET: Final = "imopenlines.config.list.get"
LINES_LIMIT: Final = 200  # imopenlines.config.list.get gives at most 200 lines a page
KEY_MAX: Final = 64  # the config's Key pattern: a letter, then up to 63 of [A-Za-z0-9_.-]
NAME_MAX: Final = 200  # the config's Name: at most 200 characters
_MAX_PAGES: Final = 10_000  # a portal that never stops paging is a broken one
_RETRY_DELAYS_S: tuple[float, ...] = (0.5, 2.0)  # repeats of a read whose outcome is unknown
_SCOPES: Final[Mapping[str, str]] = {USER_GET: "user", LINES_GET: "imopenlines"}
_PAGE: Final = "p"  # the command's name inside the batch

# what a YAML file may not hold as is (besides control characters and surrogates)
_UNSAFE: Final = frozenset("\x85\u2028\u2029\ufffe\uffff")
_SEPARATORS: Final = "._-"

_APOSTROPHES: Final = "'`´ʼ’‘"  # dropped inside a word: "O'Neil" -> "oneil"


@dataclass(frozen=True)
class SyncedEntry:
    """One operator or queue as the generated file lists it."""

    key: str
    bitrix_id: int
    name: str


@dataclass(frozen=True)
class SyncedDirectory:
    """Operators and queues, each sorted by Bitrix24 ID."""

    operators: tuple[SyncedEntry, ...]
    queues: tuple[SyncedEntry, ...]


class SyncError(Exception):
    """A sync that cannot go on; the message is one line for the user."""


def generated_path(config_path: Path) -> Path:
    """Where the generated directory lives: next to the config file."""
    return config_path.parent / GENERATED_NAME


# ---- keys ---------------------------------------------------------------------------------


def _ascii(char: str) -> str:
    mapped = CYRILLIC.get(char)
    if mapped is None:
        mapped = LATIN.get(char)
    if mapped is not None:
        return mapped
    if char.isascii():
        return char
    # "é" -> "e", "ﬁ" -> "fi", "①" -> "1"; whatever has no ASCII form becomes a separator
    decomposed = unicodedata.normalize("NFKD", char)
    kept = "".join(c for c in decomposed if c.isascii())
    return kept or " "


def _separator(run: str) -> str:
    """One run of non-alphanumerics between two words: "-" or "_" when that is all it holds
    (spaces aside), a dot otherwise."""
    marks = set(run.replace(" ", ""))
    if marks == {"-"}:
        return "-"
    if marks == {"_"}:
        return "_"
    return "."


def transliterate_key(name: str) -> str:
    """A name as key material: lower-case ASCII words joined by ``.`` (``-``/``_`` kept).

    "Анна Смирнова" -> ``anna.smirnova``; "José Núñez" -> ``jose.nunez``. The result holds
    only ``[a-z0-9_.-]``, at most 64 characters, no separator at either end; it is empty when
    the name has nothing usable, and may start with a digit ("1С Линия" -> ``1s.liniya``):
    the caller turns those into keys.
    """
    text = unicodedata.normalize("NFC", name).lower()
    text = "".join(c for c in text if c not in _APOSTROPHES)
    text = "".join(_ascii(c) for c in text).lower()
    parts = re.split(r"([a-z0-9]+)", text)
    # parts alternate: separator run, word, separator run, word, ..., separator run
    out = ""
    for i in range(1, len(parts), 2):
        if out:
            out += _separator(parts[i - 1])
        out += parts[i]
    return out[:KEY_MAX].rstrip(_SEPARATORS)


def _base_key(prefix: str, bitrix_id: int, name: str) -> str:
    """The key a name gives before duplicates are told apart: ``user15`` if none."""
    slug = transliterate_key(name)
    if not slug:
        return f"{prefix}{bitrix_id}"
    if not slug[0].isalpha():
        slug = f"{prefix}.{slug}"[:KEY_MAX].rstrip(_SEPARATORS)
    return slug


def _numbered(base: str, number: int) -> str:
    """``base`` for the first holder, ``base-2``, ``base-3``... after, within 64 characters."""
    if number <= 1:
        return base
    suffix = f"-{number}"
    return base[: KEY_MAX - len(suffix)].rstrip(_SEPARATORS) + suffix


def _derives_from(key: str, base: str) -> bool:
    if key == base:
        return True
    match = re.fullmatch(r".+-([0-9]+)", key)
    return match is not None and _numbered(base, int(match.group(1))) == key


Ident = tuple[str, int]  # ("operator" | "queue", bitrix_id)


def _assign_keys(
    entries: Iterable[tuple[Ident, str]], previous: Mapping[Ident, str]
) -> dict[Ident, str]:
    """Keys unique across operators and queues (in any case or script, as the config check
    sees them), in the order given.

    A key the previous file gave an entry is kept while the entry's name still gives it.
    """
    bases = {
        ident: _base_key("user" if ident[0] == "operator" else "line", ident[1], name)
        for ident, name in entries
    }
    keys: dict[Ident, str] = {}
    taken: set[str] = set()  # folded: "sergey.ivanov" and "sergei.ivanov" are one name
    for ident, base in bases.items():
        old = previous.get(ident)
        if old is not None and fold(old) not in taken and _derives_from(old, base):
            keys[ident] = old
            taken.add(fold(old))
    for ident, base in bases.items():
        if ident in keys:
            continue
        number = 1
        while fold(_numbered(base, number)) in taken:
            number += 1
        keys[ident] = _numbered(base, number)
        taken.add(fold(keys[ident]))
    return keys


@dataclass(frozen=True)
class _Raw:
    """What the portal gave: (bitrix_id, name) pairs; a name may be empty."""

    operators: tuple[tuple[int, str], ...]
    queues: tuple[tuple[int, str], ...]


def _build(raw: _Raw, previous: SyncedDirectory | None) -> SyncedDirectory:
    old: dict[Ident, str] = {}
    if previous is not None:
        old.update((("operator", e.bitrix_id), e.key) for e in previous.operators)
        old.update((("queue", e.bitrix_id), e.key) for e in previous.queues)
    entries = [(("operator", i), name) for i, name in raw.operators]
    entries += [(("queue", i), name) for i, name in raw.queues]
    keys = _assign_keys(entries, old)
    return SyncedDirectory(
        operators=tuple(
            SyncedEntry(keys[("operator", i)], i, name or f"user {i}") for i, name in raw.operators
        ),
        queues=tuple(
            SyncedEntry(keys[("queue", i)], i, name or f"line {i}") for i, name in raw.queues
        ),
    )


# ---- talking to the portal ------------------------------------------------------------------


def php_query(params: Mapping[str, Any]) -> str:
    """``params`` as a PHP-style query string: ``FILTER[ACTIVE]=true&start=50``.

    Nested mappings and lists become ``A[b]`` keys; ``True`` is ``true`` and ``False`` is
    ``0`` (PHP reads the text "false" as true).
    """
    pairs: list[tuple[str, str]] = []

    def add(key: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for name, item in value.items():
                add(f"{key}[{name}]", item)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                add(f"{key}[{index}]", item)
        elif isinstance(value, bool):
            pairs.append((key, "true" if value else "0"))
        elif value is None:
            pairs.append((key, ""))
        else:
            pairs.append((key, str(value)))

    for name, value in params.items():
        add(str(name), value)
    return urlencode(pairs, safe="[]")


def _as_dict(part: Any) -> dict[str, Any]:
    # empty parts of a batch answer come as JSON arrays, not objects
    return part if isinstance(part, dict) else {}


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


async def _read_batch(client: BitrixClient, method: str, request: dict[str, Any]) -> Any:
    """``client.call("batch", request)``, asked again after an unknown outcome (the client
    repeats a batch only when it surely did not run); errors name ``method``."""
    delays = iter(_RETRY_DELAYS_S)
    while True:
        try:
            return await client.call("batch", request)
        except BitrixError as err:
            delay = next(delays, None) if err.retry is Retry.UNKNOWN else None
            if delay is None:
                raise BitrixError(
                    err.code, err.description, err.status, method, sent=err.sent
                ) from None
        await asyncio.sleep(delay)


async def call_page(
    client: BitrixClient, method: str, params: dict[str, Any]
) -> tuple[Any, int | None]:
    """One page of a list method: its ``result`` and ``next`` (None on the last page).

    The page is asked for as the only command of a ``batch`` (whose answer keeps ``next``,
    which :meth:`BitrixClient.call` drops). Errors are :class:`BitrixError` naming ``method``.
    The batch holds only a read, so an unknown outcome (timeout, proxy page) is asked again.
    Call it with no other call of the same client in flight: the client's own batching would
    otherwise put this batch inside another, which Bitrix24 refuses.
    """
    request = {"halt": 0, "cmd": {_PAGE: f"{method}?{php_query(params)}"}}
    answer = _as_dict(await _read_batch(client, method, request))
    error = _as_dict(answer.get("result_error")).get(_PAGE)
    if error is not None:
        error = _as_dict(error)
        raise BitrixError(
            str(error.get("error") or "ERROR"),
            str(error.get("error_description") or ""),
            None,
            method,
        )
    results = _as_dict(answer.get("result"))
    if _PAGE not in results:
        raise BitrixError(BAD_RESPONSE, "the batch answer holds no result", 200, method)
    following = _positive_int(_as_dict(answer.get("result_next")).get(_PAGE))
    return results[_PAGE], following


def _clean_name(*parts: Any) -> str:
    """Words joined by single spaces, control characters dropped, at most 200 characters."""
    words = " ".join(str(p) for p in parts if isinstance(p, str | int) and str(p).strip())
    words = "".join(
        c for c in words if c not in _UNSAFE and unicodedata.category(c) not in ("Cc", "Cs")
    )
    return " ".join(words.split())[:NAME_MAX].strip()


def _is_active(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return value is not False
    return str(value).strip().upper() in ("Y", "1", "TRUE")


def _list_page(page: Any, method: str) -> list[dict[str, Any]]:
    if not isinstance(page, list):
        raise BitrixError(BAD_RESPONSE, "the answer is not a list", 200, method)
    return [item for item in page if isinstance(item, dict)]


async def _fetch_users(client: BitrixClient) -> list[tuple[int, str]]:
    found: dict[int, str] = {}
    start = 0
    for _ in range(_MAX_PAGES):
        # extranet users are left out: the portal silently drops transfers to them
        params = {
            "sort": "ID",
            "order": "ASC",
            "FILTER": {"ACTIVE": True, "USER_TYPE": EMPLOYEE},
            "start": start,
        }
        page, following = await call_page(client, USER_GET, params)
        for user in _list_page(page, USER_GET):
            user_id = _positive_int(user.get("ID"))
            kind = str(user.get("USER_TYPE") or EMPLOYEE)  # a portal that ignores the filter
            if user_id is not None and _is_active(user.get("ACTIVE")) and kind == EMPLOYEE:
                found.setdefault(user_id, _clean_name(user.get("NAME"), user.get("LAST_NAME")))
        if following is None:
            return sorted(found.items())
        if following <= start:
            raise BitrixError(BAD_RESPONSE, f"next page {following} after {start}", 200, USER_GET)
        start = following
    raise BitrixError(BAD_RESPONSE, "the pages never end", 200, USER_GET)


async def _fetch_lines(client: BitrixClient) -> list[tuple[int, str]]:
    found: dict[int, str] = {}
    seen: set[int] = set()
    offset = 0
    for _ in range(_MAX_PAGES):
        params = {"PARAMS": {"limit": LINES_LIMIT, "offset": offset}, "OPTIONS": {"QUEUE": "Y"}}
        page, _following = await call_page(client, LINES_GET, params)
        lines = _list_page(page, LINES_GET)
        new = 0
        for line in lines:
            line_id = _positive_int(line.get("ID"))
            if line_id is None or line_id in seen:
                continue
            seen.add(line_id)
            new += 1
            if _is_active(line.get("ACTIVE")):  # "Y"/"N"; a line without the field counts
                found[line_id] = _clean_name(line.get("LINE_NAME"))
        # a short page is the last; a page of nothing new means offset is not honoured
        if len(lines) < LINES_LIMIT or new == 0:
            return sorted(found.items())
        offset += len(lines)
    raise BitrixError(BAD_RESPONSE, "the pages never end", 200, LINES_GET)


def _sync_error(err: BitrixError) -> SyncError:
    if err.code == "insufficient_scope":
        scope = _SCOPES.get(err.method, err.method or "needed")
        return SyncError(
            f"the webhook lacks the «{scope}» scope: add it in Bitrix24 "
            "(Developer resources > Inbound webhook) and run sync again"
        )
    status = f" (HTTP {err.status})" if err.status is not None else ""
    text = f": {err.description}" if err.description else ""
    return SyncError(" ".join(f"Bitrix24 {err.method} failed: {err.code}{status}{text}".split()))


async def _fetch_raw(client: BitrixClient) -> _Raw:
    try:
        operators = await _fetch_users(client)
        queues = await _fetch_lines(client)
    except BitrixError as err:
        raise _sync_error(err) from None
    return _Raw(tuple(operators), tuple(queues))


async def fetch_directory(client: BitrixClient) -> SyncedDirectory:
    """Every active employee and active open line, with fresh keys; :class:`SyncError` if not."""
    return _build(await _fetch_raw(client), None)


# ---- the file -------------------------------------------------------------------------------


def _quoted(text: str) -> str:
    """A YAML double-quoted scalar; ``$`` doubled so config interpolation leaves it alone."""
    out = []
    for char in text:
        if char in '\\"':
            out.append("\\" + char)
        elif char == "$":
            out.append("$$")
        elif char in _UNSAFE or unicodedata.category(char) in ("Cc", "Cs"):
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def render_yaml(directory: SyncedDirectory, *, generated_at: datetime) -> str:
    """The generated file: a header comment, then ``operators:`` and ``queues:`` lists."""
    stamp = generated_at.isoformat(timespec="seconds")
    out = [
        f"# Generated by `python -m bot directory sync` at {stamp}, from Bitrix24:",
        f"# {len(directory.operators)} active employees (user.get) and "
        f"{len(directory.queues)} active open lines (imopenlines.config.list.get).",
        "# Do not edit: the next sync overwrites this file. Hand-written aliases, Telegram",
        "# usernames and entries of your own belong in config.yaml.",
    ]
    for section, entries in (("operators", directory.operators), ("queues", directory.queues)):
        if not entries:
            out.append(f"{section}: []")
            continue
        out.append(f"{section}:")
        for entry in entries:
            out.append(f"  - key: {_quoted(entry.key)}")
            out.append(f"    bitrix_id: {entry.bitrix_id}")
            out.append(f"    name: {_quoted(entry.name)}")
    return "\n".join(out) + "\n"


def read_generated(path: Path) -> SyncedDirectory | None:
    """The directory a previous sync wrote; None if the file is absent or not usable."""
    try:
        text = path.read_text(encoding="utf-8")
        config = parse_config(text, {}, source=str(path))
    except (OSError, UnicodeDecodeError, ConfigError):
        return None
    return SyncedDirectory(
        operators=tuple(SyncedEntry(o.key, o.bitrix_id, o.name) for o in config.operators),
        queues=tuple(SyncedEntry(q.key, q.bitrix_id, q.name) for q in config.queues),
    )


def diff(old: SyncedDirectory | None, new: SyncedDirectory) -> list[str]:
    """What changed, one line each, operators first, by ID within each kind.

    ``+ operator anna.smirnova (15) Anna Smirnova``, ``- queue sales (5) Sales``,
    ``~ operator 16: Bob Lee -> Robert Lee (key bob.lee -> robert.lee)``.
    """
    lines: list[str] = []
    for kind, before, after in (
        ("operator", old.operators if old else (), new.operators),
        ("queue", old.queues if old else (), new.queues),
    ):
        was = {e.bitrix_id: e for e in before}
        now = {e.bitrix_id: e for e in after}
        for bitrix_id in sorted(was.keys() | now.keys()):
            a, b = was.get(bitrix_id), now.get(bitrix_id)
            if a is None and b is not None:
                lines.append(f"+ {kind} {b.key} ({bitrix_id}) {b.name}")
            elif b is None and a is not None:
                lines.append(f"- {kind} {a.key} ({bitrix_id}) {a.name}")
            elif a is not None and b is not None and a != b:
                key = f"key {a.key} -> {b.key}"
                if a.name == b.name:
                    lines.append(f"~ {kind} {bitrix_id}: {key}")
                elif a.key == b.key:
                    lines.append(f"~ {kind} {bitrix_id}: {a.name} -> {b.name}")
                else:
                    lines.append(f"~ {kind} {bitrix_id}: {a.name} -> {b.name} ({key})")
    return lines


def _write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder and ``os.replace``: readers see the
    old file or the new one, never half of one."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        mode = 0o644
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise SyncError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError):
            raise SyncError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


async def sync(client: BitrixClient, out_path: Path) -> list[str]:
    """Fetch, compare with the previous file, write the new one; returns the changes.

    An empty list means no changes (the file is then left as it was). Raises
    :class:`SyncError` (one line) when the portal cannot be read or the file cannot be
    written; nothing is written then.
    """
    raw = await _fetch_raw(client)
    if not raw.operators:
        raise SyncError(
            f"Bitrix24 returned no active employees: {out_path.name} was left as it was"
        )
    old = read_generated(out_path)
    new = _build(raw, old)
    changes = diff(old, new)
    if changes or old is None:
        _write_atomically(out_path, render_yaml(new, generated_at=datetime.now(UTC)))
    return changes
