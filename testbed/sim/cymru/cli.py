"""``python -m testbed.sim.cymru``: the Team Cymru bulk whois simulator's command line."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from etl.cli import options as cli
from testbed.sim.common import CymruFault
from testbed.sim.options import FaultRate, LatencyMs, Log, Port, Seed, checked

EXAMPLES = """\
Examples:

\b
  python -m testbed.sim.cymru --port 0 --seed 1 --latency-ms 5
  python -m testbed.sim.cymru --port 4343 --fault drop --fault-rate 0.2"""


def cymru(
    port: Port = 4343,
    seed: Seed = 1,
    latency_ms: LatencyMs = 0.0,
    chunk_latency_ms: Annotated[
        float, typer.Option(help="delay before a session's first answer (ms), 0 to 60,000")
    ] = 0.0,
    fault: Annotated[CymruFault | None, typer.Option(help="fault to inject")] = None,
    fault_rate: FaultRate = 1.0,
    log: Log = None,
    bulk_header: Annotated[bool, typer.Option(help="print a header in bulk mode")] = False,
) -> None:
    """Team Cymru bulk whois simulator (TCP, the real wire format)."""
    checked(port=port, latency_ms=latency_ms, chunk_latency_ms=chunk_latency_ms)
    checked(fault_rate=fault_rate, log=log)
    from testbed.sim.cymru import server as simulator

    simulator.run(
        port,
        seed,
        latency_ms,
        chunk_latency_ms,
        None if fault is None else str(fault),
        fault_rate,
        log,
        bulk_header,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m testbed.sim.cymru`` with ``argv``; return the exit status."""
    return cli.run_single(cymru, argv, "python -m testbed.sim.cymru", EXAMPLES)


def run() -> None:
    """Entry point of ``python -m testbed.sim.cymru``."""
    sys.exit(main())
