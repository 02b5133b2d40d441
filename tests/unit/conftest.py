"""Hypothesis settings for the unit suite: a reproducible, deadline-free "ci" profile when CI is set.

tests/conftest.py already registers a suite-wide "ci" profile; this one only fills in when that is missing
(running this directory with another rootdir), so the two never disagree.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis.errors import InvalidArgument

try:
    settings.get_profile("ci")
except InvalidArgument:
    settings.register_profile(
        "ci", deadline=None, derandomize=True, max_examples=150, suppress_health_check=[HealthCheck.too_slow]
    )

if os.environ.get("CI"):
    settings.load_profile("ci")
