"""Start-up: `import engine.cli.main` (every command's first step) loads no heavy library and no run machinery."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("jsonschema", "jinja2", "paramiko", "redis", "yaml", "requests")


def _modules_after(code: str) -> list[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_cli_loads_no_heavy_library() -> None:
    loaded = _modules_after("import engine.cli.main")
    assert "click" in loaded and "engine.cli.main" in loaded  # the check sees what was imported
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []
    # `import engine` hands the kind registry to spec (engine.steps, engine.spec.kinds/model: no kind, no library)
    machinery = ("engine.run.runner", "engine.run.session", "engine.spec.validate", "engine.spec.schema")
    machinery += ("engine.spec.loader",)
    kind_modules = [m for m in loaded if m.startswith("engine.steps.") and m.endswith("_step")]
    assert [m for m in loaded if m.startswith(machinery)] == [] and kind_modules == []


def test_the_sub_clis_fail_through_a_helper_below_them() -> None:
    """timeline, triage and rehearse import the failure helper, not the main CLI (no import upward)."""
    for module in ("engine.timeline.cli", "engine.triage.cli", "engine.rehearsal.cli"):
        loaded = _modules_after(f"import {module}")
        assert "engine.cli.errors" in loaded and "engine.cli.main" not in loaded, module
