"""GreyNoise API client (SPEC 3.3; shared/protocols/greynoise.md).

Community mode: ``GET /v3/community/{ip}`` per IPv4 address, paced by a shared token bucket
(`Pacer`) with enough worker threads in flight that the rate is actually reached, on one
keep-alive ``requests`` session. Enterprise mode, quick check first: ``POST /v3/ip?quick=true``
with up to 10,000 IPs (one Search per 1,000), then the full-context ``POST /v3/ip`` (one Search
per IP) only for the IPs the quick check found; the others are ``not_found`` at once.
`Spending` (`etl.sources.greynoise.searches`) counts requests and Searches against the caps.

Per-IP outcomes are values (`GreyNoiseAnswer` with status ok / not_found / error / skipped; an
error says why its last attempt failed, `_reason`); conditions that end GreyNoise for the run
are typed errors, raised once the work in flight has settled: `UnauthorizedError` (401/403),
`QuotaExhaustedError` (daily limit; our own greynoise_budget of requests; our Search cap
``search_budget``, reason ``daily_budget``: a request is cut to the IPs it can pay for, in the
order given), `ThrottledError` (a Retry-After longer than we may wait), and
`ServiceUnavailableError` from the circuit breaker: `GreyNoiseSettings.failures_to_stop`
requests in a row without an HTTP answer, with a 5xx one, or with a 404 that is not GreyNoise's
own "not observed" answer (a wrong ``--greynoise-url``; that IP's block is an ``error``, "HTTP
404") (each attempt counts; any other answer starts the count again), stop GreyNoise for the
run at once, in-flight retries included. A request that ends in a timeout is such a failure.
A bounded time without progress (`ProgressWatch`, `GreyNoiseSettings.stall_window`): when an
attempt fails and no request got a usable answer for that long (a throttling pause counts as
progress), GreyNoise is ``stalled`` and stopped too, even if its failures were not in a row.
IPs never asked because of such a stop get no answer at all: their old block stays as it was.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, Final, NoReturn

from etl import __version__
from etl.core.errors import (
    QuotaExhaustedError,
    ServiceError,
    ServiceUnavailableError,
    ThrottledError,
    TransportError,
    UnauthorizedError,
)
from etl.sources.failures import CircuitBreaker, Failure, ProgressWatch
from etl.sources.greynoise.answers import (
    GreyNoiseAnswer,
    community_answer,
    community_not_observed,
    enterprise_answer,
    is_daily_limit,
    multi_answers,
    multi_not_observed,
    retry_after_seconds,
)
from etl.sources.greynoise.pacing import Pacer
from etl.sources.greynoise.searches import (
    BILLED_STATUSES,
    QUICK_IPS_PER_SEARCH,
    Spending,
    search_cost,
)
from etl.sources.greynoise.settings import GreyNoiseSettings

__all__ = [
    "GreyNoiseAnswer",
    "GreyNoiseClient",
    "GreyNoiseSettings",
    "Pacer",
    "community_answer",
    "enterprise_answer",
    "is_daily_limit",
    "retry_after_seconds",
    "search_cost",
]

if TYPE_CHECKING:
    from etl.sources.greynoise.transport import HttpResponse, Transport

ENTERPRISE_WORKERS: Final = 2  # chunks (a quick check, then its full lookups) in flight
SPREAD_FLOOR: Final = QUICK_IPS_PER_SEARCH  # IPs per quick check at least, when spread out
WRONG_404: Final = "HTTP 404"  # a 404 that is not GreyNoise's "not observed" (a wrong URL)
MAX_THROTTLES: Final = 20  # throttling 429s one request may meet before it counts as an error


class _StopError(Exception):
    """Internal: GreyNoise is finished for this run (the reason is in ``error``)."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(str(error))
        self.error = error


class _RetryError(Exception):
    """Internal: this attempt failed in a way worth another try (why: its message)."""


class _NotGreyNoiseError(ValueError):
    """Internal: a 404 whose body is not GreyNoise's "not observed" answer (a wrong URL's)."""


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
        self.spending = Spending(settings.budget, settings.search_budget)
        self.breaker = CircuitBreaker(settings.failures_to_stop)
        self.progress = ProgressWatch(settings.stall_window, clock)
        self._stopped: ServiceError | None = None
        self._lock = threading.Lock()
        if transport is None:
            # loads requests (see etl.sources.greynoise.http)
            from etl.sources.greynoise.http import HttpSession

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

    @property
    def requests_sent(self) -> int:
        """Requests sent so far (retries included)."""
        return self.spending.requests_sent

    @property
    def searches_spent(self) -> int:
        """Searches spent so far (requests GreyNoise did no lookup for are not billed)."""
        return self.spending.searches_spent

    # -- public ------------------------------------------------------------------------------
    def lookup(self, ips: Iterable[str]) -> Iterator[GreyNoiseAnswer]:
        """Answers as they arrive. IPv6 is ``skipped``; IPs not reached get no answer.

        Raises the `ServiceError` that stopped GreyNoise once everything in flight is done.
        """
        wanted: list[str] = []
        self.progress.begin()
        for ip in ips:
            if ":" in ip:
                yield GreyNoiseAnswer(ip, "skipped")
            else:
                wanted.append(ip)
        if self.settings.mode == "community":
            yield from self._run(self._community, wanted, self.settings.workers)
        else:
            capped = self.settings.budget is not None or self.settings.search_budget is not None
            chunks = _chunks(wanted, self.settings.batch_size, spread=not capped)
            # Under a Search cap one chunk at a time: the Searches go to the IPs in their order.
            workers = 1 if self.settings.search_budget is not None else ENTERPRISE_WORKERS
            for answers in self._run(self._enterprise, chunks, workers):
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
            self._halt(stop.error)
            return None

    def _halt(self, error: ServiceError) -> None:
        """GreyNoise is finished for this run; the first reason stays."""
        with self._lock:
            self._stopped = self._stopped or error

    # -- one request, with pacing, budget, retries -------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        searches: int = 1,
        not_observed: Callable[[Any], bool] = lambda body: False,
    ) -> HttpResponse:
        """Send one request of ``searches`` Searches in the next paced slot, retrying what is
        worth retrying (each attempt pays for itself). ``not_observed``: whether a 404's body
        is GreyNoise's own "not observed" answer; any other 404 raises `_NotGreyNoiseError`."""
        failures = throttles = 0
        while True:
            delay = self.pacer.reserve()
            while delay > 0:  # then to a new slot, if a pause began meanwhile
                self._sleep(delay)
                delay = self.pacer.woke()
            if self._stopped is not None:  # checked after the wait: a stop may have come since
                raise _StopError(self._stopped)
            self._spend(searches)
            try:
                response = self._send(method, path, body, searches, not_observed)
                return self._check(response)
            except _ThrottledError:
                throttles += 1
                if throttles > MAX_THROTTLES:
                    raise _RetryError(f"throttled {throttles} times") from None
                continue
            except (TransportError, _RetryError):
                failures += 1
                if failures > self.settings.retries:
                    raise
                backoff = self.settings.backoff * 2 ** (failures - 1)
                self._sleep(backoff * (0.5 + random.random() / 2))  # jitter

    def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        searches: int,
        not_observed: Callable[[Any], bool],
    ) -> HttpResponse:
        """One attempt, counted by the circuit breaker; a trip stops GreyNoise at once. Its
        Searches are given back when GreyNoise did no lookup (`BILLED_STATUSES`, a timeout, a
        404 that is not GreyNoise's answer: that one also counts as a failure, and raises
        `_NotGreyNoiseError`)."""
        try:
            response = self.transport.request(
                method,
                self.settings.url.rstrip("/") + path,
                headers={"key": self._key},
                body=body,
                timeout=self.settings.timeout,
            )
        except TransportError as exc:
            if not exc.stalled:  # no connection, or reset: no lookup was made
                self.spending.give_back(searches)
            self._failed(Failure(exc.failure, exc.stalled))
            raise
        if response.status_code not in BILLED_STATUSES:
            self.spending.give_back(searches)
        if response.status_code == 404 and not _answered_404(response, not_observed):
            self.spending.give_back(searches)
            self._failed(Failure(WRONG_404, stalled=False))
            raise _NotGreyNoiseError(WRONG_404)
        if response.status_code >= 500:
            self._failed(Failure(f"HTTP {response.status_code}", stalled=False))
        else:
            self.breaker.succeeded()
            self.progress.delivered()
        return response

    def _failed(self, failure: Failure) -> None:
        """Count a failed attempt; when the breaker trips, or GreyNoise answered nothing
        usable for the progress watch's window, GreyNoise stops for the run."""
        if not self.breaker.failed(failure):
            if not self.progress.stalled():
                return
            self._stop(
                f"no request answered for {self.progress.window:g} s (last: {failure.words})",
                "stalled",
            )
        tripped = self.breaker.tripped or failure
        if tripped.words == WRONG_404:
            what = (
                f"answered {WRONG_404} without a GreyNoise answer: check --greynoise-url "
                "(the server's address, without /v3)"
            )
        else:
            what = f"got no answer ({tripped.words})"
        self._stop(f"{self.breaker.limit} requests in a row {what}", self.breaker.stop_reason())

    def _stop(self, what: str, reason: str) -> NoReturn:
        """GreyNoise stops for the run: a `ServiceUnavailableError` saying ``what`` happened."""
        error = ServiceUnavailableError(
            f"GreyNoise at {self.settings.url}: {what}: "
            "GreyNoise stopped for this run; the IPs not asked keep their old blocks",
            reason,
        )
        with self._lock:
            stopped = self._stopped = self._stopped or error
        raise _StopError(stopped)

    def _spend(self, searches: int) -> None:
        try:
            self.spending.take(searches)
        except QuotaExhaustedError as spent:
            raise _StopError(spent) from None

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
            pause = wait_for if wait_for is not None else self.settings.backoff
            self.pacer.pause(pause)
            self.progress.delivered(pause)  # a wait asked for is not a stall
            raise _ThrottledError
        if status >= 500:
            raise _RetryError(f"HTTP {status}")
        return response

    # -- the two modes -----------------------------------------------------------------------
    def _community(self, ip: str) -> GreyNoiseAnswer:
        try:
            response = self._request(
                "GET",
                f"/v3/community/{ip}",
                None,
                not_observed=lambda body: community_not_observed(ip, body),
            )
            if response.status_code == 400:
                return GreyNoiseAnswer(ip, "skipped")
            if response.status_code not in (200, 404):
                raise ValueError(f"HTTP {response.status_code}")
            return community_answer(ip, response.status_code, _json(response, strict=True))
        except (TransportError, _RetryError, ValueError) as failed:
            return GreyNoiseAnswer.failed(ip, _reason(failed))

    def _enterprise(self, ips: list[str]) -> list[GreyNoiseAnswer]:
        """Quick-check ``ips``; fetch full context for the IPs it found. The IPs a Search cap
        leaves unasked get no answer (GreyNoise then stops: the cap is reached)."""
        asked = self._fitting(ips, quick=True)
        checked = self._multi(asked, quick=True)
        answers = [answer for answer in checked if answer.status != "ok"]
        try:
            answers += self._full([answer.ip for answer in checked if answer.status == "ok"])
        except _StopError as stop:  # the quick check's not_found and errors still count
            self._halt(stop.error)
        if len(asked) < len(ips):
            self._halt(self.spending.searches_spent_error())
        return answers

    def _full(self, found: list[str]) -> list[GreyNoiseAnswer]:
        """The full context of the IPs a quick check found, as many as the Search cap allows."""
        if not found:
            return []
        asked = self._fitting(found, quick=False)
        answers = self._multi(asked, quick=False)
        if len(asked) < len(found):
            self._halt(self.spending.searches_spent_error())
        return answers

    def _fitting(self, ips: list[str], quick: bool) -> list[str]:
        try:
            return self.spending.fitting(ips, quick)
        except QuotaExhaustedError as spent:
            raise _StopError(spent) from None

    def _multi(self, ips: list[str], quick: bool) -> list[GreyNoiseAnswer]:
        """One ``POST /v3/ip`` (``quick``: ``?quick=true``): an answer per IP, ``error`` (and
        why) for each when the request failed."""
        path = "/v3/ip?quick=true" if quick else "/v3/ip"
        try:
            response = self._request(
                "POST",
                path,
                {"ips": ips},
                search_cost(len(ips), quick),
                not_observed=lambda body: multi_not_observed(body, ips),
            )
            if response.status_code not in (200, 206, 404):
                raise ValueError(f"HTTP {response.status_code}")
            answers = multi_answers(_json(response, strict=True), ips)
        except (TransportError, _RetryError, ValueError) as failed:
            return [GreyNoiseAnswer.failed(ip, _reason(failed)) for ip in ips]
        return [answers[ip] for ip in ips]


def _chunks(ips: list[str], size: int, spread: bool) -> list[list[str]]:
    """Enterprise chunks (one quick check each): at most ``size`` IPs. With ``spread``, fewer
    IPs than two rounds of full chunks go out in about twice as many chunks as there are
    workers, each a multiple of `SPREAD_FLOOR` IPs (a quick check bills per started 1,000):
    the first answers then come back, and are written, while the service still works on the
    others. Without it (a cap counts requests or Searches), as few as possible."""
    if spread:
        share = -(-len(ips) // (2 * ENTERPRISE_WORKERS))
        size = min(size, max(SPREAD_FLOOR, -(-share // SPREAD_FLOOR) * SPREAD_FLOOR))
    return [ips[i : i + size] for i in range(0, len(ips), size)]


def _answered_404(response: HttpResponse, not_observed: Callable[[Any], bool]) -> bool:
    """Whether a 404 is GreyNoise's: its not-observed answer, or a garbled JSON body (the
    request then fails as "malformed JSON", like any answer cut short). Any other 404 (JSON
    that is not GreyNoise's answer, such as ``{"message": "Not Found"}``, or an HTML page) is
    a wrong URL's."""
    body = _json(response)
    if body is None and response.content.lstrip()[:1] in (b"{", b"["):
        return True
    return not_observed(body)


def _reason(failed: Exception) -> str:
    """Why a request has no usable answer, for the block: the transport's words ("connection
    refused", "no answer within 15 s"), else the message ("HTTP 503", "malformed JSON")."""
    return failed.failure if isinstance(failed, TransportError) else str(failed)


def _json(response: HttpResponse, strict: bool = False) -> Any:
    try:
        return response.json()
    except (ValueError, json.JSONDecodeError):
        if strict:
            raise ValueError("malformed JSON") from None
        return None
