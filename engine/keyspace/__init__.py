"""Keyspace-wide analysis and pattern operations, streamed: SCAN pages in, figures out.

Layout, so a server-side fast path can sit beside the client-side one:

- `aggregate`: pure accumulators (TTL audit, memory report, tenant listing) fed one key at a time,
  plus the pure parsing of pipelined replies; nothing here does I/O.
- `patterns`: pure rules on SCAN MATCH globs (the literal prefix a pattern delete must have).
- `pages`: the client-side path: `scan_pages(adapter, match, count)` yields SCAN pages and the
  per-page check functions send one pipeline per page.
- `operations`: the five operations, each `op(adapter, pages, ...)`: they consume pages (any
  iterable of key lists) and feed the accumulators, so memory stays bounded by one page plus the
  small aggregates, whatever the size of the keyspace.
- `server_side`: the two analyses inside Redis, in short read-only Lua batches; `pacing` sizes and
  paces them, and chooses the path.
- `small_pages`: the two analyses beside production traffic on the server's own host: each
  `SCAN COUNT 10` sent with the previous page's checks in one pipeline, calls about as short as
  `redis-cli --scan`'s and as many; `host_cpu` says whether the machine has the core their client needs.
- `read_from`: which node an analysis reads (a replica in sync spares the primary's clients).

Tenants: a key `tenant:<t>:<rest>` belongs to tenant `<t>`; every other key (outside the namespace,
or `tenant:<t>` with nothing after it) is counted under `(none)` (`NO_TENANT`).
"""

from engine.keyspace.aggregate import NO_TENANT, tenant_of

__all__ = ["NO_TENANT", "tenant_of"]
