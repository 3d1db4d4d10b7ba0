"""YAML that remembers where every value came from, so errors can name file:line:column."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from engine.errors import SourceError, UsageError

Path_ = tuple[str | int, ...]


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


def load_yaml(text: str, file: str) -> Located:
    """Parse one YAML document; syntax errors and duplicate keys become UsageError with a location."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = exc.problem or str(exc)
        raise UsageError("invalid YAML", [SourceError(file, line, col, "", f"YAML syntax error: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise UsageError("invalid YAML", [SourceError(file, None, None, "", f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()
    values: dict[Path_, tuple[int, int]] = {}
    keys: dict[Path_, tuple[int, int]] = {}
    errors: list[SourceError] = []
    constructor = yaml.SafeLoader("")

    def build(node: yaml.Node | None, path: Path_) -> Any:
        if node is None:
            return None
        values[path] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = build_scalar(key_node)
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
        return build_scalar(node)

    def build_scalar(node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return constructor.construct_object(node, deep=True)
        return None

    try:
        data = build(root, ())
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
