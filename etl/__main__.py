"""``python -m etl`` is ``python -m etl.refresh``."""

from etl.refresh import app

app(prog_name="python -m etl.refresh")
