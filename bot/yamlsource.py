"""Read YAML into plain data while remembering where each value came from.

PyYAML silently keeps the last of two equal keys and forgets line numbers once the document
is constructed; a config loader needs both, so we construct from the node graph ourselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]


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
    """Plain data (dicts, lists, scalars) plus the 1-based line of every key path."""

    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def line_of(self, path: Path) -> int | None:
        """The line of ``path`` or of its nearest ancestor that has one (not the whole file)."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


class _Builder:
    def __init__(self, loader: yaml.SafeLoader) -> None:
        self.loader = loader
        self.doc = YamlDocument(data=None)

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.doc.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            self.loader.flatten_mapping(node)  # resolves YAML merge keys (<<)
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.loader.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | float | bool) and key is not None:
                    self.doc.problems.append(
                        Problem(path, "keys must be plain words", key_node.start_mark.line + 1)
                    )
                    continue
                key = str(key) if not isinstance(key, str) else key
                if key in result:
                    self.doc.problems.append(
                        Problem(
                            (*path, key),
                            f"key '{key}' appears twice in the same section",
                            key_node.start_mark.line + 1,
                        )
                    )
                    continue
                result[key] = self.build(value_node, (*path, key))
                self.doc.lines[(*path, key)] = key_node.start_mark.line + 1
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.loader.construct_object(node, deep=True)


def parse_yaml(text: str) -> YamlDocument:
    """Parse one YAML document; syntax errors become a single :class:`Problem`."""
    try:
        loader = yaml.SafeLoader(text)  # refuses control characters right here
    except yaml.YAMLError as exc:
        return YamlDocument(data=None, problems=[Problem((), f"not valid YAML: {exc}")])
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDocument(data=None)
        builder = _Builder(loader)
        builder.doc.data = builder.build(node, ())
        return builder.doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = exc.problem or exc.context or "not valid YAML"
        return YamlDocument(data=None, problems=[Problem((), f"not valid YAML: {reason}", line)])
    except yaml.YAMLError as exc:
        return YamlDocument(data=None, problems=[Problem((), f"not valid YAML: {exc}")])
    except RecursionError:
        # an alias that contains itself, or thousands of nested brackets
        problem = Problem((), "nested too deeply, or an &anchor refers to itself")
        return YamlDocument(data=None, problems=[problem])
    finally:
        loader.dispose()


def walk_strings(data: Any, path: Path = ()) -> Iterator[tuple[Path, str]]:
    """Every string value in ``data`` with its key path."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from walk_strings(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from walk_strings(value, (*path, i))
    elif isinstance(data, str):
        yield path, data
