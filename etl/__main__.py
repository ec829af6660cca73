"""``python -m etl``: the ``honeypot-etl`` command."""

from etl.app import run

run()
