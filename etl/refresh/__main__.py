"""``python -m etl.refresh``: the same as ``honeypot-etl refresh``."""

from etl.cli.refresh import run

run()
