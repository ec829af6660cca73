"""``python -m testbed.sim.lists``."""

from testbed.sim.lists.cli import run

run()
