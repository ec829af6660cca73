"""HTTP transport of the GreyNoise client: one keep-alive `requests` session behind a small
interface. Its own module, so that `requests` is imported when a client is first made (or in
the background while the database is read, see `etl.refresh.pipeline`), not by every import of etl.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from etl.core.errors import TransportError
from etl.sources.failures import connection_failure
from etl.sources.greynoise.transport import HttpResponse

__all__ = ["HttpResponse", "HttpSession"]


class HttpSession:
    """The real `Transport`: keep-alive connections to one service, ``pool_size`` of them in
    flight at most."""

    def __init__(self, pool_size: int, headers: Mapping[str, str]) -> None:
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update(headers)

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Any,
        timeout: float,
    ) -> HttpResponse:
        """Send one request; raise `TransportError` when no HTTP answer came back."""
        try:
            response = self._session.request(
                method, url, headers=dict(headers), json=body, timeout=timeout
            )
            return HttpResponse(response.status_code, response.headers, response.content)
        except requests.RequestException as exc:
            connected = isinstance(exc, requests.ReadTimeout)
            failure = connection_failure(exc, connected, timeout)
            raise TransportError(
                f"{method} {url}: {failure.words}", failure.words, failure.stalled
            ) from exc

    def close(self) -> None:
        """Close the connections."""
        self._session.close()
