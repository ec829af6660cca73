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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from etl.core.errors import SettingError
from etl.sources.classification.lists import (
    DEFAULT_PROVIDERS,
    ListFile,
    entries,
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
TIMEOUT_SECONDS: Final = 30.0
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
    (304, or the same bytes), ``failed`` (the old file kept, or none) or ``off``."""

    name: str
    outcome: str
    detail: str = ""

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
    record = record_of(folder, item)
    headers = {"User-Agent": USER_AGENT}
    if record.get("url") == url:  # the validators of another URL say nothing about this one
        if record.get("etag"):
            headers["If-None-Match"] = str(record["etag"])
        if record.get("last_modified"):
            headers["If-Modified-Since"] = str(record["last_modified"])
    try:
        response = session.get(url, headers=headers, timeout=timeout)
    except requests.Timeout:
        return _failed(folder, item, f"no answer within {timeout:g} s")
    except requests.ConnectionError:
        return _failed(folder, item, "cannot connect, or the connection broke off")
    except requests.exceptions.ChunkedEncodingError:
        return _failed(folder, item, "the download was cut short")
    except requests.RequestException as exc:
        return _failed(folder, item, f"{type(exc).__name__}: {_first_line(exc)}")
    if response.status_code == 304 and record:
        _write_record(folder, item, {**record, "checked_at": clock().isoformat()})
        return Fetched(item.name, "unchanged", "not modified")
    if response.status_code != 200:
        return _failed(folder, item, f"HTTP {response.status_code}")
    data = response.content
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
            "etag": response.headers.get("ETag"),
            "last_modified": response.headers.get("Last-Modified"),
            "fetched_at": record.get("fetched_at", now) if unchanged else now,
            "checked_at": now,
            "size": len(data),
            "sha256": digest,
        },
    )
    return Fetched(item.name, "unchanged" if unchanged else "new", f"{len(data):,} bytes")


def _failed(folder: Path, item: ListFile, why: str) -> Fetched:
    kept = "the old file is kept" if item.path(folder).is_file() else "no file yet"
    return Fetched(item.name, "failed", f"{why}; {kept}")


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [""])[0][:200]


def _problem(item: ListFile, data: bytes) -> str | None:
    """Why ``data`` is no list of ``item``'s kind (a page of HTML, a JSON document cut
    short), or None: read as the refresh reads it, it must hold at least one entry."""
    if entries(item, data) == 0:
        return "not a list of its kind: no entry could be read"
    return None


def _atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` at once (a reader sees the old file or the new one)."""
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)


def _write_record(folder: Path, item: ListFile, record: dict[str, Any]) -> None:
    _atomic_write(item.record_path(folder), json.dumps(record, indent=1).encode())
