"""The boundary between the GreyNoise client and HTTP: an answer read whole, and the one call
the client makes (`Transport.request`). The real transport is
`etl.sources.greynoise.http.HttpSession`;
tests may pass one that answers from a script. Nothing here imports `requests`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class HttpResponse:
    """An HTTP answer, read whole."""

    status_code: int
    headers: Mapping[str, str]  # case-insensitive for the real transport
    content: bytes

    def json(self) -> Any:
        """The body parsed as JSON (raises ValueError when it is not)."""
        return json.loads(self.content)


class Transport(Protocol):
    """Sends one request to the service and reads its answer."""

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Any,
        timeout: float,
    ) -> HttpResponse:
        """Send ``body`` (as JSON, None for none); raise `etl.core.errors.TransportError` when no
        HTTP answer came back."""
        ...

    def close(self) -> None:
        """Release the connections."""
        ...
