"""``python -m etl.status``: the status report of a honeypot database."""

from etl.cli.status import run

run()
