"""Text from outside made safe to show on a terminal: the one place control characters are neutralised.

Key names, values, params, file content, error messages and notes can hold terminal escapes
(`\\x1b[2J`, OSC titles), carriage returns that overwrite a line, C1 controls, and bidi controls
(U+202E) that make text read differently from what it is. Shown on a terminal, each of them is
written as a visible escape instead: `\\x1b`, `\\r`, `\\x85`, `\\u202e`. The transcript keeps the exact
data (JSON escapes it); only what a person reads goes through here. Literal backslashes are left as
they are, so `a\\x1bb` typed by hand and an escaped ESC look alike: both are harmless to show.
"""

from __future__ import annotations

import unicodedata

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_SHOWN_CATEGORIES = frozenset({"Zs"})  # spaces other than U+0020 (NBSP, em space) are harmless


def escape_char(ch: str) -> str:
    """`ch` as a visible escape: \\n \\r \\t by name, else \\xNN, \\uNNNN or \\UNNNNNNNN."""
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _shown_as_is(ch: str, multiline: bool) -> bool:
    if ch.isprintable():
        return True
    if multiline and ch in "\n\t":
        return True
    return unicodedata.category(ch) in _SHOWN_CATEGORIES


def printable(text: object, *, multiline: bool = False) -> str:
    """`text` (str() of anything) with every control, format (bidi, zero-width), separator,
    surrogate, private-use and unassigned character written as a visible escape.

    `multiline` keeps newlines and tabs (for messages of several lines); \\r is always escaped.
    Idempotent: its output is plain printable text.
    """
    value = text if isinstance(text, str) else str(text)
    if value.isprintable():
        return value
    return "".join(ch if _shown_as_is(ch, multiline) else escape_char(ch) for ch in value)
