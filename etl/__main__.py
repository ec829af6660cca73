"""``python -m etl``: the ``honeypot-etl`` command."""

from etl.cli.app import run

run()
