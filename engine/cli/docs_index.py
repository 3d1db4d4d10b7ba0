"""docs/procedures.md, the index of shipped procedures, generated from the procedure files themselves.

One table row per procedure: its id, what it is for (title and runbook section), its params
(name:type=default) and its effects (how many steps read, write, destroy, or leave it to the server to
say). Built from `Catalog` and `engine.cli.show.describe`, the same data `runbook show` prints, so the index
cannot drift from the procedures; a test fails when the file on disk is out of date.

    python -m engine.cli.docs_index            # rewrite docs/procedures.md
    python -m engine.cli.docs_index --check    # exit 1 when it is out of date
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

DEFAULT_OUTPUT = Path(__file__).resolve().parents[2] / "docs" / "procedures.md"
REGENERATE = "python -m engine.cli.docs_index"
_EFFECT_ORDER = ("destructive", "write", "read", "decided at run time")


def _cell(text: Any) -> str:
    """Markdown table cell text: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _param(p: dict[str, Any]) -> str:
    text = f"{p['name']}:{p['type']}"
    if p["default"] is not None:
        default = p["default"]
        if isinstance(default, bool):
            default = "true" if default else "false"
        text += f"={default}" if str(default) != "" else '=""'
    elif p["required"]:
        text += " (required)"
    if p["secret"]:
        text += " (secret)"
    return f"`{_cell(text)}`"


def _effects(data: dict[str, Any]) -> str:
    counts = Counter(s["effect"] for s in data["steps"])
    parts = [f"{counts[e]} {e}" for e in _EFFECT_ORDER if counts[e]]
    strongest = next((e for e in _EFFECT_ORDER if counts[e] and e != "read"), None)
    head = "read-only" if strongest is None else f"**{strongest}**"
    calls = sorted({callee for s in data["steps"] for callee in s.get("calls", [])})
    tail = f"; calls {', '.join(f'`{c}`' for c in calls)}" if calls else ""
    return f"{head}: {', '.join(parts)}{tail}"


def rows() -> list[dict[str, Any]]:
    """describe() of every shipped procedure, by id. A procedure that does not validate raises UsageError."""
    from engine.cli.show import describe
    from engine.spec.loader import Catalog

    catalog = Catalog()
    return [describe(catalog.load(pid), {}, load=catalog.load) for pid in sorted(catalog.entries())]


def render(described: list[dict[str, Any]]) -> str:
    lines = [
        "# Procedures",
        "",
        f"Generated from `procedures/**/*.yaml` by `{REGENERATE}`: do not edit by hand. "
        "`runbook show <id>` prints a procedure's steps with their effects; `runbook list` lists them.",
        "",
        "Effects count the steps by what they can do: *read*, *write* (asks y/N), *destructive* (asks for "
        "the target's name), *decided at run time* (the effect depends on a rendered value: a templated Redis "
        "command name or argument that decides it, a templated replace; decided once the step is rendered).",
        "",
        "| id | for | params | effects |",
        "|---|---|---|---|",
    ]
    for d in described:
        purpose = f"{d['title']} ({d['section']})"
        params = ", ".join(_param(p) for p in d["params"]) or "none"
        lines.append(f"| `{d['id']}` | {_cell(purpose)} | {params} | {_effects(d)} |")
    return "\n".join(lines) + "\n"


def generate() -> str:
    return render(rows())


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m engine.cli.docs_index", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is out of date, change nothing")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="default: docs/procedures.md")
    args = parser.parse_args(argv)
    from engine.errors import RunbookError

    try:
        described = rows()
    except RunbookError as exc:
        print(f"docs_index: {exc}", file=sys.stderr)
        return 2
    text = render(described)
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
        if current != text:
            print(f"{args.output} is out of date: run `{REGENERATE}`", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} ({len(described)} procedures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
