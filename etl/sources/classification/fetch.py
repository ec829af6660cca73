"""``honeypot-etl lists update``: every list fetched into the lists folder (SPEC 3.4), each with
a conditional request (If-None-Match / If-Modified-Since from its record), replaced atomically
(the file, then its record), and checked before it replaces anything: a download that fails,
is cut short or is no list of its kind keeps the file there was, and says so in one line.

A list whose URL is empty is switched off: it is not asked, and its file stays as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from etl.core.errors import SettingError
from etl.sources.classification.lists import (
    DEFAULT_PROVIDERS,
    ListFile,
    kind_problem,
    list_files,
    record_of,
)

if TYPE_CHECKING:
    import requests

# Where the lists come from by default (SPEC 3.4; each configurable in etl.toml).
TOR_URL: Final = "https://check.torproject.org/torbulkexitlist"
CLOUD_URL: Final = "https://raw.githubusercontent.com/rezmoss/cloud-provider-ip-addresses/main"
AWS_URL: Final = "https://ip-ranges.amazonaws.com/ip-ranges.json"
GCP_URL: Final = "https://www.gstatic.com/ipranges/cloud.json"
DATACENTERS_URL: Final = (
    "https://raw.githubusercontent.com/jhassine/server-ip-addresses/master/data/datacenters.csv"
)
# The cloud-range repository keeps some providers under another folder name than ours (Google
# Cloud: googlecloud/; cowrieprocessor asks gcp/ and gets nothing).
CLOUD_FOLDERS: Final = {"gcp": "googlecloud"}
TIMEOUT_SECONDS: Final = 30.0  # per read
DEADLINE_TIMEOUTS: Final = 10  # a whole download: this many read timeouts (5 minutes)
MAX_BYTES: Final = 64 << 20  # the largest list today (AWS) is about 1.5 MiB
USER_AGENT: Final = "honeypot-etl lists update"


@dataclass(frozen=True)
class ListUrls:
    """Where each list comes from ("" switches a list off)."""

    tor: str = TOR_URL
    cloud: str = CLOUD_URL  # base: <provider folder>/<provider folder>_ips_v4.txt, _v6.txt
    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    aws: str = AWS_URL
    gcp: str = GCP_URL
    datacenters: str = DATACENTERS_URL

    def of(self, item: ListFile) -> str:
        """The URL of ``item`` ("" when switched off)."""
        if item.kind == "cloud":
            if not self.cloud:
                return ""
            folder = CLOUD_FOLDERS.get(str(item.provider), str(item.provider))
            family = item.name.rsplit("-", 1)[1]
            return f"{self.cloud.rstrip('/')}/{folder}/{folder}_ips_{family}.txt"
        return {"tor": self.tor, "aws": self.aws, "gcp": self.gcp}.get(item.kind, self.datacenters)


@dataclass(frozen=True)
class Fetched:
    """What `update_lists` did with one list: ``outcome`` is ``new`` (replaced), ``unchanged``
    (304, or the same bytes), ``failed`` (the old file kept, or none), ``kept`` (a file there
    that lists update did not write: never replaced) or ``off``."""

    name: str
    outcome: str
    detail: str = ""
    missing: bool = False  # failed, and no earlier file of the list is there

    def line(self) -> str:
        """One line for the operator."""
        return f"{self.name}: {self.outcome}{f' ({self.detail})' if self.detail else ''}"


def update_lists(
    folder: Path,
    urls: ListUrls,
    session: requests.Session,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    timeout: float = TIMEOUT_SECONDS,
) -> list[Fetched]:
    """Fetch every list of ``urls`` into ``folder`` (made when absent, in a folder that
    exists: else `SettingError`); what became of each."""
    if not folder.is_dir():
        if folder.exists():
            raise SettingError("lists_dir", f"{folder} is a file, not a folder")
        if not folder.parent.is_dir():
            raise SettingError("lists_dir", f"{folder}: its folder {folder.parent} does not exist")
        folder.mkdir()
    return [
        _update_one(folder, item, urls.of(item), session, clock, timeout)
        for item in list_files(urls.providers)
    ]


def _update_one(
    folder: Path,
    item: ListFile,
    url: str,
    session: requests.Session,
    clock: Callable[[], datetime],
    timeout: float,
) -> Fetched:
    import requests

    if not url:
        return Fetched(item.name, "off", "its URL is empty")
    if item.path(folder).exists() and not item.record_path(folder).is_file():
        # A file of that name we did not fetch (copied in by hand, or someone else's): never
        # written over; the refresh reads it as it is.
        return Fetched(
            item.name, "kept", "not fetched by lists update (no record beside it): left as it is"
        )
    record = record_of(folder, item)
    headers = {"User-Agent": USER_AGENT}
    if record.get("url") == url:  # the validators of another URL say nothing about this one
        if record.get("etag"):
            headers["If-None-Match"] = str(record["etag"])
        if record.get("last_modified"):
            headers["If-Modified-Since"] = str(record["last_modified"])
    try:
        with session.get(url, headers=headers, timeout=timeout, stream=True) as response:
            status, etag = response.status_code, response.headers.get("ETag")
            modified = response.headers.get("Last-Modified")
            data = _body(response, timeout * DEADLINE_TIMEOUTS) if status == 200 else b""
    except requests.Timeout:
        return _failed(folder, item, f"no answer within {timeout:g} s")
    except requests.ConnectionError:
        return _failed(folder, item, "cannot connect, or the connection broke off")
    except requests.exceptions.ChunkedEncodingError:
        return _failed(folder, item, "the download was cut short")
    except requests.RequestException as exc:
        return _failed(folder, item, f"{type(exc).__name__}: {_first_line(exc)}")
    except DownloadRefusedError as exc:
        return _failed(folder, item, str(exc))
    if status == 304 and record:
        _write_record(folder, item, {**record, "checked_at": clock().isoformat()})
        return Fetched(item.name, "unchanged", "not modified")
    if status != 200:
        return _failed(folder, item, f"HTTP {status}")
    problem = _problem(item, data)
    if problem:
        return _failed(folder, item, problem)
    digest = hashlib.sha256(data).hexdigest()
    unchanged = record.get("sha256") == digest
    if not unchanged:
        _atomic_write(item.path(folder), data)
    now = clock().isoformat()
    _write_record(
        folder,
        item,
        {
            "url": url,
            "etag": etag,
            "last_modified": modified,
            "fetched_at": record.get("fetched_at", now) if unchanged else now,
            "checked_at": now,
            "size": len(data),
            "sha256": digest,
        },
    )
    return Fetched(item.name, "unchanged" if unchanged else "new", f"{len(data):,} bytes")


class DownloadRefusedError(Exception):
    """A download stopped before its end: larger than `MAX_BYTES`, or slower than its
    deadline."""


def _body(response: requests.Response, seconds: float) -> bytes:
    """The body, read in pieces: at most `MAX_BYTES` (decoded), within ``seconds`` in all (a
    server that trickles bytes resets no read timeout of ours)."""
    deadline, parts, size = time.monotonic() + seconds, [], 0
    for part in response.iter_content(chunk_size=1 << 16):
        size += len(part)
        if size > MAX_BYTES:
            raise DownloadRefusedError(f"larger than {MAX_BYTES // (1 << 20)} MiB")
        if time.monotonic() > deadline:
            raise DownloadRefusedError(f"not downloaded within {seconds:g} s")
        parts.append(part)
    return b"".join(parts)


def _failed(folder: Path, item: ListFile, why: str) -> Fetched:
    there = item.path(folder).is_file()
    kept = "the old file is kept" if there else "no file yet"
    return Fetched(item.name, "failed", f"{why}; {kept}", missing=not there)


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [""])[0][:200]


def _problem(item: ListFile, data: bytes) -> str | None:
    """Why ``data`` is no list of ``item``'s kind (`kind_problem`), or None."""
    problem = kind_problem(item, data)
    return f"not a list of its kind: {problem}" if problem else None


def _atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` at once (a reader sees the old file or the new one),
    through a new file of its own beside it (two updates at once never share one)."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    partial = Path(name)
    try:
        # mkstemp makes it readable by its owner only: a list is for every user that
        # refreshes (cron as another user), as any new file under the process's umask
        os.fchmod(handle, 0o666 & ~_umask())
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask (read by setting it, and set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_record(folder: Path, item: ListFile, record: dict[str, Any]) -> None:
    _atomic_write(item.record_path(folder), json.dumps(record, indent=1).encode())
