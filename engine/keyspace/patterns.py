"""Rules on SCAN MATCH globs, pure: what a pattern is sure to start with, and when it is too broad to delete.

Redis globs: `*` any run, `?` one character, `[...]` a class, `\\x` a literal x. The literal prefix
is everything before the first unescaped `*`, `?` or `[`; SCAN can only match keys starting with it.
"""

from __future__ import annotations

TENANT_NAMESPACE = "tenant:"
_GLOB = frozenset("*?[")


def _split(match: str) -> tuple[str, bool]:
    """(literal prefix, whether an unescaped glob character follows it)."""
    out = []
    i = 0
    while i < len(match):
        char = match[i]
        if char == "\\" and i + 1 < len(match):
            out.append(match[i + 1])
            i += 2
            continue
        if char in _GLOB:
            return "".join(out), True
        out.append(char)
        i += 1
    return "".join(out), False


def literal_prefix(match: str) -> str:
    """The characters every matching key starts with: 'tenant:acme:*' -> 'tenant:acme:'; '*' -> ''."""
    return _split(match)[0]


def is_glob(match: str) -> bool:
    """True when the pattern can match more than the one key it spells."""
    return _split(match)[1]


def broad_pattern_reason(match: str) -> str | None:
    """Why a pattern delete with `match` is too broad, or None when it is scoped.

    Refused: no literal prefix at all ('*', '?x*', '[a-z]*': the whole keyspace is in reach), and a
    prefix that stops inside the tenant namespace before a whole tenant name and its closing colon
    ('tenant:*', 'tenant:old*'): the runbook's `del "tenant:old_tenant:*"` means one tenant, and
    'tenant:old*' would also take 'tenant:older:...'.
    """
    prefix, glob = _split(match)
    if not prefix:
        return f"'{match}' has no literal prefix: it matches keys anywhere in the keyspace"
    if glob and TENANT_NAMESPACE.startswith(prefix):
        return f"'{match}' matches every tenant's keys, not one tenant's"
    if prefix.startswith(TENANT_NAMESPACE):
        rest = prefix[len(TENANT_NAMESPACE) :]
        if ":" not in rest and glob:
            return (
                f"'{match}' does not name a whole tenant (tenant:<name>:...): it would also match "
                f"tenants whose names start with '{rest}'"
            )
    return None
