"""Render the mixin with _config overrides through mixin/render.py, as a user of the committed files would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RENDER = REPO / "mixin" / "render.py"


def render_mixin(out: Path, config: str) -> Path:
    """Run ``render.py --out OUT --config CONFIG`` and return OUT; fails the test with render's stderr."""
    result = subprocess.run([sys.executable, str(RENDER), "--out", str(out), "--config", config],
                            capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return out
