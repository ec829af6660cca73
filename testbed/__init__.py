"""The test bed: the sample world, the two service simulators and the demo.

It lives in the repository beside ``etl/`` and is installed by ``make setup``, never shipped in
the wheel. It imports from ``etl``; nothing in ``etl`` imports it.
"""
