"""Read YAML into plain data while remembering where each value came from.

PyYAML silently keeps the last of two equal keys and forgets line numbers once the document
is constructed; a config loader needs both, so we build the data from the parser's events
ourselves. Building from events (never from a node graph) also lets us refuse anchors and
aliases as they appear: an alias is how a 400-byte "billion laughs" file grows to gigabytes;
without them the data grows with the text, never faster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, cast

import yaml

Path = tuple[str | int, ...]

# libyaml parses about ten times faster than pure-Python PyYAML: a 100,000-operator directory
# in seconds rather than half a minute. Wheels ship it; the fallback reads the same YAML.
_Loader: type[yaml.CSafeLoader] | type[yaml.SafeLoader] = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)

_SCAN_CHARS: Final = 1 << 16  # text searched at once for a forbidden character
MAX_DEPTH: Final = 16  # sections inside sections; a config uses 4 (operators[0].aliases[1])
ANCHORS_REFUSED: Final = "YAML anchors and aliases (&a / *a) are not supported; write the value out"
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
_STR_TAG: Final = "tag:yaml.org,2002:str"
_INT_TAG: Final = "tag:yaml.org,2002:int"
_TEXT_TAGS: Final = frozenset({_STR_TAG, "tag:yaml.org,2002:value"})
# PyYAML's patterns of plain scalars, by first character; of those starting with a letter
# (bool, null) none matches more than this many ("false", "FALSE")
_STOCK_RESOLVERS: Final = yaml.resolver.Resolver.yaml_implicit_resolvers
_LONGEST_WORD: Final = 5
_KINDS: Final = {  # what a scalar of a YAML type is called in a problem
    "tag:yaml.org,2002:int": "a whole number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "true or false",
    "tag:yaml.org,2002:timestamp": "a date or time",
}


def format_path(path: Path) -> str:
    """Render a key path the way users read it: ``operators[2].bitrix_id``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if part else '""'
            out += f".{name}" if out else name
    return out or "(top level)"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file, with the key path and line where known."""

    path: Path
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = format_path(self.path)
        if self.line is not None:
            where += f" (line {self.line})"
        # one line per problem, whatever a key or a parser message contains
        return " ".join(f"{where}: {self.message}".split())


@dataclass
class YamlDocument:
    """Plain data (dicts, lists, scalars) plus the 1-based line of every key path (when
    tracked), the problems found while reading that did not stop it (a duplicate key), and
    where the text values with a ``$`` are."""

    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    # the key paths of the text values that hold a "$" (where a ${VAR} may be): found while
    # reading, so that nobody walks a hundred thousand values to look for them
    dollars: list[Path] = field(default_factory=list)

    def line_of(self, path: Path) -> int | None:
        """The line of ``path`` or of its nearest ancestor that has one (not the whole file)."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


class _Refused(Exception):
    """Stops reading at something this reader will not build: no data, one problem."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def _line(event: yaml.Event) -> int | None:
    return event.start_mark.line + 1 if event.start_mark is not None else None


def _mark(mark: Any) -> yaml.Mark | None:
    """libyaml's marks carry the same line and column as PyYAML's, for a constructor's error."""
    return cast("yaml.Mark | None", mark)


class _Builder:
    """Plain data from parser events, one node at a time, with the line of every key path.

    A 100,000-operator directory is about a million events, so the common ones (a plain or
    quoted scalar, a key) take the shortest way through; anything else takes the general one.
    """

    def __init__(self, loader: yaml.CSafeLoader | yaml.SafeLoader, track_lines: bool) -> None:
        self.loader = loader
        self.track_lines = track_lines
        self.doc = YamlDocument(data=None)
        self._get: Callable[[], Any] = loader.get_event  # never None before the stream ends
        self._resolve: Callable[..., Any] = loader.resolve  # the implicit tag of a plain scalar
        # PyYAML's safe constructors of scalars, called directly: construct_object() would
        # also keep every node it saw, for aliases, which are refused here anyway
        self._constructors: dict[Any, Any] = type(loader).yaml_constructors
        self._plain_tags: dict[str, str] = {}
        # with PyYAML's own patterns (nobody added any), what they would say of most plain
        # scalars is known at a glance: see scalar()
        stock = (
            type(loader).yaml_implicit_resolvers is _STOCK_RESOLVERS
            and not type(loader).yaml_path_resolvers
        )
        self._typed_starts = frozenset(_STOCK_RESOLVERS) if stock else None

    def _next(self) -> yaml.Event:
        event = self.loader.get_event()
        assert event is not None, "the parser ends the stream before events run out"
        return event

    def _peek(self) -> yaml.Event:
        event = self.loader.peek_event()
        assert event is not None, "the parser ends the stream before events run out"
        return event

    def document(self) -> Any:
        """The one document of the stream (None for an empty stream)."""
        self._next()  # StreamStartEvent
        if self.loader.check_event(yaml.StreamEndEvent):
            return None
        self._next()  # DocumentStartEvent
        data = self.node(self._next(), (), 0, keep=True)
        self._next()  # DocumentEndEvent
        if not self.loader.check_event(yaml.StreamEndEvent):
            message = "not valid YAML: one document only (a second one starts here)"
            raise _Refused(Problem((), message, _line(self._peek())))
        return data

    def node(self, event: yaml.Event, path: Path, depth: int, *, keep: bool) -> Any:
        """The node ``event`` (just read) starts, as data; ``keep`` False for keys and for
        values that are dropped."""
        if type(event) is yaml.ScalarEvent and event.anchor is None:  # most events: first
            if keep and self.track_lines:
                line = _line(event)
                if line is not None:
                    self.doc.lines.setdefault(path, line)
            value = self.scalar(event, path)
            if keep and type(value) is str and "$" in value:
                self.doc.dollars.append(path)
            return value
        line = _line(event)
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(Problem(path, ANCHORS_REFUSED, line))
        if keep and self.track_lines and line is not None:
            self.doc.lines.setdefault(path, line)
        if depth >= MAX_DEPTH:
            # bounded here, so nothing that later walks the data can run out of stack
            raise _Refused(Problem(path, f"nested too deeply (more than {MAX_DEPTH} levels)", line))
        if isinstance(event, yaml.SequenceStartEvent):
            items: list[Any] = []
            while type(item := self._get()) is not yaml.SequenceEndEvent:
                items.append(self.node(item, (*path, len(items)), depth + 1, keep=keep))
            return items
        return self.mapping(path, depth, keep=keep)

    def mapping(self, path: Path, depth: int, *, keep: bool) -> dict[str, Any]:
        """The rest of a mapping whose start event was just read."""
        result: dict[str, Any] = {}
        while type(event := self._get()) is not yaml.MappingEndEvent:
            key, problem = self.key(event, path, depth)
            if problem is None and key in result:
                message = f"key '{key}' appears twice in the same section"
                problem = Problem((*path, key), message, _line(event))
            if problem is not None:
                self.doc.problems.append(problem)
                self.node(self._next(), path, depth + 1, keep=False)  # the value: dropped
                continue
            result[key] = self.node(self._get(), (*path, key), depth + 1, keep=keep)
            if keep and self.track_lines:
                line = _line(event)
                if line is not None:
                    self.doc.lines[(*path, key)] = line
        return result

    def key(self, event: yaml.Event, path: Path, depth: int) -> tuple[str, Problem | None]:
        """The key ``event`` (just read) starts, as text (``1`` and ``true`` too), or why it
        cannot be one."""
        # YAML 1.1's merge key <<, of no use without aliases
        if (
            type(event) is yaml.ScalarEvent
            and event.value == "<<"
            and self._tag(event) == _MERGE_TAG
        ):
            message = "merge keys (<<) are not supported; write the keys out"
            return "", Problem(path, message, _line(event))
        key = self.node(event, path, depth + 1, keep=False)
        if isinstance(key, str):
            return key, None
        if isinstance(key, int | float | bool) or key is None:
            return str(key), None
        return "", Problem(path, "keys must be plain words", _line(event))

    def _tag(self, event: yaml.ScalarEvent) -> str:
        tag = event.tag
        if tag is not None and tag != "!":
            return str(tag)
        if not event.implicit[0]:
            return _STR_TAG  # quoted, or tagged "!": text
        # plain: by PyYAML's patterns, remembered, as keys and small values repeat a lot
        tag = self._plain_tags.get(event.value)
        if tag is None:
            tag = str(self._resolve(yaml.ScalarNode, event.value, event.implicit))
            if len(self._plain_tags) < 4096:
                self._plain_tags[event.value] = tag
        return tag

    def scalar(self, event: yaml.ScalarEvent, path: Path) -> Any:
        """A scalar as PyYAML's safe constructors make it (int, float, bool, None, date...)."""
        value: str = event.value
        tag = None
        if event.tag is None:
            if not event.implicit[0]:
                return value  # quoted: text, whatever it says (and the common case: fast)
            typed = self._typed_starts
            if typed is not None and value:
                # PyYAML picks its patterns by the first character: none starts with "K"
                if value[0] not in typed:
                    return value
                # those that start with a letter say true/false, yes/no, on/off or null
                if len(value) > _LONGEST_WORD and value[0].isalpha():
                    return value
                # 100042: the int pattern's, and no other's (a float has a ".")
                if value.isdecimal() and value.isascii() and value[0] != "0":
                    tag = _INT_TAG
        if tag is None:
            tag = self._tag(event)
        if tag in _TEXT_TAGS:  # the "=" key of YAML 1.1 too: text, as PyYAML's merge has it
            return value
        try:
            if tag == _INT_TAG and value.isdecimal() and value.isascii() and value[0] != "0":
                return int(value)  # what construct_yaml_int makes of it, only sooner
            node = yaml.ScalarNode(tag, value, _mark(event.start_mark), _mark(event.end_mark))
            construct = self._constructors.get(tag)
            if construct is None:  # an unknown tag: PyYAML says so, as a YAMLError
                return self.loader.construct_object(node)
            return construct(self.loader, node)
        except (ValueError, TypeError, LookupError, AttributeError, ArithmeticError):
            # e.g. 2026-13-45 read as a date, a 5,000-digit number, !!bool maybe; the value
            # itself is never echoed: it may be a secret with a typo
            kind = _KINDS.get(tag, f"!!{tag.rsplit(':', 1)[-1]}")
            message = f"cannot be read as {kind}; put it in quotes if it is text"
            raise _Refused(Problem(path, message, _line(event))) from None


def _unprintable(text: str) -> Problem | None:
    """The first character YAML forbids (control characters, say), with its line."""
    # a slice at a time: one search of a 10 MB file would hold the GIL for tens of ms
    pattern, found = yaml.reader.Reader.NON_PRINTABLE, None
    for start in range(0, len(text), _SCAN_CHARS):
        found = pattern.search(text, start, start + _SCAN_CHARS)  # one character: no seams
        if found is not None:
            break
    if found is None:
        return None
    line = text.count("\n", 0, found.start()) + 1
    code = ord(found.group())
    message = (
        f"not valid YAML: unacceptable character #x{code:04x}: special characters are not allowed"
    )
    return Problem((), message, line)


def parse_yaml(text: str, *, track_lines: bool = True) -> YamlDocument:
    """Parse one YAML document; syntax errors, anchors and aliases become :class:`Problem` s.

    ``track_lines`` False skips the line map (a large included file whose lines go unused).
    """
    unprintable = _unprintable(text)
    if unprintable is not None:
        return YamlDocument(data=None, problems=[unprintable])
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:
        return YamlDocument(data=None, problems=[Problem((), f"not valid YAML: {exc}")])
    builder = _Builder(loader, track_lines)
    try:
        builder.doc.data = builder.document()
        return builder.doc
    except _Refused as refused:
        return YamlDocument(data=None, problems=[refused.problem])
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = exc.problem or exc.context or "not valid YAML"
        return YamlDocument(data=None, problems=[Problem((), f"not valid YAML: {reason}", line)])
    except yaml.YAMLError as exc:
        return YamlDocument(data=None, problems=[Problem((), f"not valid YAML: {exc}")])
    finally:
        loader.dispose()
