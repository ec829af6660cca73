"""``honeypot-etl sim cymru|greynoise`` (also ``python -m testbed.sim.cymru|greynoise``): the two
service simulators on 127.0.0.1, for tests, benchmarks and the demo.

The first line on stdout is ``listening on 127.0.0.1:PORT``; SIGTERM or SIGINT stops them.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from etl import cli
from etl.errors import SettingError, UsageError
from etl.limits import Range, path_problem
from testbed.sim.common import CymruFault, GreyNoiseFault


class RetryAfter(StrEnum):
    """The form of Retry-After on a throttling 429."""

    seconds = "seconds"
    date = "date"
    none = "none"


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
LatencyMs = Annotated[float, typer.Option(help="delay of every answer (ms), 0 to 60,000")]
FaultRate = Annotated[float, typer.Option(help="share of faulty sessions or requests, 0 to 1")]
Log = Annotated[Path | None, typer.Option(help="JSON lines file: one entry per session or request")]


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
    from testbed.sim import cymru as simulator

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
    from testbed.sim import greynoise as simulator

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


def app() -> typer.Typer:
    """``honeypot-etl sim``: both simulators as subcommands."""
    group = cli.new_app("Simulators of the two services, on 127.0.0.1 only.")
    group.command("cymru", epilog=CYMRU_EXAMPLES)(cymru)
    group.command("greynoise", epilog=GREYNOISE_EXAMPLES)(greynoise)
    return group


def cymru_main() -> None:
    """``python -m testbed.sim.cymru``."""
    raise SystemExit(cli.run_single(cymru, None, "python -m testbed.sim.cymru", CYMRU_EXAMPLES))


def greynoise_main() -> None:
    """``python -m testbed.sim.greynoise``."""
    raise SystemExit(
        cli.run_single(greynoise, None, "python -m testbed.sim.greynoise", GREYNOISE_EXAMPLES)
    )
