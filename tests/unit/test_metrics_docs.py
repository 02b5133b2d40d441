"""docs/metrics.md and the dashboards' catalogue stay in step with comfywatch.export.metrics."""

from __future__ import annotations

from pathlib import Path

from comfywatch.export import metrics

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def test_every_metric_is_documented() -> None:
    """Each metric comfywatch defines has a row in docs/metrics.md."""
    text = DOCS.read_text(encoding="utf-8")
    missing = [d.name for d in metrics.ALL if f"| `{d.name}` |" not in text]
    assert missing == []


def test_no_metric_is_defined_twice() -> None:
    """Metric names are unique (one place for each rule), /probe's own among them."""
    names = [d.name for d in metrics.ALL + metrics.PROBE]
    assert len(names) == len(set(names))


def test_counters_end_in_total_and_units_are_base_units() -> None:
    """Prometheus naming: counters end in _total, durations in _seconds, sizes in _bytes."""
    for d in metrics.ALL + metrics.PROBE:
        if d.kind == "counter":
            assert d.name.endswith("_total"), d.name
        else:
            assert not d.name.endswith("_total"), d.name
        assert "_ms" not in d.name and "milliseconds" not in d.name, d.name
        if d.kind == "info":
            assert d.name.endswith("_info"), d.name
