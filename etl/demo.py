"""``python -m etl.demo`` (``make demo``): sample world, simulators on loopback, a full refresh.

Builds the sample database and MaxMind files under ``data/demo/`` (default 10,000 IPs; never
``data/honeypot.sqlite``, the default ``--db`` of a real refresh), starts the
Team Cymru and GreyNoise simulators on free 127.0.0.1 ports, runs ``python -m etl.refresh``
against them exactly as a user would, and stops the simulators.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

from etl.sim.process import running

DEMO_KEY = "demo-greynoise-key"


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the refresh's exit code."""
    parser = argparse.ArgumentParser(prog="python -m etl.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--ips", type=int, default=10_000, help="sample size (default 10000)")
    parser.add_argument("--seed", type=int, default=1, help="world seed")
    parser.add_argument(
        "--data", type=Path, default=Path("data/demo"), help="folder for the files [data/demo]"
    )
    args = parser.parse_args(argv)
    args.data.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{args.data / 'honeypot.sqlite'}"
    maxmind_dir = args.data / "maxmind"
    python = sys.executable
    print(f"demo: building the sample world ({args.ips} IPs, seed {args.seed})", flush=True)
    subprocess.run(
        [python, "-m", "etl.sample", "--db", db_url, "--ips", str(args.ips),
         "--seed", str(args.seed), "--maxmind-dir", str(maxmind_dir), "--replace"],
        check=True,
    )  # fmt: skip
    with ExitStack() as stack:
        cymru = stack.enter_context(
            running("cymru", args.data / "sim-cymru.jsonl", "--seed", str(args.seed))
        )
        greynoise = stack.enter_context(
            running("greynoise", args.data / "sim-greynoise.jsonl",
                    "--seed", str(args.seed), "--key", DEMO_KEY)
        )  # fmt: skip
        print(
            f"demo: Team Cymru simulator on {cymru.address}, GreyNoise simulator on "
            f"{greynoise.url}",
            flush=True,
        )
        command = [python, "-m", "etl.refresh", "--db", db_url, "--maxmind-dir", str(maxmind_dir)]
        command += refresh_service_options(cymru.address, greynoise.url)
        print("demo: python " + " ".join(command[1:]), flush=True)
        env = {**os.environ, "GREYNOISE_API_KEY": DEMO_KEY}
        return subprocess.run(command, env=env, check=False).returncode


def refresh_service_options(cymru: str, greynoise: str) -> list[str]:
    """Options pointing the refresh at the simulators."""
    return ["--cymru", cymru, "--greynoise-url", greynoise, "--greynoise-rate", "500"]


if __name__ == "__main__":
    sys.exit(main())
