"""Suite-wide fixtures: hypothesis profiles, structlog isolation, a scaled timeout unit."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", deadline=None, derandomize=True, max_examples=150,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))

#: Seconds; multiply deadlines by COMFYWATCH_TESTS_TIMEOUT_FACTOR on slow machines (websockets' pattern).
TIMEOUT_FACTOR = float(os.environ.get("COMFYWATCH_TESTS_TIMEOUT_FACTOR", "1"))


@pytest.fixture(autouse=True)
def _clear_structlog_context() -> Iterator[None]:
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()
