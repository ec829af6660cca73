"""``python -m testbed.sim.greynoise``."""

from testbed.sim.greynoise.cli import run

run()
