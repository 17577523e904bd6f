"""The alert rules: valid, unit-tested with promtool, each tested and with a runbook."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "serving" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "tests" / "serving" / "prometheus" / "alerts_test.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: scripts/services installs Debian's prometheus package"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, check=False)


def alerts() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_rules_are_valid() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_rules_unit_tests_pass() -> None:
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_is_tested_firing_and_has_a_runbook_section() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    sections = {h.lower() for h in re.findall(r"^## (\w+)$", RUNBOOKS.read_text(), re.M)}
    for rule in alerts():
        name = str(rule["alert"])
        assert name in firing, f"{name}: no promtool test sees it fire"
        anchor = str(rule["annotations"]["runbook_url"]).split("#")[1]  # type: ignore[index]
        assert anchor == name.lower() and anchor in sections, f"{name}: no runbook section"
