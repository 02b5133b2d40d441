"""The PromQL scanner behind the ported linter rules finds what it should (so the lint is not vacuous)."""

from __future__ import annotations

from tests.dashboards.promql import (
    counter_violations,
    histogram_violations,
    metric_names,
    rate_interval_violations,
    selectors,
    substitute_grafana_macros,
)


def test_selector_knows_its_range_and_enclosing_function() -> None:
    """A selector inside rate() reports the range and `rate` as its call."""
    (selector,) = selectors('rate(comfyui_jobs_total{target=~"$target"}[$__rate_interval])')
    assert selector.name == "comfyui_jobs_total"
    assert selector.range == "$__rate_interval"
    assert selector.call == "rate"


def test_label_names_in_grouping_clauses_are_not_metrics() -> None:
    """`by (...)`, `without (...)`, `ignoring (...)` and `group_left (...)` hold labels, not metrics."""
    expr = (
        "sum by (target, le) (rate(a_bucket[1m])) / ignoring (reason) group_left (tier) "
        "sum without (code) (b) and on (job) c"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c"}


def test_strings_and_matchers_are_not_metrics() -> None:
    """Identifiers inside label matchers and string literals are not taken for metric names."""
    assert metric_names('count(up{job=~"comfywatch_total.*"} == 0) or vector(0)') == {"up"}


def test_raw_counter_is_flagged() -> None:
    """target-counter-agg: a counter outside rate/increase, or in another function, is reported."""
    assert counter_violations("sum(comfyui_jobs_total)")
    assert counter_violations("delta(comfyui_jobs_total[5m])")
    assert counter_violations("rate(comfyui_jobs_total[5m])") == []
    assert counter_violations("increase(comfyui_jobs_total[1h]) > 1") == []


def test_fixed_rate_window_is_flagged() -> None:
    """target-rate-interval: rate() with a fixed window is reported; increase() and deriv() are not."""
    assert rate_interval_violations("rate(comfyui_jobs_total[5m])")
    assert rate_interval_violations("sum by (x) (irate(comfyui_jobs_total[1m]))")
    assert rate_interval_violations("rate(comfyui_jobs_total[$__rate_interval])") == []
    assert rate_interval_violations("increase(comfyui_jobs_total[1h]) + deriv(b[6h])") == []


def test_unaggregated_histogram_is_flagged() -> None:
    """Buckets must be rated or increased, and summed by (le)."""
    assert histogram_violations("histogram_quantile(0.9, rate(a_bucket[$__rate_interval]))")
    assert histogram_violations("sum by (le) (a_bucket)")
    assert histogram_violations("histogram_quantile(0.9, sum by (le) (delta(a_bucket[1h])))")
    assert histogram_violations("histogram_quantile(0.9, sum by (le) (increase(a_bucket[1h])))") == []
    assert (
        histogram_violations("histogram_quantile(0.9, sum by (le) (rate(a_bucket[$__rate_interval])))") == []
    )


def test_grafana_macros_are_replaced_for_prometheus() -> None:
    """$__rate_interval becomes 1m and template variables match anything, a missing label included."""
    expr = 'rate(x_total{target=~"$target", canary=~"${canary}"}[$__rate_interval])'
    assert substitute_grafana_macros(expr) == 'rate(x_total{target=~".*", canary=~".*"}[1m])'
