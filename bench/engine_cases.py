"""Start-up and per-step engine overhead: what every run pays before it touches a keyspace."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench.measure import Row, alternate, shell
from engine.sandbox import RedisServer


def startup(rounds: int) -> list[Row]:
    py = sys.executable
    base_cmd = f"{py} -c pass"
    ours_help, ref = alternate(shell(f"{py} -m engine.cli --help"), shell(base_cmd), rounds)
    ours_list, ref2 = alternate(shell(f"{py} -m engine.cli list"), shell(base_cmd), rounds)
    return [
        Row("runbook --help (vs python -c pass)", ours_help, ref, 10.0),
        Row("runbook list (vs python -c pass)", ours_list, ref2, 20.0),
    ]


def _procedure(directory: Path, steps: int) -> Path:
    body = [
        "id: bench/read-steps",
        "title: Read steps",
        "section: bench",
        "description: overhead",
        "requires: [redis]",
        "steps:",
    ]
    for i in range(steps):
        if i % 2:
            body.append(f"  - id: s{i}\n    name: Info {i}\n    redis: {{info: server}}")
        else:
            body.append(f"  - id: s{i}\n    name: Ping {i}\n    redis: {{command: [PING]}}")
    path = directory / "read-steps.yaml"
    path.write_text("\n".join(body) + "\n")
    return path


def engine_overhead(rounds: int, steps: int = 200) -> list[Row]:
    """A 200-step read procedure through the engine vs the same 200 commands sent by redis-py."""
    from engine.run.session import RunRequest, execute

    with tempfile.TemporaryDirectory() as tmp, RedisServer.start() as server:
        directory = Path(tmp)
        procedure = _procedure(directory, steps)
        client = server.client()
        counter = iter(range(10**6))

        def ours() -> None:
            result = execute(
                RunRequest(
                    procedure=str(procedure),
                    redis_url=f"redis://127.0.0.1:{server.port}/0",
                    transcript=directory / f"t{next(counter)}.jsonl",
                )
            )
            assert result.exit_code == 0, result.error

        def direct() -> None:
            for i in range(steps):
                client.info("server") if i % 2 else client.ping()

        ours_s, ref_s = alternate(ours, direct, rounds)
        per_step_ms = (ours_s - ref_s) / steps * 1000
        return [
            Row(
                f"{steps} read steps (vs redis-py direct)",
                ours_s,
                ref_s,
                None,
                note=f"engine overhead {per_step_ms:.2f} ms per step (target <= 3 ms), transcript fsyncs included;"
                " the run includes loading and validating the procedure and connecting",
            )
        ]
