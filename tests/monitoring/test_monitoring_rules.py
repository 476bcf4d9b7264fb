"""The Prometheus rules, monitoring/rules.yml: valid (``promtool check rules``), right on example
series (``promtool test rules`` over tests/monitoring/*_test.yml), one source for the
PrometheusRule in k8s/, and complete: every recording rule named level:metric:operations and
tested, every alert with a severity, a summary, a runbook in docs/monitoring.md and a case that
fires and one that does not. promtool comes with Debian's ``prometheus`` package (``make test``
installs it); without it the promtool tests are skipped, saying why.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "monitoring" / "rules.yml"
GENERATOR = ROOT / "monitoring" / "prometheusrule.py"
MANIFEST = ROOT / "k8s" / "components" / "prometheus-operator" / "prometheusrule.yaml"
DOCS = ROOT / "docs" / "monitoring.md"
UNIT_TESTS = sorted(Path(__file__).parent.glob("*_test.yml"))  # promtool unit-test files
SEVERITIES = {"critical", "warning"}
# level:metric:operations (https://prometheus.io/docs/practices/rules/), levels from our labels.
LEVEL = r"(model|protocol|version|digit|statistic)"
RECORD_NAME = re.compile(rf"{LEVEL}(_{LEVEL})*:serving_[a-z0-9_]+:[a-z0-9_]+")


def _groups() -> list[dict[str, Any]]:
    return yaml.safe_load(RULES.read_text())["groups"]


def _rules(key: str) -> list[dict[str, Any]]:
    return [rule for group in _groups() for rule in group["rules"] if key in rule]


def _unit_tests() -> list[dict[str, Any]]:
    return [test for path in UNIT_TESTS for test in yaml.safe_load(path.read_text())["tests"]]


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed here (Debian: prometheus; `make test` installs it)")
    return subprocess.run([promtool, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


# --- promtool -----------------------------------------------------------------------------------------
def test_promtool_checks_the_rules() -> None:
    result = _promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    assert UNIT_TESTS, "no rule tests in tests/monitoring"
    result = _promtool("test", "rules", *UNIT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_fails_a_broken_rule_and_a_wrong_expectation(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"record": "a:b:c", "expr": "sum(rate(x[5m])"}]}]}))  # a parenthesis missing
    assert _promtool("check", "rules", broken).returncode != 0
    (tmp_path / "rules.yml").write_text(RULES.read_text())
    wrong = tmp_path / "wrong_test.yml"
    wrong.write_text(yaml.safe_dump({
        "rule_files": ["rules.yml"], "evaluation_interval": "1m",
        "tests": [{"interval": "1m",
                   "input_series": [{"series": 'serving_model_version_available{model="m",version="1"}',
                                     "values": "0+0x20"}],
                   "alert_rule_test": [{"alertname": "ModelNoVersionAvailable", "eval_time": "15m",
                                        "exp_alerts": []}]}],
    }))
    result = _promtool("test", "rules", wrong)
    assert result.returncode != 0 and "ModelNoVersionAvailable" in result.stdout + result.stderr


# --- One source: the PrometheusRule is rules.yml ------------------------------------------------------
def test_prometheus_rule_manifest_holds_the_same_groups() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert manifest["spec"] == yaml.safe_load(RULES.read_text())


def test_prometheus_rule_manifest_is_what_the_generator_writes() -> None:
    result = subprocess.run([sys.executable, str(GENERATOR), "--check"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# --- Complete -----------------------------------------------------------------------------------------
def test_recording_rules_are_named_level_metric_operations() -> None:
    records = _rules("record")
    assert records
    bad = [r["record"] for r in records if not RECORD_NAME.fullmatch(r["record"])]
    assert not bad, bad


def test_every_recording_rule_has_a_unit_test() -> None:
    exprs = " ".join(case["expr"] for test in _unit_tests() for case in test.get("promql_expr_test", []))
    evaluated = set(re.findall(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", exprs))
    untested = sorted({r["record"] for r in _rules("record")} - evaluated)
    assert not untested, f"recording rules no promql_expr_test evaluates: {untested}"


def test_every_alert_has_severity_summary_and_a_runbook_in_the_docs() -> None:
    anchors = _anchors(DOCS.read_text())
    for rule in _rules("alert"):
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule.get("for"), f"{name}: no `for`, it would fire on one evaluation"
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert annotations["runbook_url"] == f"docs/monitoring.md#{name.lower()}", name
        assert name.lower() in anchors, f"{name}: no runbook heading in docs/monitoring.md"


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    cases = [case for test in _unit_tests() for case in test.get("alert_rule_test", [])]
    for name in (rule["alert"] for rule in _rules("alert")):
        outcomes = {bool(case["exp_alerts"]) for case in cases if case["alertname"] == name}
        assert True in outcomes, f"{name}: no case in tests/monitoring where it fires"
        assert False in outcomes, f"{name}: no case in tests/monitoring where it stays quiet"


def test_docs_name_every_rule() -> None:
    docs = DOCS.read_text()
    names = [rule.get("record") or rule["alert"] for rule in _rules("expr")]
    missing = [name for name in names if name not in docs]
    assert not missing, f"not in docs/monitoring.md: {missing}"
