"""A fix that does not take: a second real run in which every change is acknowledged and never applied.

Verification steps (`verifies:`) exist for the day a change does not take: a server that drops it, a
writer that undoes it, an operator on another terminal. A scenario in which the fix always takes cannot
tell a verification from one that always passes. So a rehearsal breaks a second world the same way
and runs the procedure for real with its changes *sabotaged*: each change step whose kind can say
what it would have returned (its dry-run prediction) returns that and sends nothing. The procedure
must notice: at least one of its verification steps must fail. Steps whose kind cannot predict a
result (a shell command) run as usual.

The hook is the step-kind lookup of the runner, patched for the duration of the run: the rehearsal runs
in-process, so the engine's code is the code rehearsed, with one lie in the world.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from engine.outcome import Outcome
from engine.spec.model import Effect


@contextmanager
def changes_do_not_take() -> Iterator[list[str]]:
    """Within: every changing step with a prediction returns it without sending anything. Yields the ids."""
    import engine.run.runner as runner
    from engine.steps import get

    sabotaged: list[str] = []

    def lying(name: str) -> Any:
        kind = get(name)

        def plan(body: Any, ctx: Any) -> Any:
            action = kind.plan(body, ctx)
            effect = max(action.effect, ctx.step.effect or Effect.READ)
            if kind.called_procedures(body):  # a call: each of the callee's steps is sabotaged on its own
                return action
            predict = action.predict
            if effect is Effect.READ or predict is None or ctx.dry_run:
                return action

            def pretend() -> Any:
                sabotaged.append(ctx.step.id)
                return predict(action.measured())

            def claimed(measured: Any, result: Any) -> Any:  # what a dry-run would record: the change, claimed
                return action.changes(measured, None) if action.changes else []

            return dataclasses.replace(action, execute=pretend, apply=None, changes=claimed, failed=None, output=None)

        return kind.with_plan(plan)

    original = runner.get
    runner.get = lying
    try:
        yield sabotaged
    finally:
        runner.get = original


def verification_steps(procedure_ids: set[str], catalog: Any, ref: str | None = None) -> dict[tuple[str, str], str]:
    """(procedure id, step id) -> the step it verifies, for every verification step of the procedures that ran."""
    out: dict[tuple[str, str], str] = {}
    top = catalog_id(ref) if ref else None
    for procedure_id in procedure_ids:
        try:
            procedure = catalog.load(ref if ref and procedure_id == top else procedure_id)
        except Exception:
            continue
        out.update({(procedure.id, s.id): s.verifies for s in procedure.steps if s.verifies})
    return out


def catalog_id(ref: str) -> str | None:
    from pathlib import Path

    import yaml

    path = Path(ref)
    if not path.is_file():
        return ref
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data.get("id") if isinstance(data, dict) else None


def _failed(record: Any) -> bool:
    held_not = [e for e in record.expectations if e["held"] is False and e["severity"] in ("critical", "warning")]
    return record.outcome in (Outcome.FAILED, Outcome.ERROR) or bool(held_not)


def noticed(records: list[Any], verifying: dict[tuple[str, str], str], sabotaged: list[str]) -> list[str]:
    """The steps that failed because a change did not take: a verification of a sabotaged step, or the
    sabotaged step itself checking the server's reply. Empty: the procedure did not notice."""
    out = []
    for record in records:
        verified = verifying.get((record.procedure, record.id))
        if (verified in sabotaged or record.id in sabotaged) and _failed(record):
            out.append(record.id)
    return out
