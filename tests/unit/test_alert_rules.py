"""docs/alerts/billing.rules.yml: `promtool check rules` and `promtool test rules` pass, every alert has a
unit test that fires it and a playbook section, and every billing_* series a rule reads is one the code
exports (a renamed metric must not leave an alert that can never fire).

promtool comes from Debian's `prometheus` package (`make sysdeps` installs it when missing)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docs" / "alerts" / "billing.rules.yml"
TESTS = ROOT / "docs" / "alerts" / "billing.rules.test.yml"
PLAYBOOK = ROOT / "docs" / "playbooks" / "performance.md"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian package `prometheus`; `make sysdeps` installs it with apt-get)",
)


def alerts() -> dict[str, dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


@needs_promtool
def test_promtool_check_rules():
    done = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout


@needs_promtool
def test_promtool_test_rules():
    done = subprocess.run(
        [PROMTOOL, "test", "rules", TESTS.name], cwd=TESTS.parent, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_firing_test_a_quiet_series_and_a_playbook_section():
    cases = yaml.safe_load(TESTS.read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        series = {s["series"].split("{")[0] for s in case["input_series"]}
        for check in case["alert_rule_test"]:
            if check.get("exp_alerts"):
                fired.add(check["alertname"])
                # the same case feeds series that must not fire (more input series than alerts expected)
                if len(case["input_series"]) > len(check["exp_alerts"]) or len(series) > 1:
                    quiet.add(check["alertname"])
            else:
                quiet.add(check["alertname"])
    names = set(alerts())
    assert names - fired == set(), "alerts without a test that fires them"
    assert names - quiet == set(), "alerts without series that must not fire them"
    headings = set(re.findall(r"^## (\w+)", PLAYBOOK.read_text(), re.M))
    assert names - headings == set(), "alerts without a section in docs/playbooks/performance.md"
    for name, rule in alerts().items():
        assert rule["annotations"]["playbook"] == f"docs/playbooks/performance.md#{name.lower()}"
        assert rule["labels"]["severity"] in ("warning", "critical")


def test_every_billing_series_in_the_rules_is_exported():
    from billing import metrics, metrics_db

    source = Path(metrics.__file__).read_text() + Path(metrics_db.__file__).read_text()
    exported = set(re.findall(r'"(billing_[a-z_]+)"', source))
    used = set()
    for rule in alerts().values():
        used |= set(re.findall(r"\b(billing_[a-z_]+)", rule["expr"]))
    # counters are exported with _total (declared without or with it); histograms add _bucket/_count/_sum
    stems = {re.sub(r"_(bucket|count|sum)$", "", u) for u in used}
    missing = {u for u in stems if u not in exported and u.removesuffix("_total") not in exported}
    assert missing == set()
