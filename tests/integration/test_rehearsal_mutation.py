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
# Percent of the counted (not equivalent) mutants killed. Issue 12 sets 90 as the goal. This sample (46 mutants
# over 23 procedures) scores 40/46 = 87.0%: 36/40 = 90.0% on the 20 procedures measured whole before the
# deployment procedures were merged (the catalog of those 20: 476/524 = 90.8% then, 489/541 = 90.4% with the
# replica steps the merge gave key-metrics and emergency-service-down), 4/6 on replication-health,
# failover and cluster-health. 358 s with --jobs 2 on a busy 2-core machine, the longest mutant ~90 s. The
# survivors and what would kill each are in docs/rehearsal.md. A ratchet: raise it with every scenario that
# kills a survivor, never lower it.
MIN_SCORE = 84.5  # one mutant below the measured 40/46, so one slow-machine outlier does not fail the build
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
