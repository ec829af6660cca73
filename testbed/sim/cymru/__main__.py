"""``python -m testbed.sim.cymru``."""

from testbed.sim.cymru.cli import run

run()
