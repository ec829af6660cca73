"""The infrastructure lists' simulator (``python -m testbed.sim.lists``): the lists of SPEC 3.4
served over HTTP in their real formats, with conditional requests and faults."""
