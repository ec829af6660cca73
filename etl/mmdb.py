"""A vectorized reader for MaxMind DB search trees.

`MmdbTree` decodes the binary search tree of an .mmdb file into one NumPy array and walks
it for a whole column of addresses at once (32 steps for IPv4, 128 for IPv6), giving each
address its data pointer and prefix length. Records are then decoded once per distinct
pointer through the maxminddb C extension, so the cost per IP is a few array operations,
not a Python call that builds a dictionary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import maxminddb
import numpy as np
import numpy.typing as npt
import polars as pl

from etl.errors import MaxMindError

_MODE = getattr(maxminddb, "MODE_MMAP_EXT", maxminddb.MODE_AUTO)


class MmdbTree:
    """An open .mmdb file: metadata, the search tree as an array, and a record decoder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.reader = maxminddb.open_database(str(path), _MODE)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise MaxMindError(f"{path} is not a readable MaxMind DB (.mmdb) file: {exc}") from exc
        meta = self.reader.metadata()
        self.database_type: str = meta.database_type
        self.build_epoch: int = int(meta.build_epoch)
        self.node_count: int = int(meta.node_count)
        self.ip_version: int = int(meta.ip_version)
        tree_bytes = int(meta.node_count) * int(meta.record_size) // 4
        with path.open("rb") as handle:
            raw = np.frombuffer(handle.read(tree_bytes), dtype=np.uint8)
        self.records = _decode_records(raw, int(meta.record_size))
        self.ipv4_start = self._ipv4_start_node()

    def close(self) -> None:
        """Close the underlying reader."""
        self.reader.close()

    def _ipv4_start_node(self) -> int:
        node = 0
        if self.ip_version == 6:
            for _ in range(96):
                if node >= self.node_count:
                    break
                node = int(self.records[node * 2])
        return node

    def locate(
        self, packed: npt.NDArray[np.uint8], is_ipv4: bool
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
        """Walk the tree for N addresses (an N x 4 or N x 16 byte array).

        Returns each address's data pointer (0 when the database has no record) and the
        prefix length of the matched network, counted in the address's own family.
        """
        count, width = packed.shape
        if not is_ipv4 and self.ip_version == 4:
            return np.zeros(count, np.int64), np.zeros(count, np.uint8)
        start = self.ipv4_start if is_ipv4 else 0
        node = np.full(count, start, dtype=np.int64)
        depth = np.zeros(count, dtype=np.uint8)
        for bit_index in range(width * 8):
            active = node < self.node_count
            if not active.any():
                break
            bits = (packed[:, bit_index >> 3] >> (7 - (bit_index & 7))) & 1
            following = self.records[np.where(active, node, 0) * 2 + bits]
            node = np.where(active, following, node)
            depth += active.astype(np.uint8)
        pointer = np.where(node > self.node_count, node, 0)
        return pointer, depth

    def record(self, address: str) -> dict[str, Any] | None:
        """Decode the record of one address (used once per distinct data pointer)."""
        value = self.reader.get(address)
        return value if isinstance(value, dict) else None


def _decode_records(raw: npt.NDArray[np.uint8], record_size: int) -> npt.NDArray[np.int64]:
    """Both records of every node, interleaved: element 2n is node n's left record."""
    if record_size == 24:
        node = raw.reshape(-1, 6).astype(np.int64)
        left = node[:, 0] << 16 | node[:, 1] << 8 | node[:, 2]
        right = node[:, 3] << 16 | node[:, 4] << 8 | node[:, 5]
    elif record_size == 28:
        node = raw.reshape(-1, 7).astype(np.int64)
        left = (node[:, 3] & 0xF0) << 20 | node[:, 0] << 16 | node[:, 1] << 8 | node[:, 2]
        right = (node[:, 3] & 0x0F) << 24 | node[:, 4] << 16 | node[:, 5] << 8 | node[:, 6]
    elif record_size == 32:
        node = raw.reshape(-1, 8).astype(np.int64)
        left = node[:, 0] << 24 | node[:, 1] << 16 | node[:, 2] << 8 | node[:, 3]
        right = node[:, 4] << 24 | node[:, 5] << 16 | node[:, 6] << 8 | node[:, 7]
    else:
        raise MaxMindError(f"unsupported MaxMind record size {record_size}")
    return np.stack([left, right], axis=1).ravel()


def ipv4_bytes(ipv4_int: pl.Series) -> npt.NDArray[np.uint8]:
    """An N x 4 big-endian byte array from a UInt32 column."""
    values = ipv4_int.cast(pl.UInt32).to_numpy().astype(">u4")
    return values.view(np.uint8).reshape(-1, 4)


def ipv6_bytes(ipv6_packed: pl.Series) -> npt.NDArray[np.uint8]:
    """An N x 16 byte array from a Binary column of packed IPv6 addresses."""
    joined = b"".join(ipv6_packed.to_list())
    return np.frombuffer(joined, dtype=np.uint8).reshape(-1, 16)
