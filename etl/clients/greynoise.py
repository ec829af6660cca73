"""GreyNoise API client (SPEC 3.3; shared/protocols/greynoise.md).

Community mode: ``GET /v3/community/{ip}`` per IPv4 address, paced by a shared token bucket
(`Pacer`) with enough worker threads in flight that the rate is actually reached, on one
keep-alive ``requests`` session. Enterprise mode: ``POST /v3/ip`` with up to 10,000 IPs.

Per-IP outcomes are values (`GreyNoiseAnswer` with status ok / not_found / error / skipped);
conditions that end GreyNoise for the run are typed errors, raised once the work in flight has
settled: `UnauthorizedError` (401/403), `QuotaExhaustedError` (daily limit, or our own
greynoise_budget setting), `ThrottledError` (a Retry-After longer than we may wait), and
`ServiceUnavailableError` from the circuit breaker: `GreyNoiseSettings.failures_to_stop`
requests in a row without an HTTP answer, or with a 5xx one (each attempt counts; any other
answer starts the count again), stop GreyNoise for the run at once, in-flight retries included.
IPs never asked because of such a stop get no answer at all: their old block stays as it was.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from etl import __version__
from etl.clients.failures import CircuitBreaker, Failure
from etl.clients.greynoise_answers import (
    GreyNoiseAnswer,
    community_answer,
    enterprise_answer,
    is_daily_limit,
    retry_after_seconds,
)
from etl.clients.pacing import Pacer
from etl.errors import (
    QuotaExhaustedError,
    ServiceError,
    ServiceUnavailableError,
    SettingError,
    ThrottledError,
    TransportError,
    UnauthorizedError,
)

__all__ = [
    "GreyNoiseAnswer",
    "GreyNoiseClient",
    "GreyNoiseSettings",
    "Pacer",
    "community_answer",
    "enterprise_answer",
    "is_daily_limit",
    "retry_after_seconds",
]

if TYPE_CHECKING:
    from etl.clients.transport import HttpResponse, Transport

MODES: Final = ("community", "enterprise")
MAX_MULTI: Final = 10_000
ENTERPRISE_WORKERS: Final = 2  # multi-IP requests in flight
SPREAD_FLOOR: Final = 1_000  # IPs per request at least, when a small run is spread out
MAX_THROTTLES: Final = 20  # throttling 429s one request may meet before it counts as an error


@dataclass(frozen=True)
class GreyNoiseSettings:
    """Where and how fast to ask GreyNoise."""

    url: str = "https://api.greynoise.io"
    mode: str = "community"
    rate: float = 10.0
    budget: int | None = None
    search_budget: int | None = None
    timeout: float = 15.0
    retries: int = 3
    backoff: float = 1.0
    max_retry_after: float = 300.0
    batch_size: int = MAX_MULTI
    failures_to_stop: int = 10  # attempts in a row without a usable answer: the breaker trips

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            mode = repr(self.mode) if isinstance(self.mode, str) else "a value that is not text"
            raise SettingError("greynoise_mode", f"must be community or enterprise, got {mode}")
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise SettingError(
                "greynoise_rate", f"must be a positive, finite number, got {self.rate}"
            )
        if self.budget is not None and self.budget < 0:
            raise SettingError("greynoise_budget", f"must be 0 or more, got {self.budget}")
        if self.search_budget is not None and self.search_budget < 0:
            raise SettingError(
                "greynoise_daily_budget", f"must leave 0 or more, got {self.search_budget}"
            )
        if not self.url.startswith(("http://", "https://")):
            raise SettingError("greynoise_url", f"must be an http(s) URL, got {self.url!r}")

    @property
    def workers(self) -> int:
        """Requests in flight: enough for the rate at up to a second of latency, at most 64."""
        return max(2, min(64, math.ceil(self.rate) + 2))


class _StopError(Exception):
    """Internal: GreyNoise is finished for this run (the reason is in ``error``)."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(str(error))
        self.error = error


class _RetryError(Exception):
    """Internal: this attempt failed in a way worth another try."""


class _ThrottledError(Exception):
    """Internal: a throttling 429; everyone waits (`Pacer.pause`), then this request retries."""


class GreyNoiseClient:
    """Looks IPs up within the rate, the budget and the service's answers."""

    def __init__(
        self,
        settings: GreyNoiseSettings,
        api_key: str,
        sleep: Callable[[float], None] = time.sleep,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``transport``: how requests are sent (by default keep-alive HTTP connections);
        ``sleep`` and ``clock``: how pacing and backoff wait, and what time it is."""
        self.settings = settings
        self._key = api_key
        self._sleep = sleep
        self.pacer = Pacer(settings.rate, clock)
        self.requests_sent = 0
        self.searches_spent = 0  # GreyNoise Searches (what search_budget caps)
        self.breaker = CircuitBreaker(settings.failures_to_stop)
        self._stopped: ServiceError | None = None
        self._lock = threading.Lock()
        if transport is None:
            from etl.clients.http import HttpSession  # loads requests (see etl.clients.http)

            transport = HttpSession(
                settings.workers,
                {"Accept": "application/json", "User-Agent": f"honeypot-etl/{__version__}"},
            )
        self.transport = transport

    def cancel(self) -> None:
        """Send no more requests (the run is stopping); IPs not asked get no answer."""
        with self._lock:
            self._stopped = self._stopped or ServiceError(
                "GreyNoise lookups cancelled", reason="cancelled"
            )

    def close(self) -> None:
        """Close the keep-alive connections."""
        self.transport.close()

    # -- public ------------------------------------------------------------------------------
    def lookup(self, ips: Iterable[str]) -> Iterator[GreyNoiseAnswer]:
        """Answers as they arrive. IPv6 is ``skipped``; IPs not reached get no answer.

        Raises the `ServiceError` that stopped GreyNoise once everything in flight is done.
        """
        wanted: list[str] = []
        for ip in ips:
            if ":" in ip:
                yield GreyNoiseAnswer(ip, "skipped")
            else:
                wanted.append(ip)
        if self.settings.mode == "community":
            yield from self._run(self._community, wanted, self.settings.workers)
        else:
            size = self.settings.batch_size
            if self.settings.search_budget:  # a full lookup costs one Search per IP
                size = min(size, self.settings.search_budget)
            chunks = _chunks(wanted, size, self.settings.budget is None)
            for answers in self._run(self._enterprise, chunks, ENTERPRISE_WORKERS):
                yield from answers
        if self._stopped is not None:
            raise self._stopped

    # -- scheduling --------------------------------------------------------------------------
    def _run(self, work: Callable[[Any], Any], items: list[Any], workers: int) -> Iterator[Any]:
        """Run ``work`` over ``items`` with at most ``workers`` in flight; yield results."""
        pending: set[Future[Any]] = set()
        queue = iter(items)
        with ThreadPoolExecutor(workers, thread_name_prefix="greynoise") as pool:
            while True:
                while len(pending) < workers and self._stopped is None:
                    item = next(queue, None)
                    if item is None:
                        break
                    pending.add(pool.submit(self._guard, work, item))
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()
                    if result is not None:
                        yield result

    def _guard(self, work: Callable[[Any], Any], item: Any) -> Any:
        try:
            return work(item)
        except _StopError as stop:
            with self._lock:
                self._stopped = self._stopped or stop.error
            return None

    # -- one request, with pacing, budget, retries -------------------------------------------
    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> HttpResponse:
        """Send one request in the next paced slot, retrying what is worth retrying."""
        failures = throttles = 0
        while True:
            delay = self.pacer.reserve()
            while delay > 0:  # then as long as a pause that began meanwhile lasts
                self._sleep(delay)
                delay = self.pacer.held()
            if self._stopped is not None:  # checked after the wait: a stop may have come since
                raise _StopError(self._stopped)
            self._spend(len(body["ips"]) if body else 1)
            try:
                response = self._send(method, path, body)
                return self._check(response)
            except _ThrottledError:
                throttles += 1
                if throttles > MAX_THROTTLES:
                    raise _RetryError from None
                continue
            except (TransportError, _RetryError):
                failures += 1
                if failures > self.settings.retries:
                    raise
                backoff = self.settings.backoff * 2 ** (failures - 1)
                self._sleep(backoff * (0.5 + random.random() / 2))  # jitter

    def _send(self, method: str, path: str, body: dict[str, Any] | None) -> HttpResponse:
        """One attempt, counted by the circuit breaker; a trip stops GreyNoise at once."""
        try:
            response = self.transport.request(
                method,
                self.settings.url.rstrip("/") + path,
                headers={"key": self._key},
                body=body,
                timeout=self.settings.timeout,
            )
        except TransportError as exc:
            self._failed(Failure(exc.failure, exc.stalled))
            raise
        if response.status_code >= 500:
            self._failed(Failure(f"HTTP {response.status_code}", stalled=False))
        else:
            self.breaker.succeeded()
        return response

    def _failed(self, failure: Failure) -> None:
        """Count a failed attempt; when the breaker trips, GreyNoise stops for the run."""
        if not self.breaker.failed(failure):
            return
        tripped = self.breaker.tripped or failure
        error = ServiceUnavailableError(
            f"GreyNoise at {self.settings.url}: {self.breaker.limit} requests in a row got no "
            f"answer ({tripped.words}): GreyNoise stopped for this run; the IPs not asked keep "
            "their old blocks",
            self.breaker.stop_reason(),
        )
        with self._lock:
            stopped = self._stopped = self._stopped or error
        raise _StopError(stopped)

    def _spend(self, searches: int) -> None:
        """Count a request about to be sent, and the ``searches`` it costs, or stop GreyNoise
        when the run's budget or Search budget would be exceeded.

        A minimal Search count: one per community request, one per IP of an enterprise
        request (a full lookup)."""
        with self._lock:
            budget, searches_left = self.settings.budget, self.settings.search_budget
            if budget is not None and self.requests_sent >= budget:
                raise _StopError(
                    QuotaExhaustedError(
                        f"GreyNoise budget of {budget} requests for this run is spent: "
                        "the IPs not asked keep their old blocks",
                        reason="budget",
                    )
                )
            if searches_left is not None and self.searches_spent + searches > searches_left:
                raise _StopError(
                    QuotaExhaustedError(
                        f"GreyNoise daily budget reached ({self.searches_spent} Searches spent "
                        f"in this run, {searches_left} were left today): GreyNoise stopped for "
                        "this run; the IPs not asked keep their old blocks",
                        reason="daily_budget",
                    )
                )
            self.requests_sent += 1
            self.searches_spent += searches

    def _check(self, response: HttpResponse) -> HttpResponse:
        """Return a usable response; raise `_RetryError` or `_StopError` for the others."""
        status = response.status_code
        if status in (401, 403):
            raise _StopError(
                UnauthorizedError(
                    f"GreyNoise refused the API key (HTTP {status}): GreyNoise stopped for this "
                    "run; check GREYNOISE_API_KEY"
                )
            )
        if status == 429:
            body = _json(response)
            if is_daily_limit(body):
                raise _StopError(
                    QuotaExhaustedError(
                        "GreyNoise daily limit reached: GreyNoise stopped for this run; "
                        "the IPs not asked keep their old blocks"
                    )
                )
            wait_for = retry_after_seconds(response.headers.get("Retry-After"))
            if wait_for is not None and wait_for > self.settings.max_retry_after:
                raise _StopError(
                    ThrottledError(
                        f"GreyNoise asked us to wait {wait_for:.0f} s: GreyNoise stopped for "
                        "this run; the IPs not asked keep their old blocks"
                    )
                )
            self.pacer.pause(wait_for if wait_for is not None else self.settings.backoff)
            raise _ThrottledError
        if status >= 500:
            raise _RetryError
        return response

    # -- the two modes -----------------------------------------------------------------------
    def _community(self, ip: str) -> GreyNoiseAnswer:
        try:
            response = self._request("GET", f"/v3/community/{ip}", None)
        except (TransportError, _RetryError):
            return GreyNoiseAnswer(ip, "error")
        if response.status_code == 400:
            return GreyNoiseAnswer(ip, "skipped")
        if response.status_code not in (200, 404):
            return GreyNoiseAnswer(ip, "error")
        try:
            return community_answer(ip, response.status_code, _json(response, strict=True))
        except ValueError:
            return GreyNoiseAnswer(ip, "error")

    def _enterprise(self, ips: list[str]) -> list[GreyNoiseAnswer]:
        try:
            response = self._request("POST", "/v3/ip", {"ips": ips})
            body = _json(response, strict=True)
            if response.status_code not in (200, 206) or not isinstance(body, dict):
                raise ValueError(f"HTTP {response.status_code}")
            asked = set(ips)
            answers = {}
            for item in body.get("data") or []:
                if isinstance(item, dict) and item.get("ip") in asked:
                    answers[item["ip"]] = enterprise_answer(item)
            for ip in (body.get("request_metadata") or {}).get("ips_not_found") or []:
                if ip in asked and ip not in answers:
                    answers[ip] = GreyNoiseAnswer.not_observed(ip)
        except (TransportError, _RetryError, ValueError, KeyError, TypeError):
            answers = {}
        return [answers.get(ip) or GreyNoiseAnswer(ip, "error") for ip in ips]


def _chunks(ips: list[str], size: int, spread: bool) -> list[list[str]]:
    """Enterprise requests: at most ``size`` IPs each. With ``spread``, fewer IPs than two
    rounds of full requests go out in twice as many requests as there are workers (at least
    `SPREAD_FLOOR` IPs each): the first answers then come back, and are written, while the
    service still works on the others. Without it (a budget counts requests), as few as
    possible."""
    if spread:
        size = min(size, max(SPREAD_FLOOR, -(-len(ips) // (2 * ENTERPRISE_WORKERS))))
    return [ips[i : i + size] for i in range(0, len(ips), size)]


def _json(response: HttpResponse, strict: bool = False) -> Any:
    try:
        return response.json()
    except (ValueError, json.JSONDecodeError):
        if strict:
            raise ValueError("malformed JSON") from None
        return None
