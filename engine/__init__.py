"""runbook: declarative Redis operations procedures with a confirmation gate and a durable transcript."""

__version__ = "0.1.0"

# The composition root: the step-kind registry is handed to the procedure format (spec/ never imports steps/).
from engine import steps as _steps  # noqa: F401
