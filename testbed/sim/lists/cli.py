"""``python -m testbed.sim.lists``: the infrastructure lists' simulator's command line."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from etl.cli import options as cli
from etl.core.errors import UsageError
from testbed.sim.options import Log, Port, Seed, checked

EXAMPLES = """\
Examples:

\b
  python -m testbed.sim.lists --port 8090
  python -m testbed.sim.lists --port 0 --fault changed --fault-list tor

\b
Then: honeypot-etl lists update --tor-url http://127.0.0.1:8090/torbulkexitlist \\
  --cloud-url http://127.0.0.1:8090/cloud --aws-url http://127.0.0.1:8090/ip-ranges.json \\
  --gcp-url http://127.0.0.1:8090/cloud.json --datacenters-url http://127.0.0.1:8090/datacenters.csv"""


def lists(
    port: Port = 8090,
    seed: Seed = 1,
    small: Annotated[bool, typer.Option(help="a few random entries per list (tests)")] = False,
    fault: Annotated[str | None, typer.Option(help="404, slow, truncated, changed or html")] = None,
    fault_list: Annotated[
        str | None, typer.Option(help="only the list files whose name starts with this")
    ] = None,
    slow_seconds: Annotated[
        float, typer.Option(help="delay of a slow fault (s), 0 to 3,600")
    ] = 5.0,
    log: Log = None,
) -> None:
    """Infrastructure lists simulator (HTTP: Tor, cloud ranges, AWS, Google Cloud, datacenters)."""
    from testbed.sim.lists import server as simulator

    checked(port=port, slow_seconds=slow_seconds, log=log)
    if fault is not None and fault not in simulator.FAULTS:
        raise UsageError(f"--fault must be one of {', '.join(simulator.FAULTS)}, got {fault!r}")
    simulator.run(port, seed, small, fault, fault_list, slow_seconds, log)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m testbed.sim.lists`` with ``argv``; return the exit status."""
    return cli.run_single(lists, argv, "python -m testbed.sim.lists", EXAMPLES)


def run() -> None:
    """Entry point of ``python -m testbed.sim.lists``."""
    sys.exit(main())
