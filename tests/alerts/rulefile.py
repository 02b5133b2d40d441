"""Load alerts/comfywatch.rules.yml, its promtool tests and the docs that describe it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ALERTS",
    "ALERTS_DOC",
    "RULES_FILE",
    "RULE_TESTS_DIR",
    "RUNBOOK",
    "alert_names",
    "alerting_rules",
    "all_rules",
    "github_anchor",
    "load_rules",
    "markdown_headings",
    "recorded_names",
    "recording_rules",
    "rule_test_files",
]

REPO = Path(__file__).resolve().parents[2]
RULES_FILE = REPO / "alerts" / "comfywatch.rules.yml"
RULE_TESTS_DIR = REPO / "alerts" / "tests"
RUNBOOK = REPO / "docs" / "runbook.md"
ALERTS_DOC = REPO / "docs" / "alerts.md"

# Every alert the rules file defines: target and fleet health, queue, canary, HTTP failures, jobs, RAM,
# VRAM, WebSocket, TLS, Comfy Cloud billing and queue, comfywatch itself, and what a server offers (watched
# workflows, pools that drift apart, custom node packs that fail to import).
ALERTS = (
    "ComfyUIDown",
    "ComfyUIQueueStalled",
    "ComfyUIQueueBacklog",
    "ComfyUIWorkerNotConsuming",
    "ComfyUICanaryFailing",
    "ComfyUICanarySlow",
    "ComfyUIAuthFailing",
    "ComfyUIRateLimited",
    "ComfyUIServerErrors",
    "ComfyUIJobFailureRateHigh",
    "ComfyUIOutOfMemory",
    "ComfyUIVRAMLow",
    "ComfyUITLSCertExpiringSoon",
    "ComfyCloudCreditsExhausted",
    "ComfyCloudCreditsLow",
    "ComfyCloudSubscriptionInactive",
    "ComfywatchDown",
    "ComfywatchCheckOverruns",
    "ComfywatchConfigReloadFailed",
    "ComfyCloudCreditsRunningOut",
    "ComfyUICheckStale",
    "ComfyCloudQueueFull",
    "ComfyCloudJobsStuck",
    "ComfyUIFleetDegraded",
    "ComfyUICanaryNotRunning",
    "ComfyUIRAMLow",
    "ComfyUIWebSocketLost",
    "ComfywatchAbsent",
    "ComfyUIWorkflowBroken",
    "ComfyUIPoolDrift",
    "ComfyUICustomNodeImportFailed",
)


def load_rules(path: Path = RULES_FILE) -> dict[str, Any]:
    """The rules document (``{"groups": [...]}``)."""
    document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return document


def all_rules(path: Path = RULES_FILE) -> list[dict[str, Any]]:
    """Every rule of every group, in file order."""
    return [rule for group in load_rules(path)["groups"] for rule in group["rules"]]


def alerting_rules(path: Path = RULES_FILE) -> list[dict[str, Any]]:
    """The alerting rules (several may share one alert name, e.g. two severities)."""
    return [rule for rule in all_rules(path) if "alert" in rule]


def recording_rules(path: Path = RULES_FILE) -> list[dict[str, Any]]:
    """The recording rules."""
    return [rule for rule in all_rules(path) if "record" in rule]


def alert_names(path: Path = RULES_FILE) -> list[str]:
    """Distinct alert names, in file order."""
    return list(dict.fromkeys(rule["alert"] for rule in alerting_rules(path)))


def recorded_names(path: Path = RULES_FILE) -> set[str]:
    """Names of the series the recording rules create."""
    return {rule["record"] for rule in recording_rules(path)}


def rule_test_files() -> list[Path]:
    """The promtool test files, sorted."""
    return sorted(RULE_TESTS_DIR.glob("*.yml"))


def markdown_headings(path: Path) -> list[str]:
    """Text of every ATX heading (``#``..``######``) in a Markdown file."""
    return [
        m.group(2).strip()
        for m in re.finditer(r"^(#{1,6})\s+(.+?)\s*#*\s*$", path.read_text(encoding="utf-8"), re.MULTILINE)
    ]


def github_anchor(heading: str) -> str:
    """The fragment GitHub generates for a heading: lower case, punctuation dropped, spaces to dashes."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")
