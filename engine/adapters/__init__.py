"""The thin shell of I/O: Redis, SSH and HTTP connections, each enforcing what a run may change."""
