"""The Team Cymru bulk whois simulator: ``server`` serves, ``cli`` is its command line
(``python -m testbed.sim.cymru``)."""
