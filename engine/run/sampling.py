"""`sample:` a read step run every `every`, `count` times or `for` a while: a series instead of one reading.

Ctrl-C (SIGINT) ends the series early and keeps it, and the run goes on; any other signal stops the run.
A reading that fails is kept as an error in the series; a series of nothing but errors fails the step.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.errors import ActionFailed, Interrupted, MutationRefused, RunbookError, UsageError
from engine.run.context import Progress
from engine.spec.model import Step
from engine.transcript.redact import Redactor

MAX_SAMPLES = 100_000  # a series is kept in memory and in the transcript: every 0s for 1h is a typo


@dataclass(frozen=True)
class Sampling:
    """A step's `sample:` with its templates rendered: every `every` seconds, `count` times or for `duration`."""

    every: float
    duration: float | None
    count: int | None

    def check(self, step: Step) -> None:
        """A series too long to keep is a typo in the procedure: refused before the first reading."""
        if self.planned > MAX_SAMPLES:
            raise UsageError(
                f"{step.location}: steps.{step.id}.sample: {self.planned:g} samples (every {self.every:g}s) "
                f"is more than {MAX_SAMPLES:,}: sample less often"
            )

    @property
    def planned(self) -> float:
        return self.count or ((self.duration or 0) / self.every + 1 if self.every > 0 else float("inf"))


@dataclass(frozen=True)
class Sampler:
    """Takes the series: `read` once per sample, on the clock it is given (tests pass a fake one)."""

    read: Callable[[], Any]
    sampling: Sampling
    label: str
    redactor: Redactor
    tell: Callable[[str], None]
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    show_progress: bool = False

    def __call__(self) -> dict[str, Any]:
        sampling = self.sampling
        samples: list[dict[str, Any]] = []
        started = self.clock()
        total = sampling.count or int((sampling.duration or 0) / max(sampling.every, 1e-3)) + 1
        progress = Progress(self.label, total, self.show_progress)
        interrupted = False
        try:
            while True:
                samples.append(self._one(self.clock() - started))
                progress.advance(1)
                if sampling.count is not None and len(samples) >= sampling.count:
                    break
                next_at = len(samples) * sampling.every
                if sampling.duration is not None and next_at > sampling.duration + 1e-9:
                    break
                self.sleep(max(0.0, started + next_at - self.clock()))
        except Interrupted as exc:
            if exc.signum != signal.SIGINT:
                raise
            interrupted = True
        except KeyboardInterrupt:
            interrupted = True
        finally:
            progress.finish()
        if interrupted:
            self.tell(f"  sampling stopped by Ctrl-C: {len(samples)} samples kept")
        if samples and all("error" in s for s in samples):
            raise ActionFailed(samples[-1]["error"])
        return {
            "samples": samples,
            "readings": [s.get("value") for s in samples],  # not `values`: that is a mapping method
            "count": len(samples),
            "errors": sum(1 for s in samples if "error" in s),
            "interrupted": interrupted,
            "every_s": sampling.every,
            "elapsed_s": round(self.clock() - started, 3),
        }

    def _one(self, at: float) -> dict[str, Any]:
        sample: dict[str, Any] = {"t": round(at, 3), "at": utc_now()}
        try:
            sample["value"] = self.read()
        except MutationRefused:
            raise
        except RunbookError as exc:
            sample.update(value=None, error=self.redactor.text(str(exc)))
        return sample


def utc_now() -> str:
    """The engine's one time format (the `now` template value), for samples and parsers."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
