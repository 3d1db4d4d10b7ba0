"""Where the shipped procedures and schemas are: inside the wheel, or at the top of a checkout."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


@cache
def _data_dir(name: str) -> Path:
    bundled = _PACKAGE / "_data" / name  # a wheel install (see force-include in pyproject.toml)
    if bundled.is_dir():
        return bundled
    return _PACKAGE.parent / name  # an editable install or a plain checkout


def procedures_dir() -> Path:
    return _data_dir("procedures")


def schemas_dir() -> Path:
    return _data_dir("schemas")


def schema_path(name: str) -> Path:
    return schemas_dir() / name
