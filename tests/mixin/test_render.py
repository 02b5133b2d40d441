"""mixin/render.py: the committed alerts/ and dashboards/ are exactly what the jsonnet under mixin/ renders."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.mixin.render import REPO, run_render


def test_committed_files_match_a_fresh_render() -> None:
    result = run_render("--check")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_check_names_an_edited_file_and_a_dashboard_nothing_renders(tmp_path: Path) -> None:
    assert run_render("--out", str(tmp_path)).returncode == 0
    rules = tmp_path / "alerts" / "comfywatch.rules.yml"
    rules.write_text(rules.read_text(encoding="utf-8").replace("for: 5m", "for: 1m", 1), encoding="utf-8")
    (tmp_path / "dashboards" / "hand-made.json").write_text("{}\n", encoding="utf-8")
    result = run_render("--check", "--out", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "alerts/comfywatch.rules.yml: differs from a fresh render of mixin/ (run: python mixin/render.py)",
        "dashboards/hand-made.json: differs from a fresh render of mixin/ (run: python mixin/render.py)",
    ]


def test_config_override_reaches_every_alert(tmp_path: Path) -> None:
    result = run_render("--out", str(tmp_path), "--config", '{runbookURLPattern: "https://runbooks.example/%s"}')
    assert result.returncode == 0, result.stderr
    groups = yaml.safe_load((tmp_path / "alerts" / "comfywatch.rules.yml").read_text(encoding="utf-8"))["groups"]
    alerts = [rule for group in groups for rule in group["rules"] if "alert" in rule]
    assert alerts
    assert {rule["annotations"]["runbook_url"] for rule in alerts} == {
        f"https://runbooks.example/{rule['alert'].lower()}" for rule in alerts
    }


def test_only_writes_the_files_under_its_prefix(tmp_path: Path) -> None:
    assert run_render("--out", str(tmp_path), "--only", "dashboards/").returncode == 0
    assert not (tmp_path / "alerts").exists()
    assert sorted(path.name for path in (tmp_path / "dashboards").iterdir()) == sorted(
        path.name for path in (REPO / "dashboards").glob("*.json")
    )


def test_a_jsonnet_error_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    result = run_render("--out", str(tmp_path), "--config", "{runbookURLPattern: }")
    assert result.returncode == 2
    assert result.stderr.startswith("mixin: ")
    assert not any(tmp_path.iterdir())
