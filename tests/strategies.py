"""Hypothesis settings and strategies shared by the fuzz tests (tests/unit/test_fuzz_core.py and
tests/faults/test_fuzz_events.py)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

__all__ = ["FUZZ", "json_trees", "scalars"]

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: Scalars as ``json.loads`` can produce them: it accepts NaN/Infinity and keeps 400-digit integers exact.
scalars: st.SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)


def json_trees(*, key_size: int, leaves: int) -> st.SearchStrategy[Any]:
    """Nested JSON documents over :data:`scalars` (lists and objects of up to 4 items)."""
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=key_size), inner, max_size=4),
        max_leaves=leaves,
    )
