"""Golden tests: the same ``/metrics`` bytes for the same simulated fleet, the same ``doctor --json`` for every
fault mode of the simulator, as the files in ``tests/golden/data`` recorded (see README.md there).

Only what no fixed clock pins down is masked (``tests.golden.masks``). A difference is a change of behaviour:
the assertion shows it as a diff against the recording.
"""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TIMEOUT_FACTOR
from tests.golden.doctor_faults import CASES, DoctorCase, run_case
from tests.golden.masks import mask_doctor, mask_exposition

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
#: Set to 1 to record the goldens from this tree instead of comparing with them.
UPDATE_ENV = "COMFYWATCH_UPDATE_GOLDEN"


def matches_golden(path: Path, actual: str) -> None:
    """*actual* is the recording at *path* byte for byte (or becomes it, when recording)."""
    if os.environ.get(UPDATE_ENV) == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    expected = path.read_text(encoding="utf-8")
    diff = difflib.unified_diff(expected.splitlines(keepends=True), actual.splitlines(keepends=True),
                                fromfile=f"{path.relative_to(REPO)} (recorded)", tofile="this tree")
    assert actual == expected, "".join(diff)


def test_metrics_of_a_simulated_fleet(tmp_path: Path) -> None:
    """Two rounds of every check over the fleet of ``tests.golden.fleet``, rendered in both formats."""
    out = tmp_path / "fleet.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.golden.fleet", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=90 * TIMEOUT_FACTOR, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rendered = json.loads(out.read_text(encoding="utf-8"))
    matches_golden(DATA / "metrics.txt", mask_exposition(rendered["text"]))
    matches_golden(DATA / "metrics.openmetrics.txt", mask_exposition(rendered["openmetrics"]))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_doctor_json_in_each_fault_mode(case: DoctorCase, tmp_path: Path) -> None:
    run = run_case(case, tmp_path)
    recorded = {"exit_code": run.code, "report": mask_doctor(run.report, run.ports)}
    matches_golden(DATA / "doctor" / f"{case.name}.json", json.dumps(recorded, indent=2, ensure_ascii=False) + "\n")
