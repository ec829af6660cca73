"""Which `Backend` serves a database URL: the one module that knows both implementations.

`etl.db.dialect` declares the interface and imports neither implementation; `etl.db.sqlite` and
`etl.db.postgres` import it. Choosing one lives here, above all three, so that no import goes
round in a circle.
"""

from __future__ import annotations

from etl.db.dialect import Backend
from etl.db.postgres import PostgresBackend
from etl.db.sqlite import SQLiteBackend
from etl.db.url import DatabaseUrl, Dialect

BACKENDS: dict[Dialect, type[Backend]] = {"sqlite": SQLiteBackend, "postgres": PostgresBackend}


def dialect_for(url: DatabaseUrl) -> Backend:
    """The backend of ``url``'s dialect (not attached yet)."""
    return BACKENDS[url.dialect](url)
