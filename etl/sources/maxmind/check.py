"""Is a MaxMind DB file whole? A damaged one is exit 2 (`MaxMindError`), never a traceback.

Checked when a file is opened (named, or found in the folder), before any work:
- its layout: the 16 zero bytes that end the search tree are where its metadata puts them;
- a spread of test lookups (`PROBES`) through maxminddb's pure-Python reader, which raises
  where the C extension can crash, each record shaped as a MaxMind ASN or City record.

And on every lookup of the run: whatever the reader raises, and a record of the wrong shape,
is the same one-line `MaxMindError` (the lookups all come before any row is written).

Not caught: bytes damaged in a record no test lookup reads, that turn a map key into another
type, can still crash maxminddb's C extension (it reads any key as text); check downloads
against MaxMind's SHA-256 files (geoipupdate does).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import maxminddb

from etl.core.errors import MaxMindError

# What reading a damaged file can raise (from maxminddb's C extension or its Python decoder).
READ_ERRORS: tuple[type[Exception], ...] = (
    maxminddb.InvalidDatabaseError,
    ValueError,  # also UnicodeDecodeError
    TypeError,
    LookupError,
    AttributeError,
    OverflowError,
    RecursionError,
    struct.error,
)
_PROBE_ERRORS: tuple[type[Exception], ...] = (*READ_ERRORS, OSError)
# Test lookups at open: an address in every fourth /8 of IPv4, and a few IPv6 ones.
PROBES_V4 = tuple(f"{a}.{a * 37 % 256}.{a * 91 % 256}.{a * 13 % 256}" for a in range(1, 224, 4))
PROBES_V6 = ("2001:4860:4860::8888", "2a00:1450::1", "2600::1", "2c0f:fb50::1", "::1")


class RecordError(ValueError):
    """A record is not shaped as the database's kind holds it (a damaged data section)."""


def damaged(path: Path, why: str) -> MaxMindError:
    """The one-line error for a damaged file."""
    return MaxMindError(f"{path} is damaged ({why}); replace it, e.g. download it again")


def field(record: Any, *keys: str, kind: type | tuple[type, ...]) -> Any:
    """``record[keys[0]][keys[1]]...`` or None when absent; `RecordError` when a level is not
    a map or the value is not of ``kind`` (True is no number)."""
    value = record
    for key in keys:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise RecordError(f"{key!r} is in no map")
        value = value.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise RecordError(f"{'.'.join(keys)} is {type(value).__name__}")
    return value


def check_whole(path: Path, metadata: Any, shape: Callable[[Any], object] | None) -> None:
    """Raise `MaxMindError` when the file's layout or a test lookup shows damage; ``shape``
    checks each record found (raising `RecordError`)."""
    tree_bytes = int(metadata.node_count) * int(metadata.record_size) // 4
    try:
        with path.open("rb") as handle:
            handle.seek(tree_bytes)
            separator = handle.read(16)
    except OSError as exc:
        raise damaged(path, f"cannot be read: {exc.strerror}") from exc
    if separator != bytes(16):
        raise damaged(path, "its search tree does not end where its metadata says")
    probes = PROBES_V4 + (PROBES_V6 if int(metadata.ip_version) == 6 else ())
    try:
        with maxminddb.open_database(str(path), maxminddb.MODE_MMAP) as reader:
            for address in probes:
                record, _prefix = reader.get_with_prefix_len(address)
                if shape is not None:
                    shape(record)
    except _PROBE_ERRORS as exc:
        raise damaged(path, f"a test lookup failed: {exc}") from exc
