"""``doctor --config`` checks each target on its own: a target whose files changed since the configuration was
loaded, or whose checks hit a bug, reports that, keeps what it found before, and never costs the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfywatch.cli import doctor
from comfywatch.cli.doctor import DoctorOptions, Report, run_doctor
from comfywatch.config import load_config
from comfywatch.sim.admin import start_sim
from tests.certs import make_certs

OPTIONS = DoctorOptions(timeout=5.0, no_canary=True)


def _ids(report: Report) -> dict[str, list[tuple[str, str]]]:
    return {target.name: [(check.id, check.status) for check in target.checks] for target in report.targets}


async def test_a_ca_file_gone_since_the_load_fails_its_target_alone(tmp_path: Path) -> None:
    """Reported as the configuration's problem (not a comfywatch bug), and the other targets are checked."""
    ca = make_certs(tmp_path / "certs").ca_cert
    async with await start_sim(targets=2) as sim:
        path = tmp_path / "comfywatch.toml"
        path.write_text(f'[[targets]]\nname = "a"\nurl = "{sim.target_url(0)}"\n'
                        f'[[targets]]\nname = "b"\nurl = "https://127.0.0.1:1"\ntls_ca_file = "{ca}"\n'
                        f'[[targets]]\nname = "c"\nurl = "{sim.target_url(1)}"\n', encoding="utf-8")
        config = load_config(path)
        ca.unlink()
        report = await run_doctor(config, list(config.targets), OPTIONS)
    checks = _ids(report)
    assert list(checks) == ["a", "b", "c"]
    assert checks["b"] == [("config.files", "fail")]
    gone = report.targets[1].checks[0]
    assert "FileNotFoundError" in gone.summary and gone.hint is not None and "check-config" in gone.hint
    for name in ("a", "c"):
        assert ("http.api", "ok") in checks[name], checks[name]


async def test_a_bug_in_a_later_check_keeps_the_targets_earlier_results(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(doctor, "_canary_check", broken)
    async with await start_sim() as sim:
        config = load_config(None, {"COMFYWATCH_URL": sim.url})
        report = await run_doctor(config, list(config.targets), DoctorOptions(timeout=5.0))
    checks = _ids(report)[config.targets[0].name]
    assert ("http.api", "ok") in checks, checks
    assert checks[-1] == ("doctor.internal", "fail"), checks
