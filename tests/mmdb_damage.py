"""Damaged copies of MaxMind files (valid metadata, a corrupt search tree), for the tests."""

from __future__ import annotations

from pathlib import Path

import maxminddb


def tree_bytes(path: Path) -> int:
    """The size of an .mmdb file's search tree, from its metadata."""
    with maxminddb.open_database(str(path)) as reader:
        meta = reader.metadata()
    return int(meta.node_count) * int(meta.record_size) // 4


def damage_tree(source: Path, target: Path) -> Path:
    """``source`` copied to ``target`` with the second half of its search tree overwritten:
    records that point far beyond the file."""
    data = bytearray(source.read_bytes())
    size = tree_bytes(source)
    data[size // 2 : size] = b"\xff" * (size - size // 2)
    target.write_bytes(bytes(data))
    return target
