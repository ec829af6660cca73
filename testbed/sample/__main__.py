"""``python -m testbed.sample``: build the sample honeypot database and MaxMind files."""

from testbed.sample.cli import run

run()
