"""CI gate: `runbook rehearse --mutate` on the catalog kills enough planted bugs.

A deterministic sample (SAMPLE mutants per procedure that has a scenario, spread over the operators)
keeps this within its budget of a few minutes on 2 cores; `runbook rehearse --mutate` without
--sample runs them all (docs/rehearsal.md has the full figures and every survivor explained).
"""

from __future__ import annotations

import json
import sys
import time

from tests.integration.cli_support import runbook

SAMPLE = 2
# Percent of the counted (not equivalent) mutants killed. Issue 12 sets 90 as the goal. This sample (50 mutants
# over 25 procedures, rolling-restart and backup-snapshot included) scores 43/50 = 86.0%; the 20 procedures
# measured whole score 489/541 = 90.4% (docs/rehearsal.md has every survivor and what would kill it). The
# survivors here are defaults only a slow world exercises (a replica silent for 30-61 s, a node that never
# comes back within 120 s, convergence that slow) and checks no CI world can fail cheaply (a CPU alert).
# A ratchet: raise it with every scenario that kills a survivor, never lower it below one mutant under the
# measured score (the sample grows with the catalog, so the same margin is a smaller percentage).
MIN_SCORE = 84.0  # one mutant below the measured 43/50, so one slow-machine outlier does not fail the build
JOBS = 4  # mutants rehearsed at once: each mostly waits on its world, so 4 fit on 2 cores


def test_the_sampled_mutants_of_the_catalog_are_killed(tmp_path):
    started = time.monotonic()
    result = runbook(
        "rehearse",
        "--mutate",
        "--sample",
        str(SAMPLE),
        "--min-score",
        str(MIN_SCORE),
        "--jobs",
        str(JOBS),
        "--json",
        "--transcripts-dir",
        str(tmp_path),
        cwd=tmp_path,
        timeout=900,
    )
    report = json.loads(result.stdout)
    survivors = [f"{m['procedure']} {m['mutant']}" for m in report["mutants"] if m["status"] == "survived"]
    print(
        f"\nmutation sample: {report['killed']}/{report['counted']} killed ({report['score']}%) "
        f"in {time.monotonic() - started:.0f}s; survivors:\n  " + "\n  ".join(survivors),
        file=sys.stderr,
    )
    procedures = {m["procedure"] for m in report["mutants"]}
    assert len(procedures) >= 15  # every procedure with a scenario is sampled
    assert all(m["status"] in ("killed", "survived", "equivalent") and m["reason"] for m in report["mutants"])
    assert report["score"] >= MIN_SCORE, survivors
    assert result.code == 0, result.stderr[-2000:]
