"""What the two simulators' command lines share (``python -m testbed.sim.cymru`` and
``python -m testbed.sim.greynoise``): the options' ranges and their one-line refusals.

The first line a simulator prints on stdout is ``listening on 127.0.0.1:PORT``; SIGTERM or SIGINT
stops it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from etl.core.errors import SettingError, UsageError
from etl.core.limits import Range, path_problem

# The ranges of the numeric options (one line and exit 2 outside them).
RANGES = {
    "--port": Range(0, 65_535, "(0: any free port)"),
    "--latency-ms": Range(0, 60_000, "ms"),
    "--chunk-latency-ms": Range(0, 60_000, "ms"),
    "--fault-rate": Range(0, 1, "(a share of the sessions or requests)"),
    "--rate": Range(0, 100_000, "requests per second", above=True),
    "--daily-limit": Range(0, 1_000_000_000, "Searches"),
    "--slow-seconds": Range(0, 3_600, "seconds"),
}
Port = Annotated[int, typer.Option(help="TCP port on 127.0.0.1, 0 to 65,535 (0: any free port)")]
Seed = Annotated[int, typer.Option(help="world seed (the same as the sample database's)")]
LatencyMs = Annotated[float, typer.Option(help="delay of every answer (ms), 0 to 60,000")]
FaultRate = Annotated[float, typer.Option(help="share of faulty sessions or requests, 0 to 1")]
Log = Annotated[Path | None, typer.Option(help="JSON lines file: one entry per session or request")]


def checked(log: Path | None = None, **numbers: float | None) -> None:
    """Refuse, as one line (exit 2), a number outside its option's range or a log file that
    cannot be written (a folder, or in a folder that does not exist)."""
    for name, value in numbers.items():
        flag = "--" + name.replace("_", "-")
        RANGES[flag].check(flag, value)  # SettingError: named by the flag itself
    if log is None:
        return
    problem = path_problem(str(log))
    if problem:
        raise SettingError("--log", problem)
    if log.is_dir():
        raise SettingError("--log", f"{log} is a folder, not a file")
    if not log.parent.is_dir():
        raise UsageError(f"--log {log}: the folder {log.parent} does not exist")
