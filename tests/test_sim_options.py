"""The simulators' options: a value outside its range is one line and exit 2, before any
socket is opened (in-process: a simulator that would start raises instead)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from testbed.sim.cymru import cli as cymru_cli
from testbed.sim.cymru import server as cymru
from testbed.sim.greynoise import cli as greynoise_cli
from testbed.sim.greynoise import server as greynoise

Invoke = Callable[..., tuple[int, str, str]]


class WouldStartError(Exception):
    """A simulator was about to serve: its options were all accepted."""


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Invoke:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise WouldStartError

    monkeypatch.setattr(cymru, "run", refuse)
    monkeypatch.setattr(greynoise, "run", refuse)

    def invoke(name: str, *args: str) -> tuple[int, str, str]:
        main = {"cymru": cymru_cli.main, "greynoise": greynoise_cli.main}[name]
        code = main(list(args))  # python -m testbed.sim.<name> ARGS
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cymru", "--fault-rate", "2"], "--fault-rate must be between 0 and 1"),
        (["greynoise", "--fault-rate", "-0.1"], "--fault-rate must be between 0 and 1"),
        (["cymru", "--fault-rate", "nan"], "--fault-rate must be between 0 and 1"),
        (["cymru", "--port", "65536"], "--port must be between 0 and 65,535"),
        (["greynoise", "--port", "-1"], "--port must be between 0 and 65,535"),
        (["cymru", "--latency-ms", "-5"], "--latency-ms must be between 0 and 60,000 ms"),
        (["cymru", "--latency-ms", "inf"], "--latency-ms must be between 0 and 60,000 ms"),
        (["cymru", "--chunk-latency-ms", "1e309"], "--chunk-latency-ms must be between 0 and"),
        (["greynoise", "--latency-ms", "nan"], "--latency-ms must be between 0 and 60,000"),
        (["greynoise", "--rate", "0"], "--rate must be more than 0 and at most 100,000"),
        (["greynoise", "--rate", "inf"], "--rate must be more than 0 and at most 100,000"),
        (["greynoise", "--daily-limit", "-1"], "--daily-limit must be between 0 and"),
        (["greynoise", "--slow-seconds", "-1"], "--slow-seconds must be between 0 and 3,600"),
        (["cymru", "--port", "http"], "--port must be a whole number"),
        (["greynoise", "--rate", "fast"], "--rate must be a number"),
        (["cymru", "--fault", "boom"], "--fault must be one of drop, stall, "),
        (["greynoise", "--log", "/"], "--log / is a folder, not a file"),
        (["cymru", "--log", "x" * 300], "--log has a file or folder name longer than 255 bytes"),
        (
            ["cymru", "--log", "/no/such/folder/c.jsonl"],
            "--log /no/such/folder/c.jsonl: the folder",
        ),
    ],
)
def test_an_option_outside_its_range_is_one_line_and_exit_2(
    sim: Invoke, args: list[str], message: str
) -> None:
    code, out, err = sim(*args)
    assert code == 2
    assert out == ""
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_values_in_range_start_the_simulator(sim: Invoke, tmp_path: Path) -> None:
    for args in (
        ["cymru", "--port", "0", "--fault-rate", "0", "--latency-ms", "0"],
        ["cymru", "--port", "65535", "--fault-rate", "1", "--log", str(tmp_path / "c.jsonl")],
        ["greynoise", "--rate", "0.5", "--daily-limit", "0", "--slow-seconds", "3600"],
    ):
        with pytest.raises(WouldStartError):
            sim(*args)
