"""Hostile text, generated as a class: every C0/C1 control, terminal escape sequences, every bidi control.

Shared by the unit and integration tests of what reaches a terminal or a Markdown file.
"""

from __future__ import annotations

import re
import unicodedata

C0 = [chr(c) for c in range(0x00, 0x20)]
DEL_AND_C1 = [chr(0x7F)] + [chr(c) for c in range(0x80, 0xA0)]
BIDI = [chr(c) for c in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))]
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u2028", "\u2029"]
SEQUENCES = [
    "\x1b[5m",  # blink
    "\x1b[2J\x1b[H",  # clear the screen, cursor home
    "\x1b[1A\x1b[2K",  # up one line, erase it: rewrite what was shown
    "\x1b]0;pwned\x07",  # OSC: window title
    "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\",  # OSC 8 hyperlink
    "\x1bP+q544e\x1b\\",  # DCS: terminal query
    "\x9b6n",  # 8-bit CSI: report cursor position
    "\x1b[8mhidden\x1b[28m",  # concealed text
    "done\rFAKE OK",  # carriage return overwrites the line
]
EVERY_CONTROL = C0 + DEL_AND_C1 + BIDI + INVISIBLE

BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def hostile_strings(*, argv_safe: bool = False) -> list[str]:
    """One string per control (wrapped in text) plus every sequence, plus all of them in one string.

    `argv_safe` leaves out NUL, which a command-line argument cannot carry.
    """
    controls = [c for c in EVERY_CONTROL if not (argv_safe and c == "\0")]
    singles = [f"a{c}b" for c in controls]
    together = "evil" + "".join(controls) + "".join(SEQUENCES) + "\u202egnp.exe"
    return [*singles, *SEQUENCES, together]


# Our own colours (click.style) and progress line (context.Progress): the only escape sequences and
# carriage returns the engine itself may write.
OUR_SGR = re.compile(r"\x1b\[(?:0|1|2|22|3[0-9]|9[0-7])m")
OUR_PROGRESS = re.compile(r"\r  [^\r\n]*: [\d,]+(?:/[\d,]+)? \([\d,]+/s\) |\r {100}\r")


def raw_controls(text: str, *, pty: bool = False) -> list[str]:
    """The characters in `text` a terminal would obey or hide: controls, bidi and format characters.

    `pty`: the text went through a pty (\\r\\n line ends) and may hold our own colours.
    """
    if pty:
        text = OUR_PROGRESS.sub("", OUR_SGR.sub("", text.replace("\r\n", "\n")))
    return [f"U+{ord(c):04X}" for c in text if c not in "\n\t" and unicodedata.category(c) in BAD_CATEGORIES]
