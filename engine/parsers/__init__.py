"""Pure parsers: what Redis and hosts answer (MONITOR, CLIENT LIST, SLOWLOG, INFO, config values, ...) -> data.

Nothing in this package does I/O; step kinds fetch, these modules turn what was fetched into clean data.
"""
