"""runbook: declarative Redis operations procedures with a confirmation gate and a durable transcript."""

__version__ = "0.1.0"
