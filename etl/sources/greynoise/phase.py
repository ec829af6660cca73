"""The GreyNoise phase: IPs asked within the service's rate and budget, run in a thread by
`etl.refresh.runner`; answers are posted (`etl.sources.events`) in parts of `GREYNOISE_PART_ROWS`
answers, or
of what arrived within `GREYNOISE_PART_SECONDS`, whichever comes first.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from etl.core.clock import Clock, utc_now
from etl.sources.events import PartAnswered, Post, Progressed
from etl.sources.greynoise.client import GreyNoiseAnswer, GreyNoiseClient
from etl.sources.greynoise.steps import greynoise_results

GREYNOISE_PART_ROWS = 200  # answers handed to the committer at a time
GREYNOISE_PART_SECONDS = 0.5


class AnswerGroups:
    """Gathers answers into groups of at most ``rows``, or of what came within ``seconds``
    of the last group."""

    def __init__(
        self,
        rows: int = GREYNOISE_PART_ROWS,
        seconds: float = GREYNOISE_PART_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rows, self.seconds, self.clock = rows, seconds, clock
        self._group: list[GreyNoiseAnswer] = []
        self._since = clock()

    def add(self, answer: GreyNoiseAnswer) -> list[GreyNoiseAnswer]:
        """Add ``answer``; return the group it completes (else an empty list)."""
        self._group.append(answer)
        if len(self._group) >= self.rows or self.clock() - self._since >= self.seconds:
            return self.rest()
        return []

    def rest(self) -> list[GreyNoiseAnswer]:
        """The answers gathered so far (possibly none); the next group starts now."""
        group, self._group, self._since = self._group, [], self.clock()
        return group


def greynoise_phase(
    client: GreyNoiseClient, ips: list[str], post: Post, clock: Clock = utc_now
) -> None:
    """Ask GreyNoise about ``ips``; post the answers in parts as they arrive, cached at the
    time ``clock`` gives then.

    Raises the `ServiceError` that stopped GreyNoise (bad key, quota), after posting every
    answer received before it.
    """
    groups = AnswerGroups()
    try:
        for answer in client.lookup(ips):
            _post_part(groups.add(answer), post, clock)
    finally:
        _post_part(groups.rest(), post, clock)


def _post_part(answers: list[GreyNoiseAnswer], post: Post, clock: Clock) -> None:
    if answers:
        part = greynoise_results(answers, clock())
        post(PartAnswered("greynoise", part))
        post(Progressed("greynoise", part.height))
