"""Why a lookup failed: every ``error`` block of GreyNoise says so under its ``error`` key, in a
short, stable phrase (null for every other status), as its last failed attempt did; kept answers
carry the key into the database unchanged. Team Cymru's reasons: test_error_reasons_cymru.py.
In memory (a scripted transport), over real sockets and against the simulator."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from etl.core.errors import TransportError
from etl.db.database import Database
from etl.db.pending import PendingAnswers
from etl.db.url import parse_database_url
from etl.refresh.commit import Committer
from etl.refresh.config import RefreshConfig
from etl.refresh.pipeline import apply_pending
from etl.report.summary import LineReporter
from etl.sources.cymru.client import Batch, IpAnswer
from etl.sources.cymru.steps import cymru_results
from etl.sources.greynoise.client import GreyNoiseAnswer, GreyNoiseClient, GreyNoiseSettings
from etl.sources.greynoise.steps import greynoise_results
from etl.sources.greynoise.transport import HttpResponse
from tests.sims import running
from tests.test_breakers import closed_port
from tests.test_greynoise_client import IPS as GREYNOISE_IPS
from tests.test_greynoise_policy import community_ok, make, not_observed_body, response

IP = "203.0.113.5"
MOMENT = datetime(2026, 12, 1, tzinfo=UTC)
REFUSED = TransportError("refused", "connection refused")
SILENT = TransportError("timed out", "no answer within 15 s", stalled=True)
THROTTLE = response(429, {"message": "slow down"}, {"Retry-After": "1"})


def replies(*answers: HttpResponse | Exception) -> Any:
    """A script that gives ``answers`` in turn (raising the exceptions), then the last again."""
    queue = list(answers)

    def script(method: str, path: str, body: Any) -> HttpResponse:
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return script


# -- in memory and over real sockets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        ((response(503),), "HTTP 503"),
        ((REFUSED,), "connection refused"),
        ((SILENT,), "no answer within 15 s"),
        ((HttpResponse(200, {}, b"{not json"),), "malformed JSON"),
        ((response(200, {"noise": "yes"}),), "not a community answer"),
        ((response(418, {"message": "teapot"}),), "HTTP 418"),
        ((THROTTLE,), "throttled 21 times"),  # MAX_THROTTLES (20) throttling 429s, and one more
        # The last failed attempt counts, whatever came before it.
        ((REFUSED, response(502)), "HTTP 502"),
        ((response(503), SILENT), "no answer within 15 s"),
        # A 404 that is not GreyNoise's answer (a web server's page): an error, "HTTP 404";
        # one of GreyNoise's cut short: "malformed JSON".
        ((response(503), HttpResponse(404, {}, b"<html>")), "HTTP 404"),
        ((response(503), HttpResponse(404, {}, b'{"ip": "203.')), "malformed JSON"),
    ],
)
def test_a_community_lookup_that_fails_says_why(
    answers: tuple[HttpResponse | Exception, ...], reason: str
) -> None:
    client, _, _ = make(replies(*answers), retries=2)
    assert list(client.lookup([IP])) == [GreyNoiseAnswer.failed(IP, reason)]


def test_answers_with_data_and_skipped_ips_have_no_reason() -> None:
    bodies = {"203.0.113.1": community_ok("GET", "/v3/community/203.0.113.1", None),
              "203.0.113.2": response(404, not_observed_body("203.0.113.2")),
              "203.0.113.3": response(400, {"message": "invalid ip"})}  # fmt: skip
    client, _, _ = make(lambda m, p, b: bodies[p.rsplit("/", 1)[1]])
    answers = list(client.lookup([*bodies, "2001:db8::1"]))
    assert {a.status for a in answers} == {"ok", "not_found", "skipped"} and len(answers) == 4
    assert all(a.error is None for a in answers)


QUICK_FOUND = {
    "data": [{"ip": ip, "internet_scanner_intelligence": {"found": True}} for ip in ("203.0.113.1",
             "203.0.113.2")],
    "request_metadata": {"ips_not_found": ["203.0.113.3"]},
}  # fmt: skip


@pytest.mark.parametrize(
    ("quick", "reason"),
    [
        (response(503), "HTTP 503"),
        (REFUSED, "connection refused"),
        (response(404, {"message": "Not Found"}), "HTTP 404"),
        (HttpResponse(200, {}, b"<html>oops"), "malformed JSON"),
        (response(200, ["not", "an", "object"]), "not a v3 answer"),
    ],
)
def test_an_enterprise_request_that_fails_gives_each_of_its_ips_the_reason(
    quick: HttpResponse | Exception, reason: str
) -> None:
    client, _, _ = make(replies(quick), mode="enterprise", retries=1)
    asked = ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
    assert sorted(client.lookup(asked), key=lambda a: a.ip) == [
        GreyNoiseAnswer.failed(ip, reason) for ip in asked
    ]


def test_an_ip_a_full_answer_does_not_mention_is_missing_from_the_answer() -> None:
    def script(method: str, path: str, body: Any) -> HttpResponse:
        if path.endswith("quick=true"):
            return response(200, QUICK_FOUND)
        item = {"ip": "203.0.113.1", "internet_scanner_intelligence": {"found": True}}
        return response(200, {"data": [item], "request_metadata": {"ips_not_found": []}})

    client, _, _ = make(script, mode="enterprise")
    answers = {a.ip: a for a in client.lookup(["203.0.113.1", "203.0.113.2", "203.0.113.3"])}
    assert answers["203.0.113.1"].status == "ok" and answers["203.0.113.1"].error is None
    assert answers["203.0.113.2"] == GreyNoiseAnswer.failed(
        "203.0.113.2", "missing from the answer"
    )
    assert answers["203.0.113.3"] == GreyNoiseAnswer.not_observed("203.0.113.3")


def test_the_greynoise_block_has_error_just_before_status() -> None:
    answers = [GreyNoiseAnswer.failed("192.0.2.2", "HTTP 503"),
               GreyNoiseAnswer.not_observed("192.0.2.1"), GreyNoiseAnswer("192.0.2.3", "skipped")]  # fmt: skip
    blocks = [json.loads(text) for text in greynoise_results(answers, MOMENT)["greynoise"]]
    assert all(list(block)[-3:] == ["error", "status", "cached_at"] for block in blocks)
    assert [(b["error"], b["status"]) for b in blocks] == [
        ("HTTP 503", "error"), (None, "not_found"), (None, "skipped"),
    ]  # fmt: skip


def test_greynoise_over_real_http_names_a_refusal_and_a_silent_server() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connections complete in the backlog; nothing ever answers
        urls = (f"http://127.0.0.1:{closed_port()}", f"http://127.0.0.1:{silent.getsockname()[1]}")
        got = []
        for url in urls:
            settings = GreyNoiseSettings(url=url, retries=1, backoff=0.01, timeout=0.3)
            client = GreyNoiseClient(settings, "k")
            got += [(a.status, a.error) for a in client.lookup([IP])]
            client.close()
    assert got == [("error", "connection refused"), ("error", "no answer within 0.3 s")]


# -- against the simulators ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "fault", "reason"),
    [
        ("community", "5xx", "HTTP 500"),
        ("community", "reset", "connection reset without an answer"),
        ("community", "malformed", "malformed JSON"),
        ("community", "slow", "no answer within 0.3 s"),
        ("enterprise", "5xx", "HTTP 500"),
        ("enterprise", "malformed", "malformed JSON"),
    ],
)
def test_each_greynoise_simulator_fault_is_the_blocks_reason(
    tmp_path: Path, mode: str, fault: str, reason: str
) -> None:
    args = ("--fault", fault, "--slow-seconds", "2")
    with running("greynoise", tmp_path / "log.jsonl", *args) as sim:
        # Three IPs, two attempts each: fewer failures in a row than trip the breaker.
        settings = GreyNoiseSettings(url=sim.url, mode=mode, rate=200, retries=1, backoff=0.01,
                                     timeout=0.3 if fault == "slow" else 10.0)  # fmt: skip
        answers = list(GreyNoiseClient(settings, "k").lookup(GREYNOISE_IPS[:3]))
    assert sorted(answers, key=lambda a: a.ip) == [
        GreyNoiseAnswer.failed(ip, reason) for ip in sorted(GREYNOISE_IPS[:3])
    ]
    blocks = [json.loads(text) for text in greynoise_results(answers, MOMENT)["greynoise"]]
    assert {(b["status"], b["error"]) for b in blocks} == {("error", reason)}


# -- kept answers -----------------------------------------------------------------------------

OLD_CYMRU = {"asn": 64501, "asns": [64501], "asn_org": "X", "country": "NL", "registry": "ripencc",
             "prefix": "198.51.100.0/24", "allocation_date": None, "status": "ok",
             "cached_at": "2026-11-30T00:00:00+00:00"}  # fmt: skip
OLD_GREYNOISE = {"noise": False, "riot": False, "classification": "unknown", "name": None,
                 "status": "not_found", "cached_at": "2026-11-30T00:00:00+00:00"}  # fmt: skip


def enrichments(db_url: str) -> dict[str, dict[str, Any]]:
    db = Database(parse_database_url(db_url))
    found = db.query_native("SELECT ip_address, enrichment FROM ip_inventory")
    db.close()
    return {ip: value if isinstance(value, dict) else json.loads(value) for ip, value in found}


def test_kept_answers_of_old_and_new_runs_are_applied_as_written(
    any_db_url: str, tmp_path: Path
) -> None:
    """A file kept by a run before the ``error`` key existed is still applied (by hand: it
    names no database), its blocks as they were; a kept answer of this version carries its
    ``error`` (null: only answers with data are kept) into the database unchanged."""
    db = Database(parse_database_url(any_db_url), create=True)
    db.ensure_schema()
    db.execute_native([  # kept answers go only to IPs the database knows
        "INSERT INTO ip_inventory (ip_address, first_seen, last_seen, enrichment) VALUES "
        f"('{ip}', '2026-11-30 00:00:00', '2026-11-30 00:00:00', '{{}}')"
        for ip in ("198.51.100.1", "198.51.100.3", "198.51.100.9")
    ])  # fmt: skip
    pending = PendingAnswers(tmp_path / "pending")
    pending.folder.mkdir()
    old = pl.DataFrame({"ip": ["198.51.100.9"], "cymru_asn": [64501], "cymru_status": ["ok"],
                        "cymru": [json.dumps(OLD_CYMRU)], "greynoise_status": ["not_found"],
                        "greynoise": [json.dumps(OLD_GREYNOISE)]})  # fmt: skip
    old.write_parquet(pending.folder / "20261130T000000000000-1.ips.parquet")
    committer = Committer(writer=None, commit_every=100)  # type: ignore[arg-type]
    answers = [GreyNoiseAnswer.not_observed("198.51.100.1"),
               GreyNoiseAnswer.failed("198.51.100.2", "HTTP 503")]  # fmt: skip
    committer.keep(greynoise_results(answers, MOMENT))
    batch = Batch(1, 1, ["198.51.100.3"])
    batch.answers = {"198.51.100.3": IpAnswer((64502,), "Y", "DE", "ripencc", None, None)}
    committer.keep(cymru_results(batch, MOMENT))
    pending.save({"ips": committer.unwritten()})
    config = RefreshConfig(db_url=any_db_url, commit_every=100)
    apply_pending(db, pending, config, LineReporter(verbosity=-1), unknown_owner=True)
    db.close()
    stored = enrichments(any_db_url)
    assert stored["198.51.100.9"] == {"cymru": OLD_CYMRU, "greynoise": OLD_GREYNOISE}
    [new] = greynoise_results(answers[:1], MOMENT)["greynoise"]
    assert stored["198.51.100.1"] == {"greynoise": json.loads(new)}
    assert stored["198.51.100.1"]["greynoise"]["error"] is None
    [cymru] = cymru_results(batch, MOMENT)["cymru"]
    assert stored["198.51.100.3"] == {"cymru": json.loads(cymru)}
    assert stored["198.51.100.3"]["cymru"]["error"] is None
    assert "198.51.100.2" not in stored  # an error is never kept
    assert pending.files() == []
