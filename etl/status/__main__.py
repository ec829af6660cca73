"""``python -m etl.status``: the status report of a honeypot database."""

from etl.status.cli import run

run()
