"""The Cymru simulator speaks the bulk whois format of shared/protocols/cymru-whois.md."""

from __future__ import annotations

import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sims import Simulator, running

# The literal rows of the protocol reference, in its order.
LITERAL_ROWS = (
    "15169   | 74.125.225.229   | 74.125.225.0/24     | US | arin     | 2007-03-13 | GOOGLE, US",
    "15169   | 2001:4860:4860::8888                     | 2001:4860::/32      "
    "| US | arin     | 2005-03-14 | GOOGLE, US",
    "NA      | 10.0.0.1         | NA                  |    | other    |            | NA",
    "NA      | 193.32.71.189    | NA                  | UA | ripencc  | 2018-04-26 | NA",
)
LITERAL_HEADER = (
    "AS      | IP               | BGP Prefix          | CC | Registry | Allocated  | AS Name"
)
LITERAL_AS = "12389   | RU | ripencc  | 2005-07-01 | ROSTELECOM-AS, RU"
LITERAL_UNROUTED = (
    "NA      | 89.38.234.0      | NA                  | RO | ripencc  | 2005-11-29 | NA"
)


def talk(sim: Simulator, payload: bytes, timeout: float = 10) -> bytes:
    """Send everything, then read to EOF (as a client must)."""
    with socket.create_connection(("127.0.0.1", sim.port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture(scope="module")
def cymru(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with running("cymru", tmp_path_factory.mktemp("cymru") / "log.jsonl") as sim:
        yield sim


def test_literal_rows_of_the_protocol_reference(cymru: Simulator) -> None:
    queries = "74.125.225.229\n2001:4860:4860::8888\n10.0.0.1\n193.32.71.189\n"
    raw = talk(cymru, f"begin\nverbose\n{queries}AS12389\nend\n".encode())
    assert raw.endswith(b"\n") and b"\r" not in raw
    lines = raw.decode().splitlines()
    assert re.fullmatch(
        r"Bulk mode; whois\.cymru\.com \[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0000\]", lines[0]
    )
    assert tuple(lines[1:5]) == LITERAL_ROWS
    assert lines[5] == LITERAL_AS
    assert len(lines) == 6


def test_single_query_has_a_header(cymru: Simulator) -> None:
    lines = talk(cymru, b" -v 89.38.234.0\n").decode().splitlines()
    assert lines == [LITERAL_HEADER, LITERAL_UNROUTED]


def test_error_lines_count_from_begin_with_crlf_and_upper_case(cymru: Simulator) -> None:
    payload = b"BEGIN\r\nVERBOSE\r\nwww.example.com\r\nnot an ip\r\n74.125.225.229\r\nEND\r\n"
    lines = talk(cymru, payload).decode().splitlines()
    assert lines[1:] == [
        "Error: no ASN or IP match on line 3.",
        "Error: no ASN or IP match on line 4.",
        LITERAL_ROWS[0],
    ]


def test_flags_on_the_begin_line(cymru: Simulator) -> None:
    lines = talk(cymru, b" -r -a -c -p -f begin\n74.125.225.229\nbogus\nend").decode().splitlines()
    assert lines[1:] == [LITERAL_ROWS[0], "Error: no ASN or IP match on line 3."]


def test_multi_origin_prefix_gives_one_row_per_origin(cymru: Simulator) -> None:
    lines = talk(cymru, b"begin\nverbose\n169.226.11.11\nend\n").decode().splitlines()
    assert [line.split("|")[0].strip() for line in lines[1:]] == ["22990", "22991"]
    assert all("| 169.226.11.11    |" in line for line in lines[1:])


def test_ipv6_is_echoed_in_canonical_form(cymru: Simulator) -> None:
    lines = talk(cymru, b"begin\nverbose\n2001:4860:4860:0:0:0:0:8888\nend\n").decode().splitlines()
    assert lines[1] == LITERAL_ROWS[1]


def test_answers_stream_before_end(cymru: Simulator) -> None:
    with socket.create_connection(("127.0.0.1", cymru.port), timeout=5) as sock:
        sock.sendall(b"begin\nverbose\n74.125.225.229\n")
        received = b""
        while received.count(b"\n") < 2:
            received += sock.recv(4096)
        assert received.decode().splitlines()[1] == LITERAL_ROWS[0]
        sock.sendall(b"end\n")
        while sock.recv(4096):
            pass


def test_every_session_is_logged(cymru: Simulator) -> None:
    talk(cymru, b"begin\nverbose\n1.2.3.4\n8.8.8.8\nend\n")
    entry = cymru.entries()[-1]
    assert entry["queries"] == ["1.2.3.4", "8.8.8.8"]
    assert entry["mode"] == "bulk" and entry["ended"] is True


def test_cymruwhois_client_parses_the_answers(cymru: Simulator) -> None:
    from cymruwhois import Client

    client = Client(host="127.0.0.1", port=cymru.port)
    records = client.lookupmany_dict(["74.125.225.229", "193.32.71.189", "169.226.11.11"])
    google = records["74.125.225.229"]
    assert (google.asn, google.prefix, google.cc, google.owner) == (
        "15169",
        "74.125.225.0/24",
        "US",
        "GOOGLE, US",
    )
    assert records["193.32.71.189"].asn == "NA"
    assert records["193.32.71.189"].cc == "UA"
    assert records["169.226.11.11"].asn == "22990"  # it keeps the first of several origins


@pytest.mark.parametrize("fault", ["drop", "stall"])
def test_session_faults_cut_the_answers_short(tmp_path: Path, fault: str) -> None:
    ips = "".join(f"74.125.225.{n}\n" for n in range(1, 21))
    with running("cymru", tmp_path / "log.jsonl", "--fault", fault) as sim:
        try:
            raw = talk(sim, f"begin\nverbose\n{ips}end\n".encode(), timeout=2)
        except (ConnectionResetError, TimeoutError):
            raw = b""
    rows = [line for line in raw.decode().splitlines() if "| 74.125.225." in line]
    assert len(rows) < 20


def test_garbage_fault_mixes_junk_lines(tmp_path: Path) -> None:
    ips = "".join(f"74.125.225.{n}\n" for n in range(1, 11))
    with running("cymru", tmp_path / "log.jsonl", "--fault", "garbage") as sim:
        lines = talk(sim, f"begin\nverbose\n{ips}end\n".encode()).decode().splitlines()
    rows = [line for line in lines if re.match(r"^15169 +\| 74\.125\.225\.\d+ +\|", line)]
    assert len(rows) == 10
    assert len(lines) > 11


def test_refuse_fault_resets_before_the_banner(tmp_path: Path) -> None:
    with running("cymru", tmp_path / "log.jsonl", "--fault", "refuse") as sim:
        try:
            raw = talk(sim, b"begin\nverbose\n8.8.8.8\nend\n", timeout=2)
        except ConnectionResetError:
            raw = b""
    assert b"Bulk mode" not in raw


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    with running("cymru", tmp_path / "log.jsonl") as sim:
        sim.process.send_signal(signal.SIGTERM)
        assert sim.process.wait(timeout=10) == 0
