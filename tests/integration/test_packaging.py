"""The wheel carries the procedures and schemas: installed outside the checkout, `runbook list` finds them."""

from __future__ import annotations

import os
import subprocess
import sys
import venv

import pytest

from tests.integration.cli_support import REPO

pytestmark = pytest.mark.slow


def test_wheel_installed_in_fresh_venv_lists_and_validates_procedures(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,  # bounds a hang: a busy machine and the package index make this slow, never wrong
    )
    wheel = next(dist.glob("runbook-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    pip = env_dir / "bin" / "pip"
    subprocess.run([str(pip), "install", "-q", str(wheel)], check=True, capture_output=True, timeout=600)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing may point back at the checkout
    runbook = str(env_dir / "bin" / "runbook")
    listed = subprocess.run([runbook, "list"], cwd=outside, capture_output=True, text=True, timeout=60, env=clean)
    assert listed.returncode == 0, listed.stderr
    shipped = sorted(p.stem for p in (REPO / "procedures" / "redis").glob("*.yaml"))
    for name in shipped:
        assert f"redis/{name}" in listed.stdout
    checked = subprocess.run([runbook, "validate"], cwd=outside, capture_output=True, text=True, timeout=60, env=clean)
    assert checked.returncode == 0, checked.stderr
    installed = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "import engine.resources as r; print(r.procedures_dir())"],
        cwd=outside,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean,
    )
    assert "site-packages" in installed.stdout and str(REPO) not in installed.stdout
