"""DuckDB's reads of a SQLite file, in a child process of their own.

An operator's SQLite file must be touched by one copy of SQLite per process. POSIX record
locks belong to the process: when DuckDB's bundled SQLite closes a descriptor of the file, the
locks our ``sqlite3`` connection holds on it are gone too, and the next process that closes its
last connection deletes the ``-wal`` and ``-shm`` files under us (SQLite's "How To Corrupt An
SQLite Database File", 2.2). So the refresh process never loads DuckDB's SQLite scanner: the
bulk reads (the stale selection, the status counts) run in this child, which attaches the file
READ_ONLY for each query and writes the result to a Parquet file that we read. Its locks are
its own. It imports DuckDB only (about 0.3 s to start, overlapping our own start).

Protocol, one query at a time over the child's stdin and stdout: a JSON line
``{"setup": [...], "sql": "...", "variables": {...}}``; the answer is an 8-byte length and a
JSON object, ``{"path": "<file>"}`` once the result is written or ``{"error": "..."}``. The
child writes into a folder of its own, removed when it ends; it ends when its stdin closes
(also when we are killed), and it is in a session of its own: a Ctrl-C is ours to handle.
"""

from __future__ import annotations

import json
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import duckdb

from etl.core.errors import ReaderStoppedError

if TYPE_CHECKING:
    import polars as pl

_LENGTH: Final = struct.Struct("<Q")


def _encode(value: object) -> object:
    if isinstance(value, datetime):
        return {"datetime": value.isoformat()}
    return value


def _decode(value: object) -> object:
    if isinstance(value, dict) and "datetime" in value:
        return datetime.fromisoformat(str(value["datetime"]))
    return value


class SQLiteReader:
    """A child process that runs DuckDB queries over one SQLite file (attached as ``db``),
    started at once so that its imports overlap the parent's work."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # one query at a time
        self._process: subprocess.Popen[bytes] | None = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "etl.db.reader", str(self.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # not in the terminal's group: Ctrl-C is the parent's
        )

    def query(
        self, sql: str, setup: Sequence[str] = (), variables: dict[str, object] | None = None
    ) -> pl.DataFrame:
        """Run ``setup`` statements, bind ``variables`` (``getvariable('name')``), run ``sql``;
        the result as a Polars frame. A DuckDB error in the child is raised as `duckdb.Error`
        (with the child's message), so callers treat it like one of their own connection. A
        child found ended before the query is started again; one that ends during it raises
        `ReaderStoppedError` (not retried)."""
        request = {
            "setup": list(setup),
            "sql": sql,
            "variables": {k: _encode(v) for k, v in (variables or {}).items()},
        }
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._end(self._process)
                self._process = self._start()
            process = self._process
            assert process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write(json.dumps(request).encode() + b"\n")
                process.stdin.flush()
                answer = json.loads(_read_block(process.stdout))
            except (OSError, EOFError) as exc:
                self._process = None
                code = self._end(process)
                raise ReaderStoppedError(
                    f"the process reading SQLite database {self.path} ended (exit {code}) "
                    f"during a query"
                ) from exc
        if "error" in answer:
            raise duckdb.Error(str(answer["error"]))
        import polars  # the parent's; the child never imports it

        output = Path(answer["path"])
        try:
            return polars.read_parquet(output)
        finally:
            output.unlink(missing_ok=True)

    def close(self) -> None:
        """End the child (it also ends by itself when our end of its stdin closes)."""
        process, self._process = self._process, None
        self._end(process)

    @staticmethod
    def _end(process: subprocess.Popen[bytes] | None) -> int | None:
        """Close the child's stdin, wait for it (kill it after 5 s); its exit code."""
        if process is None:
            return None
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.close()
            process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
        finally:
            process.stdout.close()
        return process.returncode


_STARTED: dict[Path, SQLiteReader] = {}


def prestart(path: Path) -> None:
    """Start the reader of the SQLite file ``path`` now, so that its start (about 0.3 s)
    overlaps our own work before the first read; the next backend of that file adopts it."""
    key = path.resolve()
    if key not in _STARTED and path.is_file():
        _STARTED[key] = SQLiteReader(path)


def adopt(path: Path) -> SQLiteReader:
    """The reader `prestart` started for ``path``, else a new one."""
    return _STARTED.pop(path.resolve(), None) or SQLiteReader(path)


def discard(path: Path) -> None:
    """End a prestarted reader that no backend adopted (the run ended before it read)."""
    reader = _STARTED.pop(path.resolve(), None)
    if reader is not None:
        reader.close()


def _read_block(stream: IO[bytes]) -> bytes:
    size = _LENGTH.unpack(_read_exactly(stream, _LENGTH.size))[0]
    return _read_exactly(stream, size)


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if data is None or len(data) != size:
        raise EOFError("the reader process closed its output")
    return data


def _write_block(stream: IO[bytes], data: bytes) -> None:
    stream.write(_LENGTH.pack(len(data)))
    stream.write(data)


def _answer(
    con: duckdb.DuckDBPyConnection, path: str, request: dict[str, Any], output: Path
) -> None:
    """Run one request on a fresh read-only attachment (it sees tables made since)."""
    con.execute(f"ATTACH '{path.replace(chr(39), chr(39) * 2)}' AS db (TYPE sqlite, READ_ONLY)")
    try:
        for statement in request["setup"]:
            con.execute(statement)
        for name, value in request["variables"].items():
            con.execute(f"SET VARIABLE {name} = $value", {"value": _decode(value)})
        target = str(output).replace("'", "''")
        con.execute(
            f"COPY ({request['sql']}) TO '{target}' (FORMAT parquet, COMPRESSION uncompressed)"
        )
    finally:
        con.execute("DETACH db")


def serve(path: str, requests: IO[bytes], answers: IO[bytes]) -> None:
    """The child's loop: answer requests until stdin closes."""
    from etl.db.extensions import load_extension, offline_connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us by closing stdin
    folder = Path(tempfile.mkdtemp(prefix="etl-reader-"))
    try:
        con = offline_connection()
        load_extension(con, "sqlite_scanner")
        con.execute("SET sqlite_all_varchar = true")
        for number, line in enumerate(requests):
            output = folder / f"result-{number}.parquet"
            try:
                _answer(con, path, json.loads(line), output)
            except duckdb.Error as exc:
                _write_block(answers, json.dumps({"error": str(exc)}).encode())
            else:
                _write_block(answers, json.dumps({"path": str(output)}).encode())
            answers.flush()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    serve(sys.argv[1], sys.stdin.buffer, sys.stdout.buffer)
