"""Write MaxMind DB (.mmdb) files of any size: the search tree built level by level with NumPy.

mmdb-writer (which encodes the data section and metadata here) keeps one Python object per
tree node, too slow for the millions of nodes of a real GeoLite2 file. This writer takes
disjoint networks as arrays and builds the whole tree in 128 vectorized steps, one per depth.
Networks live in an IPv6 tree; IPv4 networks sit at ``::a.b.c.d/96+len``, where readers look
IPv4 addresses up. It writes files only (the ETL reads them with MaxMind's own reader).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mmdb_writer import METADATA_MAGIC, Encoder

U64 = np.uint64


@dataclass
class Networks:
    """Disjoint networks of an IPv6 tree: the address split in two 64-bit halves, the prefix
    length (0-128) and an offset into the data section. Networks longer than /64 must lie in
    ``::/64`` (IPv4 networks do)."""

    high: np.ndarray
    low: np.ndarray
    length: np.ndarray
    data: np.ndarray

    @staticmethod
    def concat(parts: list[Networks]) -> Networks:
        """All networks of ``parts``, sorted by address."""
        high, low, length, data = (
            np.concatenate([getattr(p, name) for p in parts])
            for name in ("high", "low", "length", "data")
        )
        order = np.lexsort((low, high))
        return Networks(high[order], low[order], length[order], data[order])


def _keys(networks: Networks, depth: int) -> np.ndarray:
    """The first ``depth`` bits of each address (after /64 only the low half counts)."""
    if depth == 0:
        return np.zeros(networks.high.size, dtype=U64)
    if depth <= 64:
        return networks.high >> U64(64 - depth)
    return networks.low >> U64(128 - depth)


def build_tree(networks: Networks) -> tuple[np.ndarray, np.ndarray, int]:
    """(left records, right records, node count); a data record is ``node_count + 16 +
    offset`` as the format wants, an empty one ``node_count``."""
    assert not (networks.high[networks.length > 64]).any(), "long networks must be in ::/64"
    levels: list[np.ndarray] = []
    for depth in range(128):
        keys = _keys(networks, depth)[networks.length > depth]
        levels.append(keys[np.r_[True, keys[1:] != keys[:-1]]] if keys.size else keys)
    starts = np.cumsum([0] + [level.size for level in levels])
    node_count = int(starts[-1])
    lefts: list[np.ndarray] = []
    rights: list[np.ndarray] = []
    for depth, level in enumerate(levels):
        following = levels[depth + 1] if depth < 127 else np.zeros(0, dtype=U64)
        leaf_mask = networks.length == depth + 1
        leaf_keys = _keys(networks, depth + 1)[leaf_mask]
        leaf_records = networks.data[leaf_mask].astype(U64) + U64(node_count + 16)
        for bit, out in ((0, lefts), (1, rights)):
            child = level * U64(2) + U64(bit)
            record = np.full(child.size, node_count, dtype=U64)
            _place(record, child, following, U64(starts[depth + 1]) + np.arange(
                following.size, dtype=U64))  # fmt: skip
            _place(record, child, leaf_keys, leaf_records)
            out.append(record)
    return np.concatenate(lefts), np.concatenate(rights), node_count


def _place(record: np.ndarray, child: np.ndarray, keys: np.ndarray, values: np.ndarray) -> None:
    """Set ``record`` where ``child`` is one of the sorted ``keys`` to that key's value."""
    if not keys.size:
        return
    index = np.minimum(np.searchsorted(keys, child), keys.size - 1)
    hit = keys[index] == child
    record[hit] = values[index[hit]]


def _tree_bytes(left: np.ndarray, right: np.ndarray, record_size: int) -> bytes:
    if record_size == 32:
        return np.stack([left, right], axis=1).astype(">u4").tobytes()
    columns = [(left >> U64(s)) & U64(255) for s in (16, 8, 0)]
    if record_size == 28:
        columns.append(((left >> U64(24)) & U64(15)) * U64(16) + ((right >> U64(24)) & U64(15)))
    columns += [(right >> U64(s)) & U64(255) for s in (16, 8, 0)]
    return np.stack(columns, axis=1).astype(np.uint8).tobytes()


def write_mmdb(path: Path, networks: Networks, encoder: Encoder, meta: dict[str, Any]) -> int:
    """Write ``networks`` (data already in ``encoder``) to ``path`` atomically; return the
    node count. ``meta`` holds database_type, languages, description and build_epoch."""
    left, right, node_count = build_tree(networks)
    largest = node_count + 16 + encoder.data_pointer
    record_size = next(size for size in (24, 28, 32) if largest < 1 << size)
    meta = {
        "node_count": node_count,
        "record_size": record_size,
        "ip_version": 6,
        "binary_format_major_version": 2,
        "binary_format_minor_version": 0,
        **meta,
    }
    partial = path.with_suffix(".mmdb.tmp")
    with partial.open("wb") as handle:
        handle.write(_tree_bytes(left, right, record_size))
        handle.write(b"\x00" * 16)
        handle.writelines(encoder.data_list)
        handle.write(METADATA_MAGIC)
        handle.write(Encoder(cache=False).encode_meta(meta))
    os.replace(partial, path)
    return node_count
