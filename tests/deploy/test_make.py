"""`make run` as a new user meets it: only the runtime dependencies, and a port of one's
choosing (`make -n` prints what it would run without running it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def planned(*args: str) -> str:
    # -W pyproject.toml: as if it changed, so the install steps are printed too
    out = subprocess.run(["make", "-n", "-W", "pyproject.toml", "run", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_run_installs_no_test_extras() -> None:
    plan = planned()
    installs = [line for line in plan.splitlines() if "pip install" in line and " -e " in line]
    assert installs and all("[test]" not in line for line in installs), plan
    assert "tollway serve -c gateway.yaml" in plan and "--port" not in plan


def test_make_run_takes_a_port() -> None:
    assert "tollway serve -c gateway.yaml --port 4242" in planned("PORT=4242")
    assert "--port 4343" in planned("TOLLWAY_PORT=4343")
