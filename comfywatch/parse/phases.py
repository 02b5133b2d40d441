"""The HTTP phases of one request, as the client measures them and the state and exporter carry them on."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PhaseTimes"]


@dataclass(frozen=True, slots=True)
class PhaseTimes:
    """HTTP phases of one request in seconds (``None`` when the phase did not happen, e.g. reused)."""

    dns: float | None
    connect: float | None
    tls: float | None
    processing: float
    transfer: float
