"""YAML that remembers where every value came from, so errors can name file:line:column.

Every YAML file the CLI reads (procedures, inventories, scenarios) comes through here, and the
parser is bounded: a hostile file (a billion-laughs of aliases, 600 levels of nesting, a 5,000-digit
integer, `.inf`, a 50 MB file) is refused with a located error, never a hang or a traceback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.errors import SourceError, UsageError

Path_ = tuple[str | int, ...]

# The limits (docs/cli.md, "Limits"). The shipped procedures are under 20 KiB, 12 levels deep, alias-free.
MAX_YAML_BYTES = 1024 * 1024
"""A YAML file larger than this is refused before it is parsed."""
MAX_DEPTH = 64
"""Nesting of mappings and sequences, counted after aliases are expanded."""
MAX_ALIASES = 100
"""`*alias` references in one document."""
MAX_VALUES = 100_000
"""Values (scalars, mappings, sequences) in the document once every alias is expanded."""
MAX_INT_DIGITS = 19
"""Integers are 64-bit signed, as Redis's own: |n| < 2**63, at most 19 digits."""


@dataclass(frozen=True)
class Located:
    """Plain data (dicts, lists, scalars) plus the 1-based position of each value and mapping key."""

    data: Any
    file: str
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def position(self, path: Path_) -> tuple[int | None, int | None]:
        """The key's position when `path` names a mapping entry, else the value's, else the nearest parent's."""
        path = tuple(path)
        while True:
            if path in self.keys:
                return self.keys[path]
            if path in self.values:
                return self.values[path]
            if not path:
                return None, None
            path = path[:-1]

    def error(self, path: Path_, message: str) -> SourceError:
        line, column = self.position(path)
        return SourceError(self.file, line, column, format_path(path), message)


def format_path(path: Path_) -> str:
    """('steps', 2, 'redis') -> 'steps[2].redis', the form the validator and docs use."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _mark_of(mark: Any) -> tuple[int | None, int | None]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (None, None)


class _LimitError(Exception):
    """A value the loader refuses: over a limit, or a scalar its tag cannot construct."""

    def __init__(self, mark: Any, message: str, path: Path_ = ()):
        super().__init__(message)
        self.mark = mark
        self.message = message
        self.path = path


class _BoundedLoader(yaml.SafeLoader):
    """The composer with a depth and alias budget: it stops before the Python stack or the expansion blows up."""

    def __init__(self, text: str):
        super().__init__(text)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _LimitError(self.peek_event().start_mark, f"more than {MAX_ALIASES} aliases (*name)")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _LimitError(self.peek_event().start_mark, f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def read_yaml_file(path: Path, name: str | None = None) -> Located:
    """Read and parse a YAML file, refusing an oversized one before parsing it (UsageError, exit 2)."""
    name = name or str(path)
    return load_yaml(decode_utf8(read_bytes_bounded(path, name), name), name)


def read_bytes_bounded(path: Path, name: str | None = None, limit: int = MAX_YAML_BYTES) -> bytes:
    """The bytes of a file of at most `limit` bytes; never reads more than limit + 1 of them."""
    from engine.fsutil import open_regular

    name = name or str(path)
    try:  # a FIFO, a device or a directory is refused at open, never read (a FIFO would block forever)
        with open_regular(path, max_bytes=None, what="the file") as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise UsageError(
            f"cannot read {name}", [SourceError(name, None, None, "", f"cannot read: {exc.strerror}")]
        ) from None
    if len(raw) > limit:
        raise UsageError(
            f"{name} is too large",
            [SourceError(name, None, None, "", f"larger than {limit // 1024} KiB (the limit), not parsed")],
        )
    return raw


def decode_utf8(raw: bytes, name: str) -> str:
    """UTF-8 text, or a UsageError naming the line of the first bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UsageError(
            f"{name} is not UTF-8", [SourceError(name, line, None, "", f"not UTF-8 text (byte {exc.start})")]
        ) from None


def load_yaml(text: str, file: str) -> Located:
    """Parse one YAML document; syntax errors, duplicate keys and exceeded limits become UsageError with a location."""
    if len(text) > MAX_YAML_BYTES:
        raise UsageError(
            "YAML document too large",
            [SourceError(file, None, None, "", f"larger than {MAX_YAML_BYTES // 1024} KiB (the limit)")],
        )
    line: int | None
    column: int | None
    try:
        loader = _BoundedLoader(text)
    except yaml.reader.ReaderError as exc:  # a control character: \x1b, \x00 ...
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        character = chr(exc.character) if isinstance(exc.character, int) else exc.character
        message = f"character {character!r} is not allowed in YAML (no control characters)"
        raise UsageError("invalid YAML", [SourceError(file, line, column, "", message)]) from None
    try:
        root = loader.get_single_node()
    except _LimitError as exc:
        raise UsageError("YAML over a limit", [SourceError(file, *_mark_of(exc.mark), "", exc.message)]) from None
    except RecursionError:
        raise UsageError("YAML over a limit", [SourceError(file, None, None, "", "nested too deeply")]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = exc.problem or str(exc)
        error = SourceError(file, line, column, "", f"YAML syntax error: {problem}")
        raise UsageError("invalid YAML", [error]) from None
    except yaml.YAMLError as exc:
        raise UsageError("invalid YAML", [SourceError(file, None, None, "", f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()
    values: dict[Path_, tuple[int, int]] = {}
    keys: dict[Path_, tuple[int, int]] = {}
    errors: list[SourceError] = []
    constructor = yaml.SafeLoader("")
    budget = {"values": 0}

    def build(node: yaml.Node | None, path: Path_) -> Any:
        if node is None:
            return None
        budget["values"] += 1
        if budget["values"] > MAX_VALUES:
            raise _LimitError(node.start_mark, f"more than {MAX_VALUES} values once aliases are expanded", path)
        if len(path) > MAX_DEPTH:
            raise _LimitError(node.start_mark, f"nested deeper than {MAX_DEPTH} levels once aliases are expanded", path)
        values[path] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = build_scalar(key_node, path)
                if not isinstance(key_node, yaml.ScalarNode) or key is None:
                    errors.append(
                        SourceError(file, *_mark(key_node), format_path(path), "mapping keys must be scalars")
                    )
                    continue
                # a key is a name as written: `on:` is the field "on", not YAML 1.1's boolean true
                key = str(key_node.value) if not isinstance(key, str) else key
                if key in out:
                    errors.append(
                        SourceError(file, *_mark(key_node), format_path((*path, key)), f"duplicate key '{key}'")
                    )
                keys[(*path, key)] = _mark(key_node)
                out[key] = build(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(child, (*path, i)) for i, child in enumerate(node.value)]
        return build_scalar(node, path)

    def build_scalar(node: yaml.Node, path: Path_) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return None
        too_big = f"integer over 64 bits (at most {MAX_INT_DIGITS} digits)"
        if node.tag == "tag:yaml.org,2002:int" and len(node.value) > 4 * MAX_INT_DIGITS:
            raise _LimitError(node.start_mark, f"{too_big}: {len(node.value)} characters", path)
        try:
            value = constructor.construct_object(node, deep=True)
        except (ValueError, OverflowError) as exc:  # a timestamp like 2026-13-45, a malformed !!binary
            raise _LimitError(
                node.start_mark, f"invalid {node.tag.rpartition(':')[2]} {node.value[:40]!r}: {exc}", path
            ) from None
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
            raise _LimitError(node.start_mark, too_big, path)
        if isinstance(value, float) and not math.isfinite(value):
            raise _LimitError(node.start_mark, f"{node.value!r} is not a finite number", path)
        return value

    try:
        data = build(root, ())
    except _LimitError as exc:
        # An alias expands to the anchored node: name the top-level field being expanded, where it is.
        line, column = keys.get(exc.path[:1]) or _mark_of(exc.mark) if "aliases" in exc.message else _mark_of(exc.mark)
        raise UsageError(
            "YAML over a limit", [SourceError(file, line, column, format_path(exc.path), exc.message)]
        ) from None
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise UsageError(
            "invalid YAML",
            [
                SourceError(
                    file, mark.line + 1 if mark else None, mark.column + 1 if mark else None, "", str(exc.problem)
                )
            ],
        ) from None
    if errors:
        raise UsageError("invalid YAML", errors)
    return Located(data=data, file=file, values=values, keys=keys)
