"""``honeypot-etl sim cymru|greynoise`` (also ``python -m etl.sim.cymru|greynoise``): the two
service simulators on 127.0.0.1, for tests, benchmarks and the demo.

The first line on stdout is ``listening on 127.0.0.1:PORT``; SIGTERM or SIGINT stops them.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from etl import cli
from etl.sim.common import CymruFault, GreyNoiseFault


class RetryAfter(StrEnum):
    """The form of Retry-After on a throttling 429."""

    seconds = "seconds"
    date = "date"
    none = "none"


Port = Annotated[
    int, typer.Option(min=0, max=65535, help="TCP port on 127.0.0.1 (0: any free port)")
]
CYMRU_EXAMPLES = """\
Examples:

\b
  honeypot-etl sim cymru --port 0 --seed 1 --latency-ms 5
  honeypot-etl sim cymru --port 4343 --fault drop --fault-rate 0.2"""
GREYNOISE_EXAMPLES = """\
Examples:

\b
  honeypot-etl sim greynoise --port 0 --key demo --rate 10 --daily-limit 100
  honeypot-etl sim greynoise --port 8088 --fault 429 --retry-after date"""
Seed = Annotated[int, typer.Option(help="world seed (the same as the sample database's)")]
LatencyMs = Annotated[float, typer.Option(help="delay of every answer (ms)")]
FaultRate = Annotated[float, typer.Option(help="share of faulty sessions or requests")]
Log = Annotated[Path | None, typer.Option(help="JSON lines file: one entry per session or request")]


def cymru(
    port: Port = 4343,
    seed: Seed = 1,
    latency_ms: LatencyMs = 0.0,
    chunk_latency_ms: Annotated[
        float, typer.Option(help="delay before a session's first answer (ms)")
    ] = 0.0,
    fault: Annotated[CymruFault | None, typer.Option(help="fault to inject")] = None,
    fault_rate: FaultRate = 1.0,
    log: Log = None,
    bulk_header: Annotated[bool, typer.Option(help="print a header in bulk mode")] = False,
) -> None:
    """Team Cymru bulk whois simulator (TCP, the real wire format)."""
    from etl.sim import cymru as simulator

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


def greynoise(
    port: Port = 8088,
    seed: Seed = 1,
    latency_ms: LatencyMs = 0.0,
    fault: Annotated[GreyNoiseFault | None, typer.Option(help="fault to inject")] = None,
    fault_rate: FaultRate = 1.0,
    log: Log = None,
    key: Annotated[str | None, typer.Option(help="require this API key in the key header")] = None,
    rate: Annotated[float | None, typer.Option(help="requests per second before 429")] = None,
    daily_limit: Annotated[
        int | None, typer.Option(help="lookups before the daily-limit 429")
    ] = None,
    retry_after: Annotated[
        RetryAfter, typer.Option(help="form of Retry-After on a throttling 429")
    ] = RetryAfter.seconds,
    slow_seconds: Annotated[float, typer.Option(help="delay of a slow fault (s)")] = 5.0,
) -> None:
    """GreyNoise API simulator (HTTP, community and enterprise endpoints)."""
    from etl.sim import greynoise as simulator

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


def app() -> typer.Typer:
    """``honeypot-etl sim``: both simulators as subcommands."""
    group = cli.new_app("Simulators of the two services, on 127.0.0.1 only.")
    group.command("cymru", epilog=CYMRU_EXAMPLES)(cymru)
    group.command("greynoise", epilog=GREYNOISE_EXAMPLES)(greynoise)
    return group


def cymru_main() -> None:
    """``python -m etl.sim.cymru``."""
    raise SystemExit(cli.run_single(cymru, None, "python -m etl.sim.cymru", CYMRU_EXAMPLES))


def greynoise_main() -> None:
    """``python -m etl.sim.greynoise``."""
    raise SystemExit(
        cli.run_single(greynoise, None, "python -m etl.sim.greynoise", GREYNOISE_EXAMPLES)
    )
