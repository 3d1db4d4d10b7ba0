"""Secrets never reach a transcript: every known secret value, and every Redis credential argument.

The runner registers each resolved secret (secret params, inventory secrets) with a `Redactor`; the
transcript writer passes every field through `Redactor.data` before it serialises a line. Known
values are replaced wherever they occur (also in their JSON-escaped and URL-encoded spellings), and
`argv` masks the arguments Redis treats as credentials even when their value was never registered
(an operator typing `CONFIG SET requirepass ...` into a procedure).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from urllib.parse import quote

CREDENTIAL = "redis-credential"
"""The name shown for a Redis credential argument whose value the redactor does not know."""

ACL_HASH = "acl-password-hash"
"""The name shown for an ACL password hash: an unsalted SHA-256 is as good as the password to a dictionary."""

# An ACL rule holding a password hash (#<sha256>, !<sha256>), as a token of its own in any text.
_ACL_HASH_RULE = re.compile(r"(?<!\S)([#!])[0-9a-fA-F]{64}(?!\S)")

# An existing placeholder: text inside one is never redacted again, so `text` is idempotent.
_PLACEHOLDER = re.compile(r"\[SECRET:[^\[\]\s]*\]")

# CONFIG SET parameters whose value is a credential.
_CONFIG_SECRETS = frozenset({"requirepass", "masterauth", "tls-key-file-pass", "tls-client-key-file-pass"})
# SENTINEL SET <master> <option> <value> / SENTINEL CONFIG SET <param> <value>.
_SENTINEL_SECRETS = frozenset({"auth-pass", "sentinel-pass"})
# ACL SETUSER rules that carry a password or a password hash.
_ACL_PASSWORD_PREFIXES = (">", "<", "#", "!")


ANYWHERE_LENGTH = 12
"""Secrets at least this long are redacted as substrings; shorter ones only as whole values."""


def _boundary(s: str, at: int) -> bool:
    """True if position `at` (just before or after a match) does not continue a word."""
    if at < 0 or at >= len(s):
        return True
    char = s[at]
    return not (char.isalnum() or char in "_-")


def _as_str(value: object) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    return value if isinstance(value, str) else str(value)


class Redactor:
    """Secret values by name; replaces each occurrence with `[SECRET:name]`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_value: dict[str, str] = {}  # every spelling of a secret -> its name
        self._ordered: tuple[tuple[str, str], ...] = ()  # (value, name), longest value first
        self._primary: dict[str, str] = {}  # the value as registered -> name

    def add(self, name: str, value: object) -> None:
        """Register a secret. None and empty values are ignored; bytes are registered decoded."""
        if value is None:
            return
        spellings: list[str] = []
        if isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
            if not raw:
                return
            try:
                spellings.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                spellings.append(raw.decode("utf-8", errors="replace"))
            spellings.append(repr(raw)[2:-1])  # how it looks when a bytes object is printed
        else:
            spellings.append(value if isinstance(value, str) else str(value))
        primary = spellings[0]
        if not primary:
            return
        for s in list(spellings):
            spellings.append(json.dumps(s, ensure_ascii=False)[1:-1])  # inside a JSON document
            spellings.append(json.dumps(s)[1:-1])
            spellings.append(quote(s, safe=""))  # inside a URL
        with self._lock:
            self._primary.setdefault(primary, name)
            for s in spellings:
                if s:
                    self._by_value.setdefault(s, name)
            self._ordered = tuple(sorted(self._by_value.items(), key=lambda kv: (-len(kv[0]), kv[0])))

    def known_values(self) -> frozenset[str]:
        """The registered secret values (as given to `add`), e.g. to check a report for leaks."""
        with self._lock:
            return frozenset(self._primary)

    def name_of(self, value: str) -> str | None:
        """The name a value was registered under, or None if it is not a known secret."""
        return self._by_value.get(value)

    def __len__(self) -> int:
        return len(self._primary)

    def text(self, s: str) -> str:
        """`s` with every occurrence of a known secret as a value replaced by `[SECRET:name]`.

        A secret of ANYWHERE_LENGTH characters or more is replaced wherever it occurs: such a string
        in the text is the secret. A shorter one only where it stands as a value of its own, bounded
        by the text's ends or by characters that are not part of a word: a password `WRONG` must not
        turn `WRONGPASS invalid username-password pair` into `[SECRET:pw]PASS ...`, which both
        mangles the server's message and tells a reader the password.

        Occurrences are found for every secret independently (so overlapping secrets are both
        covered), overlapping spans are merged and replaced once; a span made of one secret, or
        covered by one secret entirely, is labelled with that secret's name. ACL password hash
        rules (`#<sha256>`) are masked whoever registered them.
        """
        if not isinstance(s, str):
            s = _as_str(s)
        if "#" in s or "!" in s:
            s = _ACL_HASH_RULE.sub(lambda m: f"{m.group(1)}[SECRET:{ACL_HASH}]", s)
        ordered = self._ordered
        if not s or not ordered:
            return s
        spans: list[tuple[int, int, str]] = []
        for value, name in ordered:
            anywhere = len(value) >= ANYWHERE_LENGTH
            start = s.find(value)
            while start != -1:
                end = start + len(value)
                if anywhere or (_boundary(s, start - 1) and _boundary(s, end)):
                    spans.append((start, end, name))
                start = s.find(value, start + 1)
        if not spans:
            return s
        protected = [m.span() for m in _PLACEHOLDER.finditer(s)]
        if protected:
            spans = [sp for sp in spans if not any(a <= sp[0] and sp[1] <= b for a, b in protected)]
        spans.sort(key=lambda sp: (sp[0], -sp[1]))
        out: list[str] = []
        pos = 0
        i = 0
        while i < len(spans):
            start, end, name = spans[i]
            names = [name]
            whole: str | None = name  # the name of a secret covering the whole merged span, if any
            j = i + 1
            while j < len(spans) and spans[j][0] < end:
                if spans[j][1] > end:
                    end = spans[j][1]
                    whole = spans[j][2] if spans[j][0] == start else None
                if spans[j][2] not in names:
                    names.append(spans[j][2])
                j += 1
            out.append(s[pos:start])
            out.append(f"[SECRET:{whole or '+'.join(names)}]")
            pos = end
            i = j
        out.append(s[pos:])
        return "".join(out)

    def data(self, obj: object) -> object:
        """A deep copy of `obj` with every string, dict keys included, passed through `text`."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, (bytes, bytearray, memoryview)):
            return self.text(_as_str(obj))
        if isinstance(obj, dict):
            return {self.data(k) if isinstance(k, (str, bytes)) else k: self.data(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.data(v) for v in obj]
        if isinstance(obj, tuple):
            return tuple(self.data(v) for v in obj)
        if isinstance(obj, (set, frozenset)):
            return [self.data(v) for v in obj]
        return obj

    def argv(self, args: Sequence[object]) -> list[str]:
        """A Redis command's arguments with credentials masked, then known secrets replaced."""
        out = [_as_str(a) for a in args]
        for i in _credential_positions(out):
            out[i] = self._mask(out[i])
        for i in _acl_password_positions(out):
            out[i] = out[i][0] + self._mask(out[i][1:])
        return [self.text(a) for a in out]

    def _mask(self, value: str) -> str:
        if _PLACEHOLDER.fullmatch(value):
            return value
        return f"[SECRET:{self._by_value.get(value) or CREDENTIAL}]"


def _credential_positions(args: list[str]) -> list[int]:
    """Indexes of arguments that are credentials, by the grammar of the command."""
    if not args:
        return []
    n = len(args)
    cmd = args[0].lower()
    sub = args[1].lower() if n > 1 else ""
    found: list[int] = []
    if cmd == "auth":  # AUTH <password> | AUTH <username> <password>
        found.extend(range(2 if n >= 3 else 1, n))
    elif cmd == "hello":  # HELLO [protover [AUTH username password] [SETNAME clientname]]
        i = 2
        while i < n:
            token = args[i].lower()
            if token == "auth":
                found.append(i + 2)
                i += 3
            elif token == "setname":
                i += 2
            else:
                i += 1
    elif cmd == "config" and sub == "set":  # CONFIG SET param value [param value ...]
        found.extend(i + 1 for i in range(2, n - 1, 2) if args[i].lower() in _CONFIG_SECRETS)
    elif cmd == "sentinel" and (sub == "set" or (sub == "config" and n > 2 and args[2].lower() == "set")):
        # SENTINEL SET master option value [...] / SENTINEL CONFIG SET param value [...]
        found.extend(i + 1 for i in range(3, n - 1, 2) if args[i].lower() in _SENTINEL_SECRETS)
    elif cmd == "migrate":  # MIGRATE host port key db timeout [COPY] [REPLACE] [AUTH pw | AUTH2 u pw] [KEYS]
        i = 6
        while i < n:
            token = args[i].lower()
            if token == "keys":
                break
            if token == "auth":
                found.append(i + 1)
                i += 2
            elif token == "auth2":
                found.append(i + 2)
                i += 3
            else:
                i += 1
    return [i for i in found if i < n]


def _acl_password_positions(args: list[str]) -> list[int]:
    """ACL SETUSER user rules...: the rules that set, remove or hash-match a password."""
    if len(args) < 3 or args[0].lower() != "acl" or args[1].lower() != "setuser":
        return []
    return [i for i in range(3, len(args)) if args[i].startswith(_ACL_PASSWORD_PREFIXES) and len(args[i]) > 1]


def acl_reply(reply: object) -> object:
    """An ACL LIST / GETUSER / LOG reply with every password and password hash masked.

    ACL LIST lines (`user default on #<sha256> ~* +@all`) lose their `#`, `!`, `>` and `<` rules'
    values; GETUSER's `passwords` (a dict key, or a name in the raw flat list) lose every entry.
    """
    if isinstance(reply, (bytes, bytearray)):
        return acl_reply(bytes(reply).decode("utf-8", errors="replace"))
    if isinstance(reply, str):
        if reply.startswith("user "):
            return " ".join(_acl_token(token) for token in reply.split(" "))
        return _ACL_HASH_RULE.sub(lambda m: f"{m.group(1)}[SECRET:{ACL_HASH}]", reply)
    if isinstance(reply, dict):
        return {k: (_hashes(v) if _as_str(k) == "passwords" else acl_reply(v)) for k, v in reply.items()}
    if isinstance(reply, (list, tuple)):
        out = [acl_reply(v) for v in reply]
        for i in range(len(out) - 1):
            if out[i] == "passwords" and isinstance(out[i + 1], list):
                out[i + 1] = _hashes(out[i + 1])
        return out
    return reply


def _acl_token(token: str) -> str:
    if len(token) > 1 and token.startswith(_ACL_PASSWORD_PREFIXES):
        return f"{token[0]}[SECRET:{ACL_HASH if token[0] in '#!' else CREDENTIAL}]"
    return token


def _hashes(values: object) -> object:
    if isinstance(values, (list, tuple)):
        return [f"[SECRET:{ACL_HASH}]" for _ in values]
    return f"[SECRET:{ACL_HASH}]" if values else values


# scheme://[userinfo@]rest[?query][#fragment] inside any text (a command line, an error message).
_URL = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^\s/?#@]*@)?([^\s?#;]*)([?#;]\S*)?")


def url_credentials(text: str) -> str:
    """`text` with every URL's password (user:password@) and query or fragment replaced: argv, messages."""

    def scrub(m: re.Match[str]) -> str:
        userinfo = m.group(2) or ""
        if ":" in userinfo or "%3a" in userinfo.lower():
            userinfo = "[SECRET:url-credential]@"
        query = "?[SECRET:url-query]" if m.group(4) else ""
        return f"{m.group(1)}{userinfo}{m.group(3)}{query}"

    return _URL.sub(scrub, text) if "://" in text else text
