"""The GreyNoise API simulator: ``server`` serves, ``cli`` is its command line
(``python -m testbed.sim.greynoise``)."""
