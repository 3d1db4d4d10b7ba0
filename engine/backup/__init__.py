"""Backups without Redis in the loop: the CRC64 Redis uses, RDB files, and the tenant export format.

Everything here is pure or touches only local files and one socket (the replication stream in
`rdb.download`); the step kinds `rdb` and `tenant_data` put it behind the gate and the transcript.
"""
