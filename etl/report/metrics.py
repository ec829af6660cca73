"""The metrics files, in Prometheus text exposition format for node_exporter's textfile
collector, each written atomically: the run's (`write_metrics`, at the end of every run,
successful or not) and the state's (`render_state_metrics`, written by ``honeypot-etl status
--metrics-file`` without a refresh: the IPs due per source, the installed version). The two
files share no series, so the collector reads both.

The last success time survives failed runs: it is carried over from the previous file, so an
alert on ``time() - honeypot_etl_last_success_timestamp_seconds`` fires when refreshes keep
failing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path

from etl.core.vocabulary import STATUSES
from etl.report.summary import RunSummary, atomic_write

PREFIX = "honeypot_etl"
_LAST_SUCCESS = re.compile(rf"^{PREFIX}_last_success_timestamp_seconds (\S+)$", re.MULTILINE)


def _previous_success(path: Path) -> float | None:
    try:
        found = _LAST_SUCCESS.search(path.read_text(encoding="utf-8"))
    except OSError:
        return None
    try:
        return float(found.group(1)) if found else None
    except ValueError:
        return None


def _metric(lines: list[str], name: str, help_text: str, samples: list[tuple[str, float]]) -> None:
    lines.append(f"# HELP {PREFIX}_{name} {help_text}")
    lines.append(f"# TYPE {PREFIX}_{name} gauge")
    for labels, value in samples:
        lines.append(f"{PREFIX}_{name}{labels} {exact(value)}")


def exact(value: float) -> str:
    """A sample value never rounded: integers as integers, other numbers in the shortest form
    that reads back as the same float (a Unix time keeps its microseconds, 1.79e+09 never)."""
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


def _stop_labels(source: str, summary: RunSummary) -> str:
    stop = summary.stopped.get(source)
    return f'{{source="{source}",reason="{stop.reason if stop else ""}"}}'


def render_metrics(
    summary: RunSummary, success: bool, now: float, last_success: float | None
) -> str:
    """The exposition text of one run."""
    lines: list[str] = []
    _metric(lines, "last_run_success", "1 if the last run completed, 0 if it aborted.",
            [("", 1 if success else 0)])  # fmt: skip
    _metric(lines, "last_run_timestamp_seconds", "When the last run ended (Unix time).",
            [("", now)])  # fmt: skip
    _metric(lines, "last_run_exit_code",
            "Exit code of the last run: 0 completed, 1 aborted, 2 bad usage, 3 completed with "
            "a source stopped by its configuration or reachability.",
            [("", summary.exit_code)])  # fmt: skip
    if last_success is not None:
        _metric(lines, "last_success_timestamp_seconds",
                "When a run last completed (Unix time).", [("", last_success)])  # fmt: skip
    _metric(lines, "run_seconds", "Wall time of the last run.", [("", summary.wall_seconds)])
    _metric(lines, "phase_seconds", "Seconds per phase in the last run.",
            [(f'{{phase="{p}"}}', s) for p, s in summary.phase_seconds.items()])  # fmt: skip
    _metric(lines, "selected_ips", "IPs selected as stale in the last run.",
            [("", summary.selected)])  # fmt: skip
    _metric(lines, "bogon_ips", "Selected IPs that are bogons or not IP addresses.",
            [("", summary.bogons)])  # fmt: skip
    samples = [
        (f'{{source="{source}",status="{status}"}}', getattr(counts, status))
        for source, counts in summary.sources.items()
        for status in STATUSES
    ]
    _metric(lines, "source_ips", "IPs per source and status in the last run.", samples)
    _metric(lines, "rows_written", "Rows upserted in the last run, per table.",
            [('{table="ip_inventory"}', summary.upserted),
             ('{table="asn_inventory"}', summary.asn_upserted)])  # fmt: skip
    _metric(lines, "sessions_linked",
            "Sessions the loader had left without source_ip, linked to their IP in the last run.",
            [("", summary.sessions_linked)])  # fmt: skip
    _metric(lines, "snapshots_filled",
            "Sessions whose NULL snapshot columns were filled in the last run (a session "
            "filled in two steps, before and after a late answer, counts twice).",
            [("", summary.snapshots_filled)])  # fmt: skip
    _metric(lines, "raw_event_ips",
            "Selected new IPs found through the raw events of unlinked sessions.",
            [("", summary.raw_event_ips)])  # fmt: skip
    _metric(lines, "cymru_batches", "Team Cymru chunks sent in the last run.",
            [("", summary.cymru_batches)])  # fmt: skip
    _metric(lines, "cymru_as_lookups_failed",
            "Team Cymru AS lookups (Tier 1 AS<n> queries) left without an answer in the last "
            "run (asked again by the next run).",
            [("", summary.cymru_as_lookups_failed)])  # fmt: skip
    _metric(lines, "cymru_sessions",
            "Team Cymru bulk sessions tried in the last run (refused and retried ones too).",
            [("", summary.cymru_sessions)])  # fmt: skip
    _metric(lines, "asn_numbers",
            "AS numbers whose registration data the last run asked Team Cymru for, and of "
            "them those answered.",
            [('{state="asked"}', summary.asn_asked),
             ('{state="answered"}', summary.asn_details)])  # fmt: skip
    _metric(lines, "greynoise_requests", "GreyNoise requests sent in the last run.",
            [("", summary.greynoise_requests)])  # fmt: skip
    _metric(lines, "greynoise_searches",
            "GreyNoise Searches spent in the last run (full context: one per IP; quick check: "
            "one per 1,000 IPs of a request; community: one per lookup).",
            [("", summary.greynoise_searches)])  # fmt: skip
    _metric(lines, "source_stopped",
            "1 if the source was stopped for the rest of the last run, with the reason "
            "(key_refused, unreachable, stalled: exit 3; daily_limit, budget, daily_budget, "
            "throttled, cancelled: exit 0 or 1), else 0.",
            [(_stop_labels(source, summary), 1 if source in summary.stopped else 0)
             for source in summary.sources if source != "maxmind"])  # fmt: skip
    if summary.maxmind_build_epochs:
        _metric(lines, "maxmind_build_timestamp_seconds",
                "Build time of each MaxMind database the run opened (Unix time).",
                [(f'{{database="{kind}"}}', epoch)
                 for kind, epoch in sorted(summary.maxmind_build_epochs.items())])  # fmt: skip
        _metric(lines, "maxmind_database_missing",
                "1 if the run looked for this MaxMind database in its folder and did not find "
                "it (its build time is then 0), else 0.",
                [(f'{{database="{kind}"}}', 0 if epoch else 1)
                 for kind, epoch in sorted(summary.maxmind_build_epochs.items())])  # fmt: skip
    _list_metrics(lines, summary)
    return "\n".join(lines) + "\n"


def _list_metrics(lines: list[str], summary: RunSummary) -> None:
    """The infrastructure lists' ages (SPEC 3.4), when the run read lists."""
    if not summary.list_ages and not summary.lists_missing:
        return
    ages = sorted(summary.list_ages.items())
    _metric(lines, "list_age_seconds",
            "Seconds since the source of each infrastructure list the run read last confirmed "
            "it (at the run's start).",
            [(f'{{list="{name}"}}', age) for name, age in ages])  # fmt: skip
    _metric(lines, "list_old",
            "1 if the list is past the age that gets a warning (Tor 2 days, the others 30), "
            "else 0.",
            [(f'{{list="{name}"}}', 1 if name in summary.lists_old else 0)
             for name, _ in ages])  # fmt: skip
    _metric(lines, "list_missing",
            "1 if the run looked for this infrastructure list in its folder and did not find "
            "it (the labels it gives are not assigned), else 0.",
            [(f'{{list="{name}"}}', 1 if name in summary.lists_missing else 0)
             for name in sorted([*summary.list_ages, *summary.lists_missing])])  # fmt: skip


def metrics_text(path: Path, summary: RunSummary, success: bool) -> str:
    """The metrics file's new content, keeping the last success time of the one at ``path``."""
    now = time.time()
    last_success = now if success else _previous_success(path)
    return render_metrics(summary, success, now, last_success)


def write_metrics(path: Path, summary: RunSummary, success: bool) -> None:
    """Write the metrics file atomically, keeping the last success time of earlier runs."""
    atomic_write(path, metrics_text(path, summary, success))


def render_state_metrics(due: Mapping[str, int], version: str, at: float) -> str:
    """The exposition text of the state: per source the IPs due now (``due``: what
    ``honeypot-etl status`` calls due now), the version, and when it was counted (Unix time)."""
    lines: list[str] = []
    _metric(lines, "info", "The installed honeypot-etl, by version (always 1).",
            [(f'{{version="{version}"}}', 1)])  # fmt: skip
    _metric(lines, "due_ips",
            "IPs due for a refresh now, per source: stale, in error or never asked (what "
            "honeypot-etl status calls due now).",
            [(f'{{source="{source}"}}', count) for source, count in due.items()])  # fmt: skip
    _metric(lines, "state_timestamp_seconds",
            "When honeypot-etl status counted the IPs due (Unix time).", [("", at)])  # fmt: skip
    return "\n".join(lines) + "\n"
