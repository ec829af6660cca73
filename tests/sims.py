"""Processes for tests: the simulators (as the demo runs them) and our own entry points."""

import subprocess
import sys

from etl.sim.process import Simulator, running

__all__ = ["Simulator", "run_module", "running"]


def run_module(
    module: str, *args: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <module> ...`` to completion, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
