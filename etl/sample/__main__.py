"""``python -m etl.sample``: build the sample honeypot database and MaxMind files."""

from etl.sample.cli import run

run()
