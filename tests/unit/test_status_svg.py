"""comfywatch.status.svg: the status page's drawings map data honestly, and say in words what they show.

The drawings are parsed as XML (they are well-formed on their own) and their geometry read back: points land
inside the plot, gaps break lines, a bar's segments add up to the bar.
"""

from __future__ import annotations

import itertools
import math
import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfywatch.status import svg
from comfywatch.status.model import Series
from comfywatch.status.svg import PLOT

START = 1_795_637_600.0
END = START + 3600.0
GIB = 1 << 30


def series(values: list[float | None], unit: str = "count", *, step: float = 60.0, title: str = "Jobs") -> Series:
    return Series("s", title, unit, tuple((START + index * step, value) for index, value in enumerate(values)))


def chart(*lines: Series, chart_id: str = "c1") -> ET.Element:
    return ET.fromstring(svg.time_chart(lines, start=START, end=END, chart_id=chart_id))


def subpaths(d: str) -> list[list[tuple[float, float]]]:
    """The points of each ``M…`` subpath of a path made of M and L commands."""
    return [[(float(x), float(y)) for x, y in re.findall(r"(-?[\d.]+),(-?[\d.]+)", part)]
            for part in d.split("M")[1:]]


def line_paths(root: ET.Element) -> list[ET.Element]:
    return [p for p in root.iter("path") if "line" in p.get("class", "").split()]


def x_of(time: float) -> float:
    return PLOT.left + (time - START) / (END - START) * PLOT.width


# ----------------------------------------------------------------------------------------------------------
# Escaping: the one helper both renderers use.


@pytest.mark.parametrize(("raw", "shown"), [
    ('<script>alert(1)</script>', "&lt;script&gt;alert(1)&lt;/script&gt;"),
    ('"\'><img src=x onerror=alert(1)>', "&quot;&#x27;&gt;&lt;img src=x onerror=alert(1)&gt;"),
    ("a\ud800b", "a\ufffdb"),
    ("a\x00b\x1b[2Jc", "a b [2Jc"),
    ("tab\tnew\nline", "tab new line"),
    ("c1\x85del\x7f", "c1 del "),
    ("bidi\u202eevil", "bidievil"),
    ("nonchar\ufdd0\U0001fffe", "nonchar\ufffd\ufffd"),
    ("ok ✓ ü 𝄞", "ok ✓ ü 𝄞"),
])
def test_esc_makes_any_string_safe_to_encode_and_to_embed(raw: str, shown: str) -> None:
    assert svg.esc(raw) == shown
    svg.esc(raw).encode("utf-8")  # a lone surrogate would raise here, and in aiohttp


def test_esc_cuts_long_strings() -> None:
    cut = svg.esc("x" * 1_000_000)
    assert len(cut) == svg.MAX_SHOWN and cut.endswith("…")
    assert svg.esc("<" * 10, limit=4) == "&lt;&lt;&lt;…"


# ----------------------------------------------------------------------------------------------------------
# Values for people.


@pytest.mark.parametrize(("value", "text"), [
    (None, "—"), (math.nan, "—"), (math.inf, "—"), (512, "512 B"), (3 * 1024 * 1024, "3.0 MiB"),
    (12 * GIB, "12.0 GiB"), (1.5 * GIB, "1.5 GiB"),
])
def test_format_bytes(value: float | None, text: str) -> None:
    assert svg.format_bytes(value) == text


@pytest.mark.parametrize(("value", "text"), [
    (None, "—"), (math.nan, "—"), (0.0123, "12 ms"), (2.345, "2.3 s"), (90, "1.5 min"), (5400, "1.5 h"),
    (2 * 86400, "2.0 d"),
])
def test_format_seconds(value: float | None, text: str) -> None:
    assert svg.format_seconds(value) == text


def test_format_usd_and_unknowns() -> None:
    assert svg.format_usd(1234.5) == "$1,234.50"
    assert svg.format_usd(-3) == "-$3.00"
    assert svg.format_usd(None) == svg.format_usd(math.nan) == "—"
    assert svg.format_value(1.0, "bool") == "up" and svg.format_value(0.0, "bool") == "down"


# ----------------------------------------------------------------------------------------------------------
# Charts over time.


def test_chart_is_an_image_with_a_title_and_a_text_alternative() -> None:
    root = chart(series([3, 1, 4, 1, 5]), chart_id="c7")
    assert root.get("role") == "img"
    title, desc = root.find("title"), root.find("desc")
    assert title is not None and desc is not None
    assert root.get("aria-labelledby") == title.get("id") == "c7-t"
    assert root.get("aria-describedby") == desc.get("id") == "c7-d"
    assert desc.text == "Jobs: last 5, min 1, max 5 over the last 60 min (5 points)."


def test_points_map_inside_the_plot_with_time_across_and_zero_at_the_bottom() -> None:
    values: list[float | None] = [0.0, 7.0, 123.0, 55.5, 0.5]
    root = chart(series(values, step=900.0))  # the last point lands exactly at END
    width, height = map(float, root.get("viewBox", "").split()[2:])
    (points,) = subpaths(line_paths(root)[0].get("d", ""))
    assert len(points) == len(values)
    for x, y in points:
        assert PLOT.left <= x <= PLOT.right <= width
        assert PLOT.top <= y <= PLOT.bottom <= height
    assert points[0] == (PLOT.left, PLOT.bottom)  # value 0 at the window's start
    assert points[-1][0] == pytest.approx(PLOT.right)  # the window's end
    assert [x for x, _ in points] == sorted(x for x, _ in points)
    heights = [PLOT.bottom - y for _, y in points]
    assert heights.index(max(heights)) == 2  # the largest value is the highest point
    # Proportional: 7 is to 123 as their heights are (up to the one-decimal rounding).
    assert heights[1] / heights[2] == pytest.approx(7 / 123, abs=0.01)


def test_gaps_break_the_line_into_segments_and_a_lone_point_is_a_dot() -> None:
    root = chart(series([1.0, 2.0, None, 3.0, 4.0, 5.0, None, 6.0, math.nan, math.inf, 2.0, 1.0]))
    (path,) = line_paths(root)
    parts = subpaths(path.get("d", ""))
    assert [len(part) for part in parts] == [2, 3, 2]
    dots = list(root.iter("circle"))
    assert len(dots) == 1  # the 6.0 between two gaps
    assert float(dots[0].get("cx", "0")) == pytest.approx(x_of(START + 7 * 60), abs=0.05)


def test_points_outside_the_window_are_left_out() -> None:
    late = Series("s", "Jobs", "count", ((START - 60, 9.0), (START + 60, 1.0), (START + 120, 2.0), (END + 60, 9.0)))
    root = chart(late)
    (points,) = subpaths(line_paths(root)[0].get("d", ""))
    assert len(points) == 2
    assert "max 2" in (root.findtext("desc") or "")


def test_bool_series_is_a_step_chart_with_down_periods_shaded() -> None:
    values: list[float | None] = [1, 1, 0, 0, 1, None, 1]
    root = chart(series(values, "bool", step=300.0, title="Up"))
    (path,) = line_paths(root)
    d = path.get("d", "")
    assert "step" in path.get("class", "")
    assert re.fullmatch(r"(M[\d.]+,[\d.]+(?:[HV][\d.]+)+ ?)+", d), d  # only horizontal and vertical moves
    assert d.count("M") == 2  # the unknown point breaks it
    # Down from the third point until the fifth: one band over exactly that time.
    (band,) = [r for r in root.iter("rect") if r.get("class") == "band-down"]
    assert float(band.get("x", "0")) == pytest.approx(x_of(START + 600), abs=0.05)
    assert float(band.get("width", "0")) == pytest.approx(x_of(START + 1200) - x_of(START + 600), abs=0.1)
    # The last known value holds to the window's end.
    assert d.rstrip().endswith(f"H{PLOT.right:.0f}")
    assert (root.findtext("desc") or "") == (
        "Up: up now; up in 4 of 6 points over the last 60 min, down 1 time.")
    ticks = [t.text for t in root.iter("text")]
    assert "up" in ticks and "down" in ticks


def test_axes_have_time_ticks_relative_to_now_and_the_unit() -> None:
    root = chart(series([2 * GIB, 20 * GIB, 10 * GIB], "bytes", title="VRAM free"))
    texts = [t.text for t in root.iter("text")]
    assert texts[0] == "GiB"  # the y axis's title
    assert texts[-5:] == ["-60 min", "-45 min", "-30 min", "-15 min", "now"]
    assert "20" in texts  # a y tick at 20 GiB
    assert (root.findtext("desc") or "") == (
        "VRAM free: last 10.0 GiB, min 2.0 GiB, max 20.0 GiB over the last 60 min (3 points).")


def test_balance_axis_follows_the_data_instead_of_zero() -> None:
    root = chart(series([1000.0, 999.0, 998.0], "usd", title="Balance"))
    (points,) = subpaths(line_paths(root)[0].get("d", ""))
    heights = [PLOT.bottom - y for _, y in points]
    assert heights[0] - heights[-1] > PLOT.height / 3  # a $2 fall is visible on a $1000 balance


def test_several_lines_share_the_axes_and_differ_by_class() -> None:
    root = chart(series([1, 2, 3], "seconds", title="Submit"), series([4, 5, 6], "seconds", title="Execute"))
    classes = [p.get("class") for p in line_paths(root)]
    assert classes == ["line line-0", "line line-1"]
    desc = root.findtext("desc") or ""
    assert "Submit: last 3.0 s" in desc and "Execute: last 6.0 s" in desc


def test_chart_text_is_escaped() -> None:
    hostile = Series("s", "<b>\ud800", "count", ((START, 1.0),))
    markup = svg.time_chart([hostile], start=START, end=END, chart_id="c1")
    markup.encode("utf-8")
    assert "<b>" not in markup and "&lt;b&gt;\ufffd" in markup


def test_has_data_needs_a_finite_value() -> None:
    assert not svg.has_data(series([]))
    assert not svg.has_data(series([None, math.nan]))
    assert svg.has_data(series([None, 0.0]))


# ----------------------------------------------------------------------------------------------------------
# Phase bar and meter.


def rect_widths(root: ET.Element, css_class: str) -> dict[str, float]:
    return {(r.get("class") or "").split()[-1]: float(r.get("width", "0"))
            for r in root.iter("rect") if css_class in (r.get("class") or "")}


def test_phase_bar_widths_are_proportional_and_fill_the_bar() -> None:
    phases = (("submit", 0.1), ("queue", 0.3), ("execute", 1.2), ("fetch", 0.4), ("total", 2.0))
    markup = svg.phase_bar(phases, bar_id="p1", width=200)
    assert markup is not None
    root = ET.fromstring(markup)
    widths = rect_widths(root, "phase")
    assert list(widths) == ["phase-submit", "phase-queue", "phase-execute", "phase-fetch"]
    assert sum(widths.values()) == pytest.approx(200, abs=0.011)
    assert widths["phase-submit"] == pytest.approx(10, abs=0.01)
    assert widths["phase-execute"] == pytest.approx(120, abs=0.01)
    xs = [float(r.get("x", "0")) for r in root.iter("rect")]
    assert xs == sorted(xs) and xs[0] == 0  # in order, left to right
    assert root.findtext("title") == (
        "Canary phases: submit 100 ms, queue 300 ms, execute 1.2 s, fetch 400 ms (total 2.0 s)")
    assert root.get("role") == "img" and root.findtext("desc")
    assert [r.findtext("title") for r in root.iter("rect")][2] == "execute 1.2 s"


def test_phase_bar_leaves_out_phases_without_time_and_is_none_without_any() -> None:
    markup = svg.phase_bar((("submit", 0.0), ("queue", 0.5), ("execute", math.nan), ("total", 0.5)), bar_id="p1")
    assert markup is not None
    assert list(rect_widths(ET.fromstring(markup), "phase")) == ["phase-queue"]
    assert svg.phase_bar((("submit", 0.0), ("total", 0.0)), bar_id="p2") is None
    assert svg.phase_bar((), bar_id="p3") is None


@pytest.mark.parametrize(("free", "level"), [(50, "ok"), (20, "warn"), (5, "low"), (0, "low"), (150, "ok")])
def test_meter_fills_by_headroom(free: int, level: str) -> None:
    root = ET.fromstring(svg.meter(free * GIB, 100 * GIB, label="VRAM", meter_id="m1"))
    assert f"meter-{level}" in (root.get("class") or "")
    fill = rect_widths(root, "meter-fill")["meter-fill"]
    assert fill == pytest.approx(svg.METER_WIDTH * min(free, 100) / 100, abs=0.01)
    assert root.findtext("title") == "VRAM headroom"
    assert root.findtext("desc") == f"{min(free, 100)}% free"


@given(st.floats(allow_nan=False, allow_infinity=False), st.floats(allow_nan=False, allow_infinity=False),
       st.booleans(), st.sampled_from([0.0, 0.01]))
def test_ticks_increase_and_cover_any_finite_range(a: float, b: float, integer: bool, finest: float) -> None:
    """Whatever a server reports (flat at 1e16, -1e38, subnormal, ±1.7e308): a handful of finite, increasing ticks
    covering the values (clamped to ±1e300)."""
    low, high = min(a, b), max(a, b)
    ticks = svg._nice_ticks(low, high, integer=integer, finest=finest)
    assert 2 <= len(ticks) <= 12
    assert all(math.isfinite(tick) for tick in ticks)
    assert all(after > before for before, after in itertools.pairwise(ticks))
    # Within a billionth of a step: a value that close past the last tick is drawn on it.
    slack = (ticks[1] - ticks[0]) * 1e-8
    low, high = (min(max(value, -1e300), 1e300) for value in (low, high))
    assert ticks[0] - slack <= low and ticks[-1] + slack >= high


@pytest.mark.parametrize(("values", "unit"), [
    ([1e16] * 5, "usd"), ([1e28] * 5, "usd"), ([-1e38] * 5, "bytes"), ([-1e30] * 5, "bytes"),
    ([1.7e308, -1.7e308], "count"), ([2.0**53] * 3, "count"),
])
def test_a_flat_or_extreme_series_is_still_drawn(values: list[float], unit: str) -> None:
    """A balance flat at 1e16 USD or a free memory of -1e38 bytes (a server's choice) draws a chart instead of
    raising, so the target's page is still served."""
    root = chart(series(list(values), unit))
    assert len(line_paths(root)) + len(list(root.iter("circle"))) >= 1
