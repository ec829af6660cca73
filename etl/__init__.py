"""Vectorized refresh of the IP enrichment in Cowrie honeypot databases.

The pipeline (see `etl.refresh.pipeline`) loads stale IPs through DuckDB into a Polars frame,
adds validation and MaxMind blocks as frame steps, and upserts the result in chunks.
"""

__version__ = "0.1.0"
