"""The Grafana dashboard (monitoring/dashboards/digits.json) and the ConfigMap that ships it.

Offline checks: well-formed JSON of a current Grafana schema; the ``datasource`` and ``model``
variables; every panel with a Prometheus datasource, targets and a unique id, on the 24-column
grid without overlaps, of a type scripts/render_dashboard.py draws; every query filtered by
``$model``, naming only recording rules that monitoring/rules.yml records, and parsed by
``promtool check rules`` (the queries as recording rules; skipped without promtool); the panels
the operators need are there. The ConfigMap in k8s/ carries the same bytes and Grafana's sidecar
label. Whether every query returns data from a real Prometheus: tests/integration/test_prometheus.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "monitoring" / "dashboards" / "digits.json"
RULES = ROOT / "monitoring" / "rules.yml"
COMPONENT = ROOT / "k8s" / "components" / "prometheus-operator"
OVERLAYS = ("gpu", "tfserving")  # the overlays that include the component
CONFIGMAP = "digits-grafana-dashboard"
SIDECAR_LABEL = ("grafana_dashboard", "1")
MIN_SCHEMA_VERSION = 39  # Grafana 11.0; 41 is Grafana 12's
DRAWN_TYPES = {"row", "timeseries", "state-timeline", "stat", "heatmap"}  # scripts/render_dashboard.py
PROMETHEUS_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's variables, as the queries' text needs them to parse.
VARIABLES = {"model": "lenet5", "version": "1", "__rate_interval": "1m", "__interval": "15s", "__range": "1h"}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def targets() -> list[tuple[str, dict[str, Any]]]:
    return [(panel["title"], target) for panel in panels() for target in panel["targets"]]


def substituted(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", VARIABLES[name]).replace("$" + name, VARIABLES[name])
    return expr


def recorded() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


# --- The dashboard --------------------------------------------------------------------------------
def test_dashboard_is_a_current_grafana_dashboard() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= MIN_SCHEMA_VERSION
    assert board["uid"] and board["title"] and board["panels"]
    assert "id" not in board or board["id"] is None, "an exported id pins the dashboard to one Grafana"
    assert DASHBOARD.read_text().endswith("}\n")


def test_variables_pick_a_prometheus_datasource_and_a_served_model() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    model = variables["model"]
    assert model["type"] == "query" and model["datasource"] == PROMETHEUS_DATASOURCE
    assert model["definition"] == "label_values(serving_model_version_available, model)"
    assert model["query"] == model["definition"]
    for variable in variables.values():
        assert not variable.get("current"), f"${variable['name']}: a saved selection overrides the default"


def test_every_panel_has_a_prometheus_datasource_targets_and_a_unique_id() -> None:
    every = dashboard()["panels"]
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids)), f"repeated panel ids: {sorted(ids)}"
    for panel in panels():
        assert panel["type"] in DRAWN_TYPES, f"{panel['title']}: {panel['type']} (the render script can't)"
        assert panel["datasource"] == PROMETHEUS_DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']}: no targets"
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{panel['title']}: repeated refIds {refs}"
        for target in panel["targets"]:
            assert target["datasource"] == PROMETHEUS_DATASOURCE, panel["title"]
            assert target["expr"].strip(), f"{panel['title']} {target['refId']}: empty query"


def test_panels_tile_the_grid_without_overlapping() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_every_query_is_filtered_by_the_model_variable() -> None:
    for title, target in targets():
        selectors = re.findall(r"[a-z_:]+\{[^}]*\}", target["expr"])
        assert selectors, f"{title}: {target['expr']}"
        for selector in selectors:
            assert 'model="$model"' in selector, f"{title}: {selector} not filtered by $model"


def test_queries_name_only_recording_rules_that_exist() -> None:
    rules = recorded()
    for title, target in targets():
        for name in re.findall(r"\b([a-z_]+:[a-z0-9_:]+)\b", target["expr"]):
            assert name in rules, f"{title}: {name} is recorded by no rule of monitoring/rules.yml"


def test_the_panels_operators_need_are_there() -> None:
    """Traffic, errors, latency, versions (per worker: a split fleet shows), digits, confidence
    against the card's baseline, drift against the training statistics."""
    queries = " ".join(t["expr"] for _, t in targets())
    for needed in (
        "model_protocol_version:serving_requests:rate5m",
        "model_protocol:serving_request_errors:ratio_rate5m",
        "serving_request_latency_seconds:p50_rate5m",
        "serving_request_latency_seconds:p99_rate5m",
        "serving_model_version_available",
        "serving_worker_served_version",
        "model_version_digit:serving_predictions:rate5m",
        "model_version:serving_prediction_low_confidence:ratio_rate10m",
        'statistic="low_confidence_share"',
        "serving_prediction_confidence_bucket",
        "model_version_statistic:serving_input_drift:zscore10m",
        "model_version_statistic:serving_input:mean10m",
        'moment="mean"',
        'moment="std"',
    ):
        assert needed in queries, f"no panel queries {needed}"
    workers = [t for _, t in targets() if "serving_worker_served_version" in t["expr"]]
    assert any("worker" in t["legendFormat"] for t in workers), "one series per worker"


def test_series_overrides_name_series_the_panel_draws() -> None:
    for panel in panels():
        legends = {t["legendFormat"] for t in panel["targets"]}
        for override in panel.get("fieldConfig", {}).get("overrides", []):
            matcher = override["matcher"]
            if matcher["id"] == "byName":
                assert matcher["options"] in legends, f"{panel['title']}: {matcher['options']}"
            for prop in override["properties"]:
                if prop["id"] == "custom.fillBelowTo":
                    assert prop["value"] in legends, f"{panel['title']}: fills to {prop['value']}"


def promtool_check(promtool: str, rules: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True,
                          timeout=60)


def test_every_query_parses(tmp_path: Path) -> None:
    """promtool (2.42) has no PromQL command: the queries become recording rules it checks."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: prometheus): queries not parsed here "
                    "(tests/integration/test_prometheus.py runs them)")
    rules = [{"record": f"dashboard:query_{i}:check", "expr": substituted(t["expr"])}
             for i, (_, t) in enumerate(targets())]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool_check(promtool, path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_promtool_check_would_catch_a_broken_query(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: prometheus)")
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [
        {"record": "x:y:z", "expr": 'sum by (le (rate(serving_requests_total{model="lenet5"}[1m]))'}]}]}))
    assert promtool_check(promtool, path).returncode != 0


# --- The ConfigMap --------------------------------------------------------------------------------
def generator() -> dict[str, Any]:
    kustomization = yaml.safe_load((COMPONENT / "kustomization.yaml").read_text())
    hits = [g for g in kustomization.get("configMapGenerator", []) if g["name"] == CONFIGMAP]
    assert len(hits) == 1, f"{COMPONENT}/kustomization.yaml: no configMapGenerator {CONFIGMAP}"
    return hits[0]


def test_the_configmap_is_generated_from_a_copy_identical_to_the_dashboard() -> None:
    (source,) = generator()["files"]
    copy = COMPONENT / source.split("=")[-1]
    assert copy.read_bytes() == DASHBOARD.read_bytes(), (
        f"{copy.relative_to(ROOT)} differs from {DASHBOARD.relative_to(ROOT)}: "
        f"cp {DASHBOARD.relative_to(ROOT)} {copy.relative_to(ROOT)}")


def test_the_configmap_carries_grafanas_sidecar_label() -> None:
    options = generator()["options"]
    key, value = SIDECAR_LABEL
    assert options["labels"][key] == value
    assert options.get("disableNameSuffixHash") is True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_ship_the_dashboard_as_grafana_loads_it(overlay: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (Debian: kubernetes-client): the overlay is not rendered")
    result = subprocess.run([kubectl, "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    maps = [d for d in yaml.safe_load_all(result.stdout)
            if d and d["kind"] == "ConfigMap" and d["metadata"]["name"] == CONFIGMAP]
    assert len(maps) == 1, f"{overlay}: expected one ConfigMap {CONFIGMAP}"
    (configmap,) = maps
    key, value = SIDECAR_LABEL
    assert configmap["metadata"]["labels"][key] == value
    assert configmap["metadata"]["namespace"] == "digits"
    assert configmap["data"] == {DASHBOARD.name: DASHBOARD.read_text()}
