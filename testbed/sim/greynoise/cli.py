"""``python -m testbed.sim.greynoise``: the GreyNoise API simulator's command line."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated

import typer

from etl.cli import options as cli
from testbed.sim.common import GreyNoiseFault
from testbed.sim.options import FaultRate, LatencyMs, Log, Port, Seed, checked

EXAMPLES = """\
Examples:

\b
  python -m testbed.sim.greynoise --port 0 --key demo --rate 10 --daily-limit 100
  python -m testbed.sim.greynoise --port 8088 --fault 429 --retry-after date"""


class RetryAfter(StrEnum):
    """The form of Retry-After on a throttling 429."""

    seconds = "seconds"
    date = "date"
    none = "none"


def greynoise(
    port: Port = 8088,
    seed: Seed = 1,
    latency_ms: LatencyMs = 0.0,
    fault: Annotated[GreyNoiseFault | None, typer.Option(help="fault to inject")] = None,
    fault_rate: FaultRate = 1.0,
    log: Log = None,
    key: Annotated[str | None, typer.Option(help="require this API key in the key header")] = None,
    rate: Annotated[
        float | None, typer.Option(help="requests per second before 429, at most 100,000")
    ] = None,
    daily_limit: Annotated[
        int | None,
        typer.Option(
            help="Searches a day before the daily-limit 429 (a community lookup is one, a quick "
            "check one per 1,000 IPs, a full lookup one per IP), 0 to 1,000,000,000"
        ),
    ] = None,
    retry_after: Annotated[
        RetryAfter, typer.Option(help="form of Retry-After on a throttling 429")
    ] = RetryAfter.seconds,
    slow_seconds: Annotated[
        float, typer.Option(help="delay of a slow fault (s), 0 to 3,600")
    ] = 5.0,
) -> None:
    """GreyNoise API simulator (HTTP, community and enterprise endpoints)."""
    checked(port=port, latency_ms=latency_ms, fault_rate=fault_rate, log=log)
    checked(rate=rate, daily_limit=daily_limit, slow_seconds=slow_seconds)
    from testbed.sim.greynoise import server as simulator

    simulator.run(
        port,
        seed,
        latency_ms,
        None if fault is None else str(fault),
        fault_rate,
        log,
        key,
        rate,
        daily_limit,
        str(retry_after),
        slow_seconds,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m testbed.sim.greynoise`` with ``argv``; return the exit status."""
    return cli.run_single(greynoise, argv, "python -m testbed.sim.greynoise", EXAMPLES)


def run() -> None:
    """Entry point of ``python -m testbed.sim.greynoise``."""
    sys.exit(main())
