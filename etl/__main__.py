"""``python -m etl`` is ``python -m etl.refresh``."""

from etl.refresh import run

run()
