"""Server-drawn SVG for the status page: charts over time, a canary's phase bar, a memory meter.

Pure functions returning markup. The page needs no script to show them, and a strict CSP
(``default-src 'self'``) allows them: colours come from classes styled by ``status.css``, never from inline
styles. Every drawing is ``role="img"`` with a ``<title>`` and a ``<desc>`` that says in words what it shows.

:func:`esc` is the one escaping helper of the status pages (:mod:`comfywatch.status.html` uses it too): every
string that is not comfywatch's own fixed text may come from a server or a config and must pass through it.
The value formatters live here as well, since both the charts' labels and the pages' text need them.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from comfywatch.parse.text import clean as clean_text
from comfywatch.state import CANARY_STEPS
from comfywatch.status.model import Series

__all__ = [
    "CHART_HEIGHT",
    "CHART_WIDTH",
    "DASH",
    "MAX_SHOWN",
    "PLOT",
    "Box",
    "clean",
    "esc",
    "format_bytes",
    "format_count",
    "format_seconds",
    "format_usd",
    "format_value",
    "has_data",
    "meter",
    "phase_bar",
    "time_chart",
]

#: Longest string shown from outside comfywatch (a label, a URL); longer ones end with "…". Generous enough for
#: every fixed hint comfywatch writes, small enough that a megabyte-long label costs the page nothing.
MAX_SHOWN = 400
DASH = "—"

# Noncharacters are an HTML5 parse error; everything else unsafe (controls, bidi controls, lone surrogates, which no
# UTF-8 encoder accepts) is cleaned by the one rule for server text, comfywatch.parse.text.
_NONCHARACTERS = "".join(f"{chr(plane + 0xFFFE)}{chr(plane + 0xFFFF)}" for plane in range(0, 0x110000, 0x10000))
_NONCHARACTER = re.compile(f"[\ufdd0-\ufdef{_NONCHARACTERS}]")


def clean(value: object, limit: int = MAX_SHOWN) -> str:
    """*value* as text that any UTF-8 encoder and HTML parser accept, cut to *limit* characters (not escaped):
    control characters become spaces (an attribute stays on one line), bidi controls go, lone surrogates and
    noncharacters become U+FFFD."""
    text, _ = clean_text(str(value), limit)
    return _NONCHARACTER.sub("\ufffd", text)


def esc(value: object, limit: int = MAX_SHOWN) -> str:
    """*value* made safe (:func:`clean`) and escaped for HTML text and quoted attribute values alike."""
    return html.escape(clean(value, limit), quote=True)


# ----------------------------------------------------------------------------------------------------------
# Values for people.


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _byte_unit(size: float) -> tuple[int, str]:
    """The largest binary unit *size* bytes reach, as (bytes in it, its name)."""
    for factor, unit in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if size >= factor:
            return factor, unit
    return 1, "B"


def format_bytes(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return DASH
    factor, unit = _byte_unit(abs(value))
    return f"{value:.0f} B" if factor == 1 else f"{value / factor:.1f} {unit}"


def format_seconds(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return DASH
    size = abs(value)
    if size < 1:
        return f"{value * 1000:.0f} ms"
    if size < 60:
        return f"{value:.1f} s"
    if size < 3600:
        return f"{value / 60:.1f} min"
    if size < 86400:
        return f"{value / 3600:.1f} h"
    return f"{value / 86400:.1f} d"


def format_usd(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return DASH
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


def format_count(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return DASH
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def format_value(value: float | None, unit: str) -> str:
    """*value* in words for a :class:`Series` *unit* (bool, count, seconds, bytes, usd)."""
    if unit == "bool":
        return DASH if not _finite(value) else ("up" if value is not None and value >= 0.5 else "down")
    if unit == "bytes":
        return format_bytes(value)
    if unit == "seconds":
        return format_seconds(value)
    if unit == "usd":
        return format_usd(value)
    return format_count(value)


# ----------------------------------------------------------------------------------------------------------
# Charts over time.


@dataclass(frozen=True, slots=True)
class Box:
    left: float
    top: float
    right: float
    bottom: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top


CHART_WIDTH = 600
CHART_HEIGHT = 170
#: Where the lines go inside the chart's viewBox; the margins hold the axes' labels.
PLOT = Box(left=52.0, top=20.0, right=CHART_WIDTH - 12.0, bottom=CHART_HEIGHT - 24.0)
#: Lines of a chart with several are told apart by dash pattern, not colour alone (``status.css`` draws them).
DASH_PATTERNS = 4
#: The axis title of each unit (tick labels are bare numbers in the unit the scale picked).
_AXIS_TITLE = {"count": "jobs", "usd": "USD"}

_Map = Callable[[float], float]
#: Known points in a row, and the time the last one is known to hold until.
_Run = tuple[list[tuple[float, float]], float]


def has_data(series: Series) -> bool:
    return any(_finite(value) for _, value in series.points)


def _runs(points: Sequence[tuple[float, float | None]], start: float, end: float) -> list[_Run]:
    """Runs of known points inside [start, end], each with the time it is known to hold until (the unknown
    point that ended it, or *end* for the last run): an unknown value breaks the line."""
    runs: list[_Run] = []
    current: list[tuple[float, float]] = []
    for time, value in points:
        if not start <= time <= end:
            continue
        if value is None or not math.isfinite(value):
            if current:
                runs.append((current, time))
                current = []
            continue
        current.append((time, value))
    if current:
        runs.append((current, end))
    return runs


def _scale(unit: str, high: float) -> tuple[float, str]:
    """(divisor, unit name) the axis shows values in, picked by the largest value."""
    if unit == "bytes":
        factor, name = _byte_unit(high)
        return float(factor), name
    if unit == "seconds":
        if high < 1:
            return 0.001, "ms"
        if high < 180:
            return 1.0, "s"
        return (60.0, "min") if high < 3 * 3600 else (3600.0, "h")
    return 1.0, _AXIS_TITLE.get(unit, unit)


#: The largest magnitude an axis spans (see :func:`_nice_ticks`).
_AXIS_LIMIT = 1e300


def _nice_ticks(low: float, high: float, *, integer: bool, finest: float = 0.0) -> list[float]:
    """Round tick values covering [low, high] (four or so steps of 1, 2, 2.5 or 5 × a power of ten, none finer
    than *finest*), at least two and increasing.

    A server chooses the values: beyond ±1e300 they are drawn at the edge (a wider axis overflows), and steps
    are never finer than a billionth of the values (at 1e16, adding 1 or a cent changes nothing)."""
    low, high = (min(max(value, -_AXIS_LIMIT), _AXIS_LIMIT) for value in (low, high))
    size = max(abs(low), abs(high))
    if high <= low:
        high = low + max(1.0, size * 1e-6)
    # No step finer than the values can be told apart by.
    raw = max((high - low) / 4, finest, size * 1e-9)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * magnitude >= raw)
    if integer:
        step = max(1.0, float(math.ceil(step)))
    first = math.floor(low / step) * step
    count = max(1, math.ceil(round((high - first) / step, 9)))
    return [first + index * step for index in range(count + 1)]


def _tick_text(value: float, ticks: Sequence[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = next((d for d in range(7) if abs(round(step, d) - step) <= 1e-9 * abs(step)), 6)
    text = f"{value:.{decimals}f}"
    return "0" if float(text) == 0 else text


def _n(value: float) -> str:
    """A coordinate: one decimal is finer than a pixel at any size the page draws."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _ago_label(seconds: float, span: float) -> str:
    """A time-axis label: seconds on an axis of a few minutes, minutes on a longer one."""
    return f"{seconds:.0f} s" if span <= 300 else f"{seconds / 60:.0f} min"


def _window_text(start: float, end: float) -> str:
    # In the time axis's own unit.
    return f"the last {_ago_label(end - start, end - start)}"


def _known(series: Series, start: float, end: float) -> list[float]:
    """The finite values of *series* inside [start, end], oldest first."""
    return [value for time, value in series.points
            if start <= time <= end and value is not None and math.isfinite(value)]


def _line_desc(series: Series, start: float, end: float) -> str:
    known = _known(series, start, end)
    if not known:
        return f"{series.title}: no data in {_window_text(start, end)}."
    fmt = series.unit
    return (f"{series.title}: last {format_value(known[-1], fmt)}, min {format_value(min(known), fmt)}, "
            f"max {format_value(max(known), fmt)} over {_window_text(start, end)} ({len(known)} points).")


def _bool_desc(series: Series, start: float, end: float) -> str:
    known = _known(series, start, end)
    if not known:
        return f"{series.title}: no data in {_window_text(start, end)}."
    up = sum(1 for value in known if value >= 0.5)
    downs = sum(1 for before, after in zip([1.0, *known], known, strict=False) if before >= 0.5 > after)
    return (f"{series.title}: {format_value(known[-1], 'bool')} now; up in {up} of {len(known)} points over "
            f"{_window_text(start, end)}, down {downs} time{'s' if downs != 1 else ''}.")


def _x_axis(start: float, end: float) -> str:
    parts = [f'<line class="axis" x1="{_n(PLOT.left)}" y1="{_n(PLOT.bottom)}" x2="{_n(PLOT.right)}" '
             f'y2="{_n(PLOT.bottom)}"/>']
    span = end - start
    for index in range(5):
        x = PLOT.left + PLOT.width * index / 4
        before = span * (4 - index) / 4
        label = "now" if index == 4 else f"-{_ago_label(before, span)}"
        anchor = "start" if index == 0 else "end" if index == 4 else "middle"
        parts.append(f'<text class="tick" x="{_n(x)}" y="{_n(PLOT.bottom + 16)}" text-anchor="{anchor}">'
                     f"{label}</text>")
    return "".join(parts)


def _y_axis(ticks: Sequence[float], low: float, high: float, divisor: float, title: str,
            labels: dict[float, str] | None = None) -> str:
    parts = [] if not title else [f'<text class="axis-title" x="{_n(PLOT.left - 6)}" y="{_n(PLOT.top - 8)}" '
                                  f'text-anchor="end">{esc(title)}</text>']
    for tick in ticks:
        y = PLOT.bottom - (tick - low) / (high - low) * PLOT.height
        text = labels[tick] if labels is not None else _tick_text(tick / divisor, [t / divisor for t in ticks])
        parts.append(f'<line class="grid" x1="{_n(PLOT.left)}" y1="{_n(y)}" x2="{_n(PLOT.right)}" y2="{_n(y)}"/>'
                     f'<text class="tick" x="{_n(PLOT.left - 6)}" y="{_n(y + 4)}" text-anchor="end">{esc(text)}</text>')
    return "".join(parts)


def _open(chart_id: str, title: str, desc: str, css_class: str, width: float, height: float) -> str:
    return (f'<svg class="{css_class}" viewBox="0 0 {_n(width)} {_n(height)}" role="img" '
            f'aria-labelledby="{chart_id}-t" aria-describedby="{chart_id}-d">'
            f'<title id="{chart_id}-t">{esc(title)}</title><desc id="{chart_id}-d">{esc(desc)}</desc>')


def time_chart(lines: Sequence[Series], *, start: float, end: float, chart_id: str, title: str | None = None) -> str:
    """A chart of *lines* (same unit) between *start* and *end* (seconds); a ``bool`` series is drawn as steps
    with the times it was down shaded. Gaps (None) break the lines. *chart_id* must be unique on the page."""
    if not lines:
        raise ValueError("a chart needs a series")
    unit = lines[0].unit
    end = max(end, start + 1.0)
    title = title or lines[0].title
    describe = _bool_desc if unit == "bool" else _line_desc
    desc = " ".join(describe(series, start, end) for series in lines)
    known = [value for series in lines for value in _known(series, start, end)]
    if unit == "bool":
        low, high, ticks, divisor, axis = 0.0, 1.0, [0.0, 1.0], 1.0, ""
    else:
        data_low = min(known, default=0.0)
        data_high = max(known, default=1.0)
        # Amounts read against zero; a balance is read by its change, so its axis hugs the data.
        floor = data_low if unit == "usd" else min(0.0, data_low)
        divisor, axis = _scale(unit, max(abs(data_high), abs(floor)))
        # Cents at the finest: a near-flat balance (single-precision points) would otherwise tick by its noise.
        ticks = [t * divisor for t in _nice_ticks(floor / divisor, data_high / divisor, integer=unit == "count",
                                                  finest=0.01 if unit == "usd" else 0.0)]
        low, high = ticks[0], ticks[-1]

    def x(time: float) -> float:
        return PLOT.left + (time - start) / (end - start) * PLOT.width

    def y(value: float) -> float:
        return PLOT.bottom - (min(max(value, low), high) - low) / (high - low) * PLOT.height

    parts = [_open(chart_id, title, desc, "chart", CHART_WIDTH, CHART_HEIGHT),
             _y_axis(ticks, low, high, divisor, axis, {0.0: "down", 1.0: "up"} if unit == "bool" else None),
             _x_axis(start, end)]
    for index, series in enumerate(lines):
        runs = _runs(series.points, start, end)
        if unit == "bool":
            parts.append(_step(runs, x, y, index))
        else:
            parts.append(_polyline(runs, x, y, index))
    parts.append("</svg>")
    return "".join(parts)


def _polyline(runs: Sequence[_Run], x: _Map, y: _Map, index: int) -> str:
    path: list[str] = []
    dots: list[str] = []
    for run, _ in runs:
        if len(run) == 1:
            # A lone point between gaps draws no line: show it as a dot.
            dots.append(f'<circle class="dot line-{index % DASH_PATTERNS}" cx="{_n(x(run[0][0]))}" '
                        f'cy="{_n(y(run[0][1]))}" r="2.5"/>')
            continue
        path.append("M" + " L".join(f"{_n(x(t))},{_n(y(v))}" for t, v in run))
    line = f'<path class="line line-{index % DASH_PATTERNS}" d="{" ".join(path)}"/>' if path else ""
    return line + "".join(dots)


def _step(runs: Sequence[_Run], x: _Map, y: _Map, index: int) -> str:
    """Each value holds until the next point (or the end of its run): a step line, and a band where down."""
    path: list[str] = []
    bands: list[str] = []
    for run, until in runs:
        commands = [f"M{_n(x(run[0][0]))},{_n(y(run[0][1]))}"]
        down_since: float | None = None
        for position, (time, value) in enumerate(run):
            following = run[position + 1] if position + 1 < len(run) else None
            holds_until = following[0] if following is not None else until
            commands.append(f"H{_n(x(holds_until))}")
            if value < 0.5 and down_since is None:
                down_since = time
            leaves_down = following is None or following[1] >= 0.5
            if down_since is not None and leaves_down:
                bands.append(f'<rect class="band-down" x="{_n(x(down_since))}" y="{_n(PLOT.top)}" '
                             f'width="{_n(x(holds_until) - x(down_since))}" height="{_n(PLOT.height)}"/>')
                down_since = None
            if following is not None and (following[1] >= 0.5) != (value >= 0.5):
                commands.append(f"V{_n(y(following[1]))}")
        path.append("".join(commands))
    return "".join(bands) + f'<path class="line step line-{index % DASH_PATTERNS}" d="{" ".join(path)}"/>'


# ----------------------------------------------------------------------------------------------------------
# Small drawings for the tables.

PHASE_BAR_WIDTH = 160
PHASE_BAR_HEIGHT = 12


def phase_bar(phases: Sequence[tuple[str, float]], *, bar_id: str, width: float = PHASE_BAR_WIDTH,
              height: float = PHASE_BAR_HEIGHT) -> str | None:
    """A stacked bar of a canary run's phases, each as wide as its share of their sum; None when there is
    nothing to draw (no phase reached, or all took no time)."""
    drawn = [(name, seconds) for name, seconds in phases if name in CANARY_STEPS and _finite(seconds) and seconds > 0]
    total_phase = next((seconds for name, seconds in phases if name == "total"), None)
    total = sum(seconds for _, seconds in drawn)
    if not drawn or total <= 0:
        return None
    words = ", ".join(f"{name} {format_seconds(seconds)}" for name, seconds in phases if name in CANARY_STEPS)
    title = f"Canary phases: {words}" + (f" (total {format_seconds(total_phase)})" if total_phase is not None else "")
    parts = [_open(bar_id, title, f"Share of each phase of the last canary run. {title}.", "phase-bar", width,
                   height)]
    edge = 0.0
    elapsed = 0.0
    for name, seconds in drawn:
        elapsed += seconds
        # Edges from the running sum, so the widths add up to the bar exactly.
        next_edge = width if elapsed >= total else round(width * elapsed / total, 2)
        parts.append(f'<rect class="phase phase-{name}" x="{_n2(edge)}" y="0" width="{_n2(next_edge - edge)}" '
                     f'height="{_n(height)}"><title>{name} {format_seconds(seconds)}</title></rect>')
        edge = next_edge
    parts.append("</svg>")
    return "".join(parts)


def _n2(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") or "0"


METER_WIDTH = 64
METER_HEIGHT = 8


def meter(free: int, total: int, *, label: str, meter_id: str) -> str:
    """A bar filled by the share of *total* that is *free* (headroom); ``low`` below 10 %, ``warn`` below 25 %."""
    ratio = min(1.0, max(0.0, free / total)) if total > 0 else 0.0
    level = "low" if ratio < 0.10 else "warn" if ratio < 0.25 else "ok"
    # Short words: the page prints the amounts beside the meter.
    return (_open(meter_id, f"{label} headroom", f"{ratio:.0%} free", f"meter meter-{level}", METER_WIDTH,
                  METER_HEIGHT)
            + f'<rect class="meter-track" x="0" y="0" width="{METER_WIDTH}" height="{METER_HEIGHT}"/>'
            + f'<rect class="meter-fill" x="0" y="0" width="{_n2(METER_WIDTH * ratio)}" height="{METER_HEIGHT}"/>'
            + "</svg>")

