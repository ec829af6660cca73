"""The phase runner: events reach the main thread in order, a phase's error is raised there, a
stop cancels every phase and hands back what was not taken; only the main thread counts."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.core.errors import QuotaExhaustedError
from etl.refresh.network import account
from etl.refresh.runner import PhaseRunner
from etl.report.summary import RunSummary
from etl.sources.cymru.client import CymruClient, CymruSettings
from etl.sources.cymru.phase import Tier1Plan, cymru_phase
from etl.sources.events import Event, Noted, PartAnswered, PhaseDone, PhaseStopped, Post, Progressed
from etl.sources.greynoise.client import GreyNoiseAnswer, GreyNoiseClient, GreyNoiseSettings
from etl.sources.greynoise.phase import AnswerGroups, greynoise_phase
from etl.sources.network import Phase
from testbed.sample.world import World
from tests.sims import Simulator, running

WORLD = World(1)
KEY = "runner-test-key"


def counting(source: str, n: int) -> Callable[[Post], None]:
    def body(post: Post) -> None:
        for i in range(n):
            post(Progressed(source, i))

    return body


def never() -> None:
    """A cancel for phases that end on their own."""


def taken(runner: PhaseRunner, idle: float = 0.05) -> list[Event]:
    return [event for event in runner.events(idle) if event is not None]


def of(source: str, events: list[Event]) -> list[Event]:
    return [e for e in events if getattr(e, "source", None) == source]


def phase_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("phase-")]


def test_events_reach_the_main_thread_in_the_order_posted() -> None:
    runner = PhaseRunner([Phase(name, 500, counting(name, 500), never) for name in ("a", "b")])
    runner.start()
    events = taken(runner)
    for name in ("a", "b"):
        mine = of(name, events)
        assert [e.done for e in mine[:-1] if isinstance(e, Progressed)] == list(range(500))
        assert isinstance(mine[-1], PhaseDone) and mine[-1].seconds >= 0
    assert len(events) == 2 * 501
    assert not runner.running
    assert not phase_threads()  # joined once every phase has ended


def test_a_failing_phase_raises_its_error_on_the_main_thread() -> None:
    error = ValueError("a bug in a phase")

    def broken(post: Post) -> None:
        post(Noted("before the bug"))
        raise error

    runner = PhaseRunner([Phase("a", 1, broken, never)])
    runner.start()
    seen: list[Event] = []
    with pytest.raises(ValueError) as raised:
        for event in runner.events(0.05):
            if event is not None:
                seen.append(event)
    assert raised.value is error
    assert seen == [Noted("before the bug")]


def test_a_service_error_stops_its_phase_only() -> None:
    def refused(post: Post) -> None:
        post(Progressed("greynoise", 1))
        raise QuotaExhaustedError("GreyNoise: daily limit reached")

    runner = PhaseRunner(
        [Phase("greynoise", 2, refused, never), Phase("cymru", 3, counting("cymru", 3), never)]
    )
    runner.start()
    events = taken(runner)
    progressed, stopped = of("greynoise", events)
    assert progressed == Progressed("greynoise", 1)
    assert isinstance(stopped, PhaseStopped) and stopped.seconds >= 0
    assert (stopped.message, stopped.reason, stopped.exit_code) == (
        "GreyNoise: daily limit reached",
        "daily_limit",
        0,
    )
    assert isinstance(of("cymru", events)[-1], PhaseDone)


def test_stop_cancels_every_phase_and_returns_the_events_not_taken() -> None:
    cancelled = {name: threading.Event() for name in ("a", "b")}

    def until_cancelled(name: str) -> Callable[[Post], None]:
        def body(post: Post) -> None:
            post(Progressed(name, 1))
            cancelled[name].wait(30)
            post(Progressed(name, 2))  # what was in flight when the run stopped

        return body

    runner = PhaseRunner([Phase(n, 2, until_cancelled(n), cancelled[n].set) for n in cancelled])
    runner.start()
    first = next(event for event in runner.events(1.0) if event is not None)
    started = time.monotonic()
    undelivered = runner.stop(wait=5.0)
    assert time.monotonic() - started < 2.0
    assert all(flag.is_set() for flag in cancelled.values())
    for name in cancelled:
        mine = of(name, [first, *undelivered])
        assert [e for e in mine if isinstance(e, Progressed)] == [
            Progressed(name, 1),
            Progressed(name, 2),
        ]
        assert isinstance(mine[-1], PhaseDone)
    assert not phase_threads()


def test_stop_waits_no_longer_than_its_deadline() -> None:
    release = threading.Event()
    runner = PhaseRunner([Phase("stuck", 1, lambda post: release.wait(30) and None, never)])
    runner.start()
    started = time.monotonic()
    assert runner.stop(wait=0.2) == []
    assert time.monotonic() - started < 1.5
    release.set()


# -- the real phases: they post, the main thread counts ------------------------------------


class ThreadRecorder:
    """A reporter that records every call with the thread it came from."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], int]] = []

    def __getattr__(self, method: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            self.calls.append((method, args, threading.get_ident()))

        return record

    def total(self, method: str, phase: str) -> int:
        return sum(args[1] for name, args, _ in self.calls if name == method and args[0] == phase)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[tuple[Simulator, Simulator]]:
    with (
        running("greynoise", tmp_path / "gn.jsonl", "--key", KEY) as greynoise,
        running("cymru", tmp_path / "cymru.jsonl") as cymru,
    ):
        yield greynoise, cymru


def finishing(body: Callable[[Post], None], done: threading.Event) -> Callable[[Post], None]:
    def run(post: Post) -> None:
        try:
            body(post)
        finally:
            done.set()

    return run


def test_the_phases_only_post_and_the_main_thread_counts(
    services: tuple[Simulator, Simulator],
) -> None:
    gn_sim, cymru_sim = services
    ips = [ip for ip in WORLD.attacking_ips(600, np.random.default_rng(5)) if ":" not in ip]
    asns = tuple(sorted(WORLD.systems)[:5])
    greynoise = GreyNoiseClient(GreyNoiseSettings(url=gn_sim.url, rate=500, backoff=0.01), KEY)
    cymru = CymruClient(CymruSettings(host="127.0.0.1", port=cymru_sim.port, batch_size=100))
    done = {"cymru": threading.Event(), "greynoise": threading.Event()}
    bodies = {
        "cymru": lambda post: cymru_phase(cymru, ips, Tier1Plan(asns), post),
        "greynoise": lambda post: greynoise_phase(greynoise, ips, post),
    }
    runner = PhaseRunner(
        [Phase(name, len(ips), finishing(bodies[name], done[name]), never) for name in done]
    )
    summary, reporter = RunSummary(), ThreadRecorder()
    runner.start()
    try:
        assert all(flag.wait(60) for flag in done.values())
        # Both phases have done all their work: nothing is counted or reported yet.
        assert summary == RunSummary() and reporter.calls == []
        parts: dict[str, list[pl.DataFrame]] = {"cymru": [], "greynoise": []}
        for event in runner.events(0.05):
            if event is not None:
                account(event, summary, reporter)
            if isinstance(event, PartAnswered):
                parts[event.source].append(event.frame)
    finally:
        greynoise.close()
    assert {ident for *_, ident in reporter.calls} == {threading.get_ident()}
    for source in ("cymru", "greynoise"):
        answered = pl.concat(parts[source])[f"{source}_status"]
        assert sorted(pl.concat(parts[source])["ip"].to_list()) == sorted(ips)
        assert summary.sources[source].queried == len(ips)
        assert summary.sources[source].ok == int((answered == "ok").sum()) > 0
        assert source in summary.phase_seconds
    said = [args[0] for name, args, _ in reporter.calls if name == "info"]
    lines = [line for line in said if line.startswith("Cymru batch ")]
    assert len(lines) == summary.cymru_batches >= len(parts["cymru"]) >= 2
    late = r" \(AS numbers named in the answers\)"
    pattern = rf"Cymru batch \d+(/\d+|{late}): \d+ IPs enriched(, \d+ ASNs)?"
    assert all(re.fullmatch(pattern, line) for line in lines)
    # The AS numbers planned, then those the answers named: all asked, all counted.
    more = [re.fullmatch(r"cymru: (\d+) more AS numbers to ask, named in the answers", line)
            for line in said if line not in lines]  # fmt: skip
    assert all(more) and summary.asn_asked == len(asns) + sum(int(m[1]) for m in more if m)
    assert summary.asn_details >= len(asns)
    assert reporter.total("advanced", "greynoise") == len(ips)
    assert reporter.total("advanced", "cymru") == len(ips) + len(asns)


# -- GreyNoise answers in parts ------------------------------------------------------------


@given(st.lists(st.floats(0, 0.3), max_size=300), st.integers(1, 40))
def test_answer_groups_keep_every_answer_once_in_order(steps: list[float], rows: int) -> None:
    now = [0.0]
    groups = AnswerGroups(rows=rows, seconds=0.5, clock=lambda: now[0])
    answers = [GreyNoiseAnswer(f"192.0.2.{i % 250}", "ok") for i in range(len(steps))]
    handed: list[GreyNoiseAnswer] = []
    since = 0.0
    for step, answer in zip(steps, answers, strict=True):
        now[0] += step
        group = groups.add(answer)
        assert len(group) <= rows
        if group:
            assert len(group) == rows or now[0] - since >= 0.5
            since = now[0]
        handed += group
    handed += groups.rest()
    assert handed == answers
