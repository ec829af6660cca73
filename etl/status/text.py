"""The status report as plain text for a terminal (`render`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from etl.status.collect import STATES, SearchStatus, StatusReport

_HEADINGS = {"never": "never asked", "not_needed": "not needed", "not_known": "not known"}
_CYMRU_ONLY = ("not_needed", "not_known")


def _unlinked(report: StatusReport) -> str:
    """The sessions the loader left without source_ip (a refresh links them)."""
    line = (
        f"{report.unlinked_sessions:,} sessions not linked to their IP yet "
        f"({report.unlinked_ips:,} IPs new, not yet enriched)"
    )
    if report.sessions_without_address:
        line += (
            f"; {report.sessions_without_address:,} sessions name no address in their raw events "
            "(left as they are)"
        )
    return line


def render(report: StatusReport) -> str:
    """The report in plain text: freshness per source, what goes stale this week, the
    GreyNoise Searches of today, the MaxMind builds, the last runs, and the notes."""
    at = datetime.fromisoformat(report.at)
    lines = [
        f"status of {report.database} at {at:%Y-%m-%d %H:%M} UTC",
        f"{report.inventory_ips:,} IPs ({report.session_only_ips:,} seen only in sessions so "
        f"far); never asked anything: {report.bogons:,} bogons or not IPs, {report.unusable:,} "
        "rows whose enrichment is not a JSON object",
        _unlinked(report),
        "",
        *_freshness(report),
        "",
        *_forecast(report),
        "",
        _searches(report.searches),
        *_maxmind(report),
        _lists(report),
        "",
        *_runs(report.runs),
    ]
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)


def _name_width(report: StatusReport) -> int:
    """The first column's width: the longest source name, and a space."""
    return max(len("goes stale"), *map(len, report.sources)) + 1


def _freshness(report: StatusReport) -> list[str]:
    headings = [_HEADINGS.get(state, state) for state in STATES]
    width = _name_width(report)
    lines = [f"{'source':<{width}}" + "".join(f"{h:>13}" for h in headings) + f"{'due now':>13}"]
    for name, source in report.sources.items():
        cells = [
            "-" if state in _CYMRU_ONLY and name != "cymru" else f"{source.states[state]:,}"
            for state in STATES
        ]
        due = f"{source.due:,}" if source.askable else "-"
        lines.append(f"{name:<{width}}" + "".join(f"{c:>13}" for c in cells) + f"{due:>13}")
    lines += [
        "(due now: stale, in error or never asked; Cymru is needed only for IPs with no MaxMind",
        " ASN; not known: IPs seen only in sessions, which MaxMind has not looked up yet)",
    ]
    if not all(source.askable for source in report.sources.values()):
        lines.append("(due now -: a refresh does not ask it: skipped, or the labels without lists)")
    return lines


def _forecast(report: StatusReport) -> list[str]:
    days = list(next(iter(report.sources.values())).going_stale)
    width = _name_width(report)
    lines = [f"{'goes stale':<{width}}" + "".join(f"{day[5:]:>9}" for day in days)]
    lines[0] += "  (UTC days)"
    for name, source in report.sources.items():
        counts = "".join(f"{n:>9,}" for n in source.going_stale.values())
        lines.append(f"{name:<{width}}" + counts)
    return lines


def _searches(searches: SearchStatus) -> str:
    spent = f"{searches.spent:,} spent"
    if searches.reserved:
        spent += f", {searches.reserved:,} reserved by a run still running or killed"
    if searches.daily_budget is None:
        budget = "no daily budget set (--greynoise-daily-budget)"
    else:
        budget = f"{searches.left:,} left of the daily budget of {searches.daily_budget:,}"
    return f"GreyNoise Searches on {searches.day} (UTC): {spent}; {budget}"


def _maxmind(report: StatusReport) -> list[str]:
    if not report.maxmind:
        return ["MaxMind: no database found"]
    return [
        f"MaxMind {build.kind.upper() if build.kind == 'asn' else 'City'}: {build.path}, built "
        f"{build.built[:10]} ({build.age_days:g} days ago)"
        for build in report.maxmind
    ]


def _lists(report: StatusReport) -> str:
    if not report.lists:
        return (
            f"lists: none in {report.lists_dir} (`honeypot-etl lists update` fetches them; "
            "no labels until then)"
        )
    oldest = max(report.lists, key=lambda item: item.age_days)
    line = (
        f"lists: {len(report.lists)} in {report.lists_dir}, the oldest {oldest.name} "
        f"({oldest.age_days:g} days)"
    )
    old = [f"{item.name} ({item.age_days:g} days)" for item in report.lists if item.old]
    if old:
        line += f"; OLD: {', '.join(old)}"
    if report.lists_missing:
        line += f"; missing: {', '.join(report.lists_missing)}"
    return line


def _runs(runs: list[dict[str, Any]]) -> list[str]:
    if not runs:
        return ["last runs: none in the run log"]
    lines = [
        "last runs:",
        f"{'run':>6}  {'started (UTC)':<16} {'minutes':>7}  {'outcome':<11} {'exit':>4} "
        f"{'selected':>9} {'written':>9} {'Searches':>9} {'errors':>7}  stopped",
    ]
    for run in runs:
        started = datetime.fromisoformat(run["started_at"])
        minutes = "-"
        if run["ended_at"]:
            minutes = (
                f"{(datetime.fromisoformat(run['ended_at']) - started).total_seconds() / 60:.1f}"
            )
        searches = run["greynoise_searches"]
        if searches is None:  # running, or killed: what it may spend
            searches = f"<={run['greynoise_search_cap']}" if run["greynoise_search_cap"] else "?"
        lines.append(
            f"{run['run_id']:>6}  {started:%Y-%m-%d %H:%M} {minutes:>7}  {run['outcome']:<11} "
            f"{_blank(run['exit_code']):>4} {run['selected']:>9,} {run['ip_rows_written']:>9,} "
            f"{searches!s:>9} {run['errors']:>7,}  {run['stopped'] or ''}"
        )
    return lines


def _blank(value: object) -> str:
    return "" if value is None else str(value)
