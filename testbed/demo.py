"""``python -m testbed.demo`` (``make demo``): sample world, simulators on loopback, a full
refresh.

Builds the sample database and MaxMind files under ``data/demo/`` (default 10,000 IPs; never
``data/honeypot.sqlite``, the default ``--db`` of a real refresh), starts the
Team Cymru, GreyNoise and lists simulators on free 127.0.0.1 ports, fetches the lists into
``data/demo/lists`` (``honeypot-etl lists update``), runs ``python -m etl.refresh`` against
the services exactly as a user would, stops the simulators, and shows ``status``.

It rebuilds only its own world: a database or MaxMind file in ``--data`` that the sample did not
make (`testbed.sample.marks`) is refused (exit 2) before anything is written, and left as it is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from etl.cli import options as cli
from etl.core.errors import UsageError
from testbed.sim.lists.server import url_options
from testbed.sim.process import running

DEMO_KEY = "demo-greynoise-key"
DEMO_PROGRESS_SECONDS = 5  # plain output: progress lines often enough to see in a short run
EXAMPLES = """\
Examples:

\b
  python -m testbed.demo
  python -m testbed.demo --ips 50000 --seed 3 --data /tmp/demo"""


def demo(
    ips: Annotated[int, typer.Option(metavar="N", min=1, help="sample size")] = 10_000,
    seed: Annotated[int, typer.Option(help="world seed")] = 1,
    data: Annotated[Path, typer.Option(metavar="DIR", help="folder for the files")] = Path(
        "data/demo"
    ),
) -> int:
    """Sample world, both simulators on 127.0.0.1, a full refresh against them, and the
    status afterwards."""
    db_url = f"sqlite:///{data / 'honeypot.sqlite'}"
    maxmind_dir, lists_dir = data / "maxmind", data / "lists"
    refuse_what_is_not_ours(db_url, maxmind_dir)
    data.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    print(f"demo: building the sample world ({ips} IPs, seed {seed})", flush=True)
    built = subprocess.run(
        [python, "-m", "testbed.sample", "--db", db_url, "--ips", str(ips),
         "--seed", str(seed), "--maxmind-dir", str(maxmind_dir), "--replace"],
        check=False,
    )  # fmt: skip
    if built.returncode:  # it said why, in one line
        return built.returncode
    with ExitStack() as stack:
        cymru = stack.enter_context(running("cymru", data / "sim-cymru.jsonl", "--seed", str(seed)))
        greynoise = stack.enter_context(
            running("greynoise", data / "sim-greynoise.jsonl",
                    "--seed", str(seed), "--key", DEMO_KEY)
        )  # fmt: skip
        lists = stack.enter_context(running("lists", data / "sim-lists.jsonl", "--seed", str(seed)))
        print(
            f"demo: Team Cymru simulator on {cymru.address}, GreyNoise simulator on "
            f"{greynoise.url}, lists simulator on {lists.url}",
            flush=True,
        )
        fetch = [python, "-m", "etl", "lists", "update", "--lists-dir", str(lists_dir)]
        fetch += url_options(lists.url)
        print("demo: python " + " ".join(fetch[1:]), flush=True)
        subprocess.run(fetch, env=_demo_env(), check=False)
        command = [python, "-m", "etl.refresh", "--db", db_url, "--maxmind-dir", str(maxmind_dir),
                   "--lists-dir", str(lists_dir)]  # fmt: skip
        command += refresh_service_options(cymru.address, greynoise.url)
        print("demo: python " + " ".join(command[1:]), flush=True)
        refreshed = subprocess.run(command, env=_demo_env(), check=False).returncode
    # Where the data stands now: every session the loader left unlinked is linked.
    status = [python, "-m", "etl.status", "--db", db_url, "--maxmind-dir", str(maxmind_dir),
              "--lists-dir", str(lists_dir)]  # fmt: skip
    print("demo: python " + " ".join(status[1:]), flush=True)
    subprocess.run(status, env=_demo_env(), check=False)
    return refreshed


def _demo_env() -> dict[str, str]:
    """The demo's children read no etl.toml: an operator's (./etl.toml, found by default)
    would send the demo's numbers to their real metrics and status files."""
    return {**os.environ, "GREYNOISE_API_KEY": DEMO_KEY, "ETL_CONFIG": os.devnull}


def refuse_what_is_not_ours(db_url: str, maxmind_dir: Path) -> None:
    """Raise `UsageError` naming the database or MaxMind files at the demo's targets that the
    sample did not make (the demo then replaces its own earlier world only)."""
    from etl.db.url import parse_database_url
    from testbed.sample.marks import foreign_maxmind, foreign_sqlite

    url = parse_database_url(db_url, check_folder=False)
    foreign = foreign_sqlite(url) + foreign_maxmind(maxmind_dir)
    if foreign:
        names = ", ".join(map(str, foreign))
        raise UsageError(
            f"{names} {'was' if len(foreign) == 1 else 'were'} not made by the demo, which "
            "replaces nothing else: choose another --data folder"
        )


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m testbed.demo`` with ``argv``; return the exit status."""
    return cli.run_single(demo, argv, "python -m testbed.demo", EXAMPLES)


def refresh_service_options(cymru: str, greynoise: str) -> list[str]:
    """Options pointing the refresh at the simulators."""
    return ["--cymru", cymru, "--greynoise-url", greynoise, "--greynoise-rate", "500",
            "--progress-every", str(DEMO_PROGRESS_SECONDS)]  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
