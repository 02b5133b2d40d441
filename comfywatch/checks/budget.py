"""A per-day run budget persisted in a small JSON state file (Cloud canaries cost credits).

The count survives restarts: a crash-looping daemon must not spend ``max_runs_per_day`` on every start.
Writes are atomic (temp file + rename); an unreadable file counts as "budget used up" rather than
"budget reset", erring on the side of not spending the user's money.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import structlog

__all__ = ["DailyBudget"]

log = structlog.get_logger("comfywatch.budget")


def _today(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


class DailyBudget:
    """``limit`` runs per UTC day under ``key`` in a JSON file shared by every canary of the daemon."""

    def __init__(self, path: Path, key: str, limit: int) -> None:
        self.path = path
        self.key = key
        self.limit = limit

    def _read(self) -> dict[str, dict[str, object]] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def used(self, now: float | None = None) -> int | None:
        """Runs recorded today (UTC); ``None`` when the state file is unreadable."""
        now = time.time() if now is None else now
        data = self._read()
        if data is None:
            return None
        entry = data.get(self.key)
        if not isinstance(entry, dict) or entry.get("day") != _today(now):
            return 0
        runs = entry.get("runs")
        return runs if isinstance(runs, int) and runs >= 0 else None

    def allow(self, now: float | None = None) -> bool:
        used = self.used(now)
        return used is not None and used < self.limit

    def record(self, now: float | None = None) -> int:
        """Count one run; returns today's total. Raises OSError when the state cannot be saved."""
        now = time.time() if now is None else now
        used = self.used(now) or 0
        self._write(now, used + 1)
        return used + 1

    def release(self, now: float | None = None) -> int | None:
        """Give back one run recorded today that spent nothing (it was skipped before submitting).

        Returns today's total, or ``None`` when the file is unreadable (then nothing is given back).
        Raises OSError when the state cannot be saved.
        """
        now = time.time() if now is None else now
        used = self.used(now)
        if used is None or used == 0:
            return used
        self._write(now, used - 1)
        return used - 1

    def _write(self, now: float, runs: int) -> None:
        data = self._read() or {}
        data[self.key] = {"day": _today(now), "runs": runs}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".budget-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
            raise
