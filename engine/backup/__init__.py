"""Backups without Redis in the loop: the CRC64 Redis uses, RDB files, and the tenant export format.

Everything here is pure or touches only local files (the replication socket that fetches an RDB is
the Redis adapter's); the step kinds `rdb` and `tenant_data` put it behind the gate and the transcript.
"""
