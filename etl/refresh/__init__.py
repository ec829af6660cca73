"""The refresh: what one run does, in the order it happens (`etl.refresh.pipeline`), as the
command line runs it (`etl.refresh.monitored`), and what a run writes besides the database
(`etl.refresh.outputs`, `etl.refresh.runlog`). Its settings are `etl.refresh.config`.

Nothing is imported here: ``python -m etl.refresh`` (`etl.refresh.__main__`) starts quickly.
"""
