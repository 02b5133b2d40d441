"""The status page's HTML: the fleet (``/``) and one target (``/targets/<name>``), from the view model.

Pure functions of the model: no I/O, and the clock is the model's ``generated_at``. The markup works without
script (``status.js`` only refreshes ``<main>`` in place; ``<noscript>`` falls back to a meta refresh) and under a
strict CSP: no inline script, style or event handler. Every URL is relative, so the pages work behind a reverse
proxy that serves them under a path prefix.

Every string from the model that is not comfywatch's own fixed text may come from a server or a config (labels,
URLs, versions, node packs, canary names): each goes through :func:`~comfywatch.status.svg.esc`, which makes it
encodable, escapes it and cuts it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from urllib.parse import quote

from comfywatch import __version__
from comfywatch.state import CANARY_STEPS
from comfywatch.status import svg
from comfywatch.status.model import (
    WINDOW,
    CanarySummary,
    CloudSummary,
    EventView,
    FailureSummary,
    FleetStatus,
    Memory,
    Problem,
    Series,
    TargetDetail,
    TargetSummary,
    duration_text,
)
from comfywatch.status.svg import DASH, clean, esc, format_bytes, format_seconds, format_usd

__all__ = ["PAGE_SIZE", "render_fleet", "render_target"]

#: Rows of the fleet table per page: a thousand targets make ten pages of bounded size.
PAGE_SIZE = 100
#: Problems listed in a fleet row (a target with many broken workflows must not make the page huge); the target
#: page lists up to :data:`MAX_PROBLEMS_DETAIL`.
MAX_PROBLEMS_ROW = 4
MAX_PROBLEMS_DETAIL = 50
#: Page links around the current one in the fleet's page navigation.
PAGE_LINKS_AROUND = 2
#: What ``<noscript>`` refreshes at; ``status.js`` refreshes every 15 s while the page is visible.
NOSCRIPT_REFRESH_SECONDS = 30

#: The symbol beside each state's word: the word carries the meaning, the symbol and colour help scanning.
_SYMBOLS = {"up": "✓", "down": "✗", "degraded": "▲", "pending": "○"}
#: The counts line's order: the good news first, as people say it.
_COUNT_ORDER = ("up", "down", "degraded", "pending")


class _Ids:
    """Unique ids for one page's drawings (each SVG's title and desc are referenced by id)."""

    def __init__(self) -> None:
        self._count = 0

    def __call__(self, kind: str) -> str:
        self._count += 1
        return f"{kind}{self._count}"


# ----------------------------------------------------------------------------------------------------------
# Small pieces.


def _quoted(name: str) -> str:
    """A target name as one path segment (names are restricted, but a ':' alone would read as a scheme)."""
    return esc(quote(clean(name), safe=""))


def _iso(timestamp: float) -> str | None:
    if not math.isfinite(timestamp):
        return None
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return None


def _ago_words(timestamp: float, now: float) -> str:
    delta = max(0.0, now - timestamp)
    return "just now" if delta < 1 else f"{duration_text(delta)} ago"


def _ago(timestamp: float | None, now: float) -> str:
    """How long ago, in a ``<time>`` whose title is the absolute UTC time."""
    iso = None if timestamp is None else _iso(timestamp)
    if timestamp is None or iso is None:
        return DASH
    absolute = iso.replace("T", " ").replace("Z", " UTC")
    return f'<time datetime="{iso}" title="{absolute}">{_ago_words(timestamp, now)}</time>'


def _absolute(timestamp: float) -> str:
    iso = _iso(timestamp)
    if iso is None:
        return DASH
    return f'<time datetime="{iso}">{iso.replace("T", " ").replace("Z", " UTC")}</time>'


def _int(value: int | None) -> str:
    return DASH if value is None else f"{value:,}"


def _state_badge(state: str) -> str:
    known = state if state in _SYMBOLS else "pending"
    return (f'<span class="state state-{known}"><span class="symbol" aria-hidden="true">{_SYMBOLS[known]}</span> '
            f"{esc(state)}</span>")


def _hint(hint: str | None) -> str:
    return "" if not hint else f'<p class="hint"><span class="hint-label">Hint:</span> {esc(hint)}</p>'


def _problems(problems: Sequence[Problem], limit: int) -> str:
    items = [f'<li>{esc(problem.text)}{_hint(problem.hint)}</li>' for problem in problems[:limit]]
    if len(problems) > limit:
        items.append(f'<li class="more">and {len(problems) - limit} more</li>')
    return f'<ul class="problems">{"".join(items)}</ul>'


# ----------------------------------------------------------------------------------------------------------
# Sections shared by the fleet's rows and the target's summary.


def _state_content(row: TargetSummary, problem_limit: int) -> str:
    parts = [_state_badge(row.state)]
    if row.state == "down":
        parts.append(f'<p class="reason">{esc(row.reason) if row.reason is not None else "no answer"}</p>')
        parts.append(_hint(row.hint))
    elif row.state == "degraded":
        parts.append(_problems(row.problems, problem_limit))
    elif row.state == "pending":
        parts.append('<p class="reason">not polled yet</p>')
    return "".join(parts)


def _hints_shown(row: TargetSummary) -> list[str | None]:
    """The hints the state's cell already prints."""
    return [row.hint, *(problem.hint for problem in row.problems[:MAX_PROBLEMS_ROW])]


def _queue_content(row: TargetSummary, *, detailed: bool = False) -> str:
    if row.queue_running is None and row.queue_pending is None:
        return DASH
    parts = [f'<div class="nowrap">{_int(row.queue_running)} running · {_int(row.queue_pending)} pending</div>']
    if row.oldest_pending_seconds is not None:
        parts.append(f'<div class="secondary nowrap">oldest waiting {format_seconds(row.oldest_pending_seconds)}'
                     "</div>")
    if detailed and row.running_seconds is not None:
        parts.append(f'<div class="secondary">running job for {format_seconds(row.running_seconds)}</div>')
    return "".join(parts)


def _memory_line(label: str, memory: Memory | None, ids: _Ids) -> str:
    if memory is None:
        return f'<div class="mem"><span class="mem-label">{label}</span> {DASH}</div>'
    drawing = svg.meter(memory.free, memory.total, label=label, meter_id=ids("m"))
    return (f'<div class="mem"><span class="mem-label">{label}</span> {drawing} '
            f'<span class="mem-text">{memory.free_ratio:.0%} free · {format_bytes(memory.free)} of '
            f"{format_bytes(memory.total)}</span></div>")


def _memory_content(row: TargetSummary, ids: _Ids) -> str:
    if row.vram is None and row.ram is None:
        return DASH
    return _memory_line("VRAM", row.vram, ids) + _memory_line("RAM", row.ram, ids)


def _canary_result(canary: CanarySummary, now: float) -> str:
    if canary.ok is None:
        return '<span class="result result-none">no run yet</span>'
    if canary.ok:
        return (f'<span class="result result-ok"><span class="symbol" aria-hidden="true">✓</span> ok</span> · '
                f"{_ago(canary.last_run, now)}")
    reason = esc(canary.reason) if canary.reason is not None else "unknown"
    return (f'<span class="result result-failing"><span class="symbol" aria-hidden="true">✗</span> failing: '
            f"{reason}</span> · {_ago(canary.last_run, now)}")


def _canary_content(canary: CanarySummary | None, now: float, ids: _Ids) -> str:
    if canary is None:
        return DASH
    bar = svg.phase_bar(canary.phases, bar_id=ids("p"))
    return (f'<div class="canary-name">{esc(canary.name)}</div><div>{_canary_result(canary, now)}</div>'
            + ("" if bar is None else f'<div class="phases">{bar}</div>'))


def _jobs_content(row: TargetSummary) -> str:
    text = f"{row.jobs_finished_hour:,} finished · {row.jobs_failed_total:,} failed"
    if not row.jobs_failed_hour:
        return text
    reasons = "".join(f"<li>{esc(reason)} ×{count:,}</li>" for reason, count in row.jobs_failed_hour)
    return f'{text}<ul class="reasons">{reasons}</ul>'


def _failure_content(failure: FailureSummary | None, now: float, shown: Iterable[str | None] = ()) -> str:
    """The last failure; its hint unless *shown* already has it (the row's state says the same)."""
    if failure is None:
        return DASH
    hint = "" if failure.hint in set(shown) else _hint(failure.hint)
    return (f'<span class="reason">{esc(failure.reason)}</span> <span class="secondary">({esc(failure.source)})'
            f"</span> · {_ago(failure.time, now)}{hint}")


def _days_left(cloud: CloudSummary) -> str:
    if cloud.days_left is None or cloud.burn_usd_per_day is None or not math.isfinite(cloud.days_left):
        return DASH
    return f"{cloud.days_left:,.1f} days at {format_usd(cloud.burn_usd_per_day)}/day"


def _subscription(cloud: CloudSummary) -> str:
    words = [esc(word) for word in (cloud.subscription_tier, cloud.subscription_status) if word]
    if cloud.subscription_active is not None and not words:
        words.append("active" if cloud.subscription_active else "inactive")
    return " · ".join(words) or DASH


def _cloud_content(cloud: CloudSummary | None) -> str:
    if cloud is None:
        return DASH
    return (f'<div>{format_usd(cloud.balance_usd)}</div><div class="secondary">left: {_days_left(cloud)}</div>'
            f'<div class="secondary">{_subscription(cloud)}</div>')


def _events_table(events: Sequence[EventView], now: float, caption: str, empty: str) -> str:
    if not events:
        return f'<p class="empty">{empty}</p>'
    rows = []
    for event in events:
        reason = esc(event.reason) if event.reason is not None else DASH
        # The model's text ends with ": <reason>" when there is one; the reason has its own column.
        what = event.text.removesuffix(f": {event.reason}") if event.reason is not None else event.text
        rows.append(f"<tr><td>{_ago(event.time, now)}</td><td>{esc(what)}</td><td>{reason}</td>"
                    f'<td class="hint-cell">{esc(event.hint) if event.hint else DASH}</td>'
                    f'<td class="num">×{event.count:,}</td></tr>')
    head = "".join(f'<th scope="col">{name}</th>' for name in ("Time", "What", "Reason", "Hint", "Times"))
    return (f'<div class="table-wrap"><table class="events"><caption>{caption}</caption><thead><tr>{head}</tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table></div>')


# ----------------------------------------------------------------------------------------------------------
# The document around a page.


def _document(*, title: str, root: str, version: str, generated_at: float, header: str, main: str) -> str:
    """A whole page; *root* is the relative path from the page to the site's root ("" or "../")."""
    asset = f"?v={esc(quote(clean(version, 60), safe=''))}"
    iso = _iso(generated_at) or DASH
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="color-scheme" content="light dark">\n'
        f"<title>{title}</title>\n"
        # Without an icon of its own, a browser asks for /favicon.ico (a 404 in its console).
        f'<link rel="icon" type="image/svg+xml" href="{root}static/favicon.svg{asset}">\n'
        f'<link rel="stylesheet" href="{root}static/status.css{asset}">\n'
        f'<script src="{root}static/status.js{asset}" defer></script>\n'
        f'<noscript><meta http-equiv="refresh" content="{NOSCRIPT_REFRESH_SECONDS}"></noscript>\n'
        "</head>\n<body>\n"
        f'<header class="page-header">{header}'
        '<p id="live" class="live" role="status" aria-live="polite"></p></header>\n'
        f'<main id="main">{main}</main>\n'
        f'<footer class="page-footer"><p>Generated <time datetime="{iso}">{iso}</time> by comfywatch '
        f'{esc(version, 60)} · <a href="{root}metrics">/metrics</a> · <a href="{root}api/v1/status">'
        "/api/v1/status</a></p></footer>\n"
        "</body>\n</html>\n"
    )


def _as_of(generated_at: float) -> str:
    return f'<p class="as-of">As of {_absolute(generated_at)}</p>'


# ----------------------------------------------------------------------------------------------------------
# The fleet.


def _counts_line(counts: Iterable[tuple[str, int]]) -> str:
    by_state = dict(counts)
    items = " · ".join(f'<span class="count count-{state}">{by_state.get(state, 0):,} {state}</span>'
                       for state in _COUNT_ORDER)
    return f'<p class="counts">{items}</p>'


def _fleet_row(row: TargetSummary, now: float, ids: _Ids, with_cloud: bool) -> str:
    cells = [
        f'<th scope="row" class="target"><a href="targets/{_quoted(row.name)}">{esc(row.name)}</a></th>',
        f'<td class="nowrap">{esc(row.kind)}</td>',
        f'<td class="state-cell">{_state_content(row, MAX_PROBLEMS_ROW)}</td>',
        f"<td>{_queue_content(row)}</td>",
        f"<td>{_memory_content(row, ids)}</td>",
        f'<td class="canary-cell">{_canary_content(row.canary, now, ids)}</td>',
        f"<td>{_jobs_content(row)}</td>",
        f'<td class="failure-cell">{_failure_content(row.last_failure, now, _hints_shown(row))}</td>',
    ]
    if with_cloud:
        cells.append(f"<td>{_cloud_content(row.cloud)}</td>")
    return f'<tr class="row-{row.state if row.state in _SYMBOLS else "pending"}">{"".join(cells)}</tr>'


def _fleet_table(status: FleetStatus, rows: Sequence[TargetSummary], first: int, ids: _Ids) -> str:
    with_cloud = any(row.cloud is not None for row in status.targets)
    columns = ["Target", "Kind", "State", "Queue", "Memory headroom", "Canary", "Jobs, last hour", "Last failure"]
    if with_cloud:
        columns.append("Comfy Cloud")
    head = "".join(f'<th scope="col">{name}</th>' for name in columns)
    total = len(status.targets)
    if rows:
        caption = f"Targets {first + 1:,}–{first + len(rows):,} of {total:,}, worst first"
        body = "".join(_fleet_row(row, status.generated_at, ids, with_cloud) for row in rows)
    else:
        caption = "Targets"
        body = f'<tr><td colspan="{len(columns)}">No targets are configured.</td></tr>'
    return (f'<div class="table-wrap"><table class="fleet"><caption>{caption}</caption><thead><tr>{head}</tr>'
            f"</thead><tbody>{body}</tbody></table></div>")


def _page_nav(page: int, pages: int) -> str:
    if pages <= 1:
        return ""
    shown = sorted({1, pages, *range(max(1, page - PAGE_LINKS_AROUND), min(pages, page + PAGE_LINKS_AROUND) + 1)})
    items: list[str] = []
    if page > 1:
        items.append(f'<li><a href="?page={page - 1}" rel="prev">‹ Previous</a></li>')
    previous = 0
    for number in shown:
        if number > previous + 1:
            items.append('<li class="gap" aria-hidden="true">…</li>')
        current = ' aria-current="page"' if number == page else ""
        items.append(f'<li><a href="?page={number}"{current}>{number}</a></li>')
        previous = number
    if page < pages:
        items.append(f'<li><a href="?page={page + 1}" rel="next">Next ›</a></li>')
    return (f'<nav class="pages" aria-label="Pages of targets"><p>Page {page} of {pages}</p>'
            f'<ul>{"".join(items)}</ul></nav>')


def render_fleet(status: FleetStatus, *, page: int = 1) -> str:
    """The fleet page: counts over the whole fleet, one row per target (:data:`PAGE_SIZE` per page, *page*
    clamped to the pages there are), and the fleet-wide events."""
    pages = max(1, math.ceil(len(status.targets) / PAGE_SIZE))
    page = min(max(page, 1), pages)
    first = (page - 1) * PAGE_SIZE
    rows = status.targets[first:first + PAGE_SIZE]
    ids = _Ids()
    counts = dict(status.counts)
    reload_banner = "" if status.reload_success else (
        '<p class="banner banner-down"><span class="symbol" aria-hidden="true">✗</span> The last configuration '
        "reload failed: the previous configuration is still in use.</p>")
    main = (
        _as_of(status.generated_at) + _counts_line(status.counts) + reload_banner
        + _fleet_table(status, rows, first, ids) + _page_nav(page, pages)
        + '<section class="fleet-events" aria-labelledby="events-h"><h2 id="events-h">Fleet events</h2>'
        + _events_table(status.events, status.generated_at, "Fleet-wide events, newest first",
                        "No fleet-wide events since comfywatch started.")
        + "</section>"
    )
    header = ('<h1>comfywatch</h1><nav class="links" aria-label="Machine-readable"><a href="metrics">/metrics</a> · '
              '<a href="api/v1/status">/api/v1/status</a></nav>')
    bad = counts.get("down", 0) + counts.get("degraded", 0)
    title = (f"comfywatch: {counts.get('down', 0)} down, {counts.get('degraded', 0)} degraded" if bad
             else f"comfywatch: {len(status.targets)} targets")
    return _document(title=title, root="", version=status.version, generated_at=status.generated_at,
                     header=header, main=main)


# ----------------------------------------------------------------------------------------------------------
# One target.


def _dl(items: Iterable[tuple[str, str]]) -> str:
    return '<dl class="summary">' + "".join(f"<dt>{term}</dt><dd>{value}</dd>" for term, value in items) + "</dl>"


def _labels(labels: Sequence[tuple[str, str]]) -> str:
    if not labels:
        return DASH
    items = "".join(f"<li><code>{esc(key)}={esc(value)}</code></li>" for key, value in labels)
    return f'<ul class="labels">{items}</ul>'


def _summary_section(row: TargetSummary, now: float, ids: _Ids) -> str:
    items = [
        ("State", _state_content(row, MAX_PROBLEMS_DETAIL)),
        ("Kind", esc(row.kind)),
        ("Version", esc(row.version) if row.version else DASH),
        # Shown as text, never as a link: the address comes from a config or a discovery source.
        ("URL", f"<code>{esc(row.url)}</code>"),
        ("Labels", _labels(row.labels)),
        ("Queue", _queue_content(row, detailed=True)),
        ("Memory headroom", _memory_content(row, ids)),
        ("Jobs, last hour", _jobs_content(row)),
        ("Last failure", _failure_content(row.last_failure, now, _hints_shown(row))),
    ]
    return f'<section aria-labelledby="summary-h"><h2 id="summary-h">Summary</h2>{_dl(items)}</section>'


def _canary_section(canary: CanarySummary, now: float, ids: _Ids) -> str:
    bar = svg.phase_bar(canary.phases, bar_id=ids("p"))
    phases = " · ".join(f"{esc(name)} {format_seconds(seconds)}" for name, seconds in canary.phases) or DASH
    items = [
        ("Canary", esc(canary.name)),
        ("Last result", _canary_result(canary, now)),
        ("Hint", esc(canary.hint)) if canary.hint else None,
        ("Last success", _ago(canary.last_success, now)),
        ("Runs", f"{canary.runs:,}"),
        ("Last run's phases", phases + ("" if bar is None else f'<div class="phases">{bar}</div>')),
    ]
    return (f'<section aria-labelledby="canary-h"><h2 id="canary-h">Canary</h2>'
            f"{_dl(item for item in items if item is not None)}</section>")


def _cloud_section(cloud: CloudSummary) -> str:
    def flag(value: bool | None, yes: str, no: str) -> str:
        return DASH if value is None else (yes if value else no)

    items = [
        ("Balance", format_usd(cloud.balance_usd)),
        ("Usable balance", format_usd(cloud.effective_balance_usd)),
        ("Funds", flag(cloud.has_funds, "yes", "none left")),
        ("Spending", DASH if cloud.burn_usd_per_day is None else f"{format_usd(cloud.burn_usd_per_day)}/day"),
        ("Days left", _days_left(cloud)),
        ("Subscription", flag(cloud.subscription_active, "active", "inactive")),
        ("Tier", esc(cloud.subscription_tier) if cloud.subscription_tier else DASH),
        ("Status", esc(cloud.subscription_status) if cloud.subscription_status else DASH),
        ("Concurrent jobs allowed", _int(cloud.max_concurrent_jobs)),
        ("Rate limited", f"for {format_seconds(cloud.retry_after_seconds)}" if cloud.retry_after_seconds > 0
         else "no"),
    ]
    return f'<section aria-labelledby="cloud-h"><h2 id="cloud-h">Comfy Cloud</h2>{_dl(items)}</section>'


_UNIT_WORDS = {"bool": "up or down", "count": "jobs", "seconds": "seconds", "bytes": "bytes", "usd": "US dollars"}


#: The shortest time axis: a daemon started seconds ago draws them over a minute, not squeezed into an hour.
MIN_CHART_SPAN = 60.0


def _chart_start(lines: Sequence[Series], now: float) -> float:
    """Where the time axis starts: an hour ago, or at the oldest point when the history is younger."""
    oldest = min((time for series in lines for time, _ in series.points), default=now - WINDOW)
    return max(now - WINDOW, min(oldest, now - MIN_CHART_SPAN))


def _figure(lines: Sequence[Series], title: str, generated_at: float, ids: _Ids) -> str:
    unit = _UNIT_WORDS.get(lines[0].unit, lines[0].unit)
    caption = f'<figcaption>{esc(title)} <span class="unit">({esc(unit)})</span></figcaption>'
    if not any(svg.has_data(series) for series in lines):
        return f'<figure class="chart-figure">{caption}<p class="no-data">no data yet</p></figure>'
    drawing = svg.time_chart(lines, start=_chart_start(lines, generated_at), end=generated_at, chart_id=ids("c"),
                             title=title)
    legend = ""
    if len(lines) > 1:
        legend = '<ul class="legend">' + "".join(
            f'<li><span class="swatch line-{index % svg.DASH_PATTERNS}" aria-hidden="true"></span>'
            f"{esc(series.title)}</li>" for index, series in enumerate(lines)) + "</ul>"
    return f'<figure class="chart-figure">{caption}{drawing}{legend}</figure>'


def _charts_section(detail: TargetDetail, ids: _Ids) -> str:
    figures = "".join(_figure([series], series.title, detail.generated_at, ids) for series in detail.series)
    note = (f'<p class="secondary">One point every {format_seconds(detail.history_step)} at most; '
            f"{detail.history_points:,} points kept per series.</p>" if detail.history_step > 0 else "")
    body = f'<div class="charts">{figures}</div>' if figures else '<p class="no-data">no data yet</p>'
    return f'<section aria-labelledby="charts-h"><h2 id="charts-h">Last hour</h2>{note}{body}</section>'


def _canary_charts(detail: TargetDetail, ids: _Ids) -> str:
    parts = []
    for name, series in detail.canary_series:
        total = [s for s in series if s.name == "total"]
        phases = [s for s in series if s.name in CANARY_STEPS]  # total has a chart of its own
        figures = ""
        if total:
            figures += _figure(total, f"Canary {name}: total", detail.generated_at, ids)
        if phases:
            figures += _figure(phases, f"Canary {name}: phases", detail.generated_at, ids)
        parts.append(f'<div class="charts">{figures}</div>')
    if not parts:
        return ""
    return ('<section aria-labelledby="canary-charts-h"><h2 id="canary-charts-h">Canary runs</h2>'
            f'{"".join(parts)}</section>')


def render_target(detail: TargetDetail) -> str:
    """One target's page: its summary, canary and Cloud account, charts of the last hour, recent events."""
    row = detail.summary
    now = detail.generated_at
    ids = _Ids()
    main = (
        _as_of(now) + _summary_section(row, now, ids)
        + ("" if row.canary is None else _canary_section(row.canary, now, ids))
        + ("" if row.cloud is None else _cloud_section(row.cloud))
        + _charts_section(detail, ids) + _canary_charts(detail, ids)
        + '<section aria-labelledby="events-h"><h2 id="events-h">Recent events</h2>'
        + _events_table(detail.events, now, "Recent events of this target, newest first", "No events yet.")
        + "</section>"
    )
    header = (f"<h1>{esc(row.name)}</h1>"
              '<nav class="links" aria-label="Elsewhere"><a href="../">← All targets</a> · '
              f'<a href="../api/v1/targets/{_quoted(row.name)}">JSON</a> · <a href="../metrics">/metrics</a></nav>')
    return _document(title=f"{esc(row.name)}: {esc(row.state)} · comfywatch", root="../", version=__version__,
                     generated_at=now, header=header, main=main)
