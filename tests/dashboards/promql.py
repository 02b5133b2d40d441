"""A small PromQL scanner: enough to port grafana/dashboard-linter's rules to Python.

It finds every metric selector in an expression together with its range (``[5m]``) and the function
whose parentheses immediately enclose it (``rate``), which is all the linter rules need. It is not a
validating parser: whether an expression parses is decided by a real Prometheus in the e2e tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "Selector",
    "aggregation_labels",
    "counter_violations",
    "histogram_violations",
    "metric_names",
    "rate_interval_violations",
    "selectors",
    "substitute_grafana_macros",
]

RATE_INTERVAL = "$__rate_interval"
COUNTER_FUNCTIONS = frozenset({"rate", "irate", "increase"})
RATE_FUNCTIONS = frozenset({"rate", "irate"})

# Words that look like identifiers but are never metric names.
_KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "atan2",
        "inf",
        "nan",
        "start",
        "end",
    }
)
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    }
)

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<braces>\{(?:"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`|[^}"'`])*\})
  | (?P<range>\[[^\]]*\])
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[a-zA-Z]*)
  | (?P<var>\$\{?\w+\}?)
  | (?P<open>\()
  | (?P<close>\))
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=,@])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Selector:
    """One metric selector: ``name{matchers}[range]`` and the function call right around it."""

    name: str
    matchers: str
    range: str | None
    call: str | None


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"cannot scan PromQL at {pos}: {expr[pos : pos + 20]!r}")
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append((kind, m.group()))
        pos = m.end()
    return out


def selectors(expr: str) -> list[Selector]:
    """Every metric selector in ``expr``, in order of appearance."""
    toks = _tokens(expr)
    found: list[Selector] = []
    # Stack entry per open parenthesis: the function name, "" for grouping, or None for a label list.
    stack: list[str | None] = []
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else ("", "")
        in_label_list = bool(stack) and stack[-1] is None
        if kind == "open":
            stack.append("")
        elif kind == "close":
            if stack:
                stack.pop()
        elif kind == "ident" and not in_label_list:
            lowered = text.lower()
            if lowered in _AGGREGATIONS and nxt[0] == "ident" and nxt[1].lower() in ("by", "without"):
                # `sum by (labels) (expr)`: skip the label list; the next parenthesis is sum's.
                close = next(k for k in range(i + 2, len(toks)) if toks[k][0] == "close")
                stack.append(text)
                i = close + 1
            elif nxt[0] == "open":
                stack.append(None if lowered in _LABEL_LIST_KEYWORDS else text)
                i += 1
            elif lowered not in _KEYWORDS:
                matchers = ""
                rng: str | None = None
                j = i + 1
                if j < len(toks) and toks[j][0] == "braces":
                    matchers = toks[j][1]
                    j += 1
                if j < len(toks) and toks[j][0] == "range":
                    rng = toks[j][1][1:-1].strip()
                    j += 1
                call = stack[-1] if stack else None
                found.append(Selector(text, matchers, rng, call or None))
                i = j - 1
        i += 1
    return found


def metric_names(expr: str) -> set[str]:
    """Names of all metrics that ``expr`` selects."""
    return {s.name for s in selectors(expr)}


def counter_violations(expr: str) -> list[str]:
    """dashboard-linter ``target-counter-agg``: a ``*_total`` counter sits directly in rate/irate/increase."""
    return [
        f"counter {s.name} is not inside rate(), irate() or increase() with a range"
        for s in selectors(expr)
        if s.name.endswith("_total") and (s.range is None or s.call not in COUNTER_FUNCTIONS)
    ]


def rate_interval_violations(expr: str) -> list[str]:
    """dashboard-linter ``target-rate-interval``: rate() and irate() ranges must be ``$__rate_interval``."""
    return [
        f"{s.call}({s.name}[{s.range}]) should use [{RATE_INTERVAL}]"
        for s in selectors(expr)
        if s.call in RATE_FUNCTIONS and s.range is not None and s.range != RATE_INTERVAL
    ]


def aggregation_labels(expr: str) -> list[set[str]]:
    """The label sets of every ``by (...)`` clause in ``expr``."""
    return [
        {label.strip() for label in m.group(1).split(",") if label.strip()}
        for m in re.finditer(r"\bby\s*\(([^)]*)\)", expr)
    ]


def histogram_violations(expr: str) -> list[str]:
    """Buckets must be rated (or increased, for rare events) and summed ``by (le)``, or quantiles come out wrong."""
    problems: list[str] = []
    for s in selectors(expr):
        if not s.name.endswith("_bucket"):
            continue
        if s.call not in COUNTER_FUNCTIONS:
            problems.append(f"{s.name} is not inside rate() or increase()")
        if not any("le" in labels for labels in aggregation_labels(expr)):
            problems.append(f"{s.name} is not aggregated by (le)")
    return problems


def substitute_grafana_macros(expr: str, rate_interval: str = "1m", variable: str = ".*") -> str:
    """Replace Grafana's macros so that Prometheus can evaluate a panel query directly.

    Variables become ``.*`` like the dashboards' "All" of cluster and job, which must also match series
    without the label (a Prometheus that adds no cluster label)."""
    expr = expr.replace("${__rate_interval}", rate_interval).replace(RATE_INTERVAL, rate_interval)
    return re.sub(r"\$\{\w+\}|\$\w+", variable, expr)
