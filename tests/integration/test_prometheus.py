"""A real Prometheus over the real server: the recording rules, the dashboard's queries, the drift alert.

Starts our server (a copy of pretrained/lenet5, loopback, free ports) and Debian's ``prometheus``
binary (loopback, a free port, a temporary TSDB, 1 s scrape and rule-evaluation intervals)
scraping the server's metrics path with the rules of monitoring/rules.yml; steady predict traffic of
MNIST test digits runs over REST and gRPC (TF Serving's protocol and V2) with a trickle of invalid
requests (so errors have series). Then, through Prometheus' HTTP query API:

- every recording rule of monitoring/rules.yml returns data;
- every query of every panel of monitoring/dashboards/digits.json returns data ($model ->
  lenet5, $version -> 1, $__rate_interval -> the shortened window);
- under MNIST test digits (``QUIET_S``), every input statistic's drift z-score has data and stays
  under the ModelInputDrift alert's threshold, the alert's expression is empty (false) and the
  alert never pending or firing; once the load sends inverted digits (1 - x), the expression
  returns series (true) and the alert fires, on ink fraction and mean intensity at least, within
  ``DRIFT_DEADLINE_S``.

Windows shortened: the rules use windows of minutes and hours ([5m], [10m], up to [6h]); the
test writes a copy of monitoring/rules.yml in which every range selector's window is replaced by
``WINDOW`` (``[10m]`` -> ``[20s]``; a subquery ``[10m:1m]`` -> ``[20s:1s]``) and every alert's
``for`` by ``0s``, and loads that copy. Nothing else of the rules changes.

Skipped, saying why, when the ``prometheus`` binary is not installed (Debian: ``prometheus``).
With ``DIGITS_DASHBOARD_FIGURES=<dir>`` (e.g. docs/figures/monitoring) the phases last longer
(``FIGURE_QUIET_S``, ``FIGURE_INVERTED_S``) and the test then renders the dashboard from its
Prometheus into that directory with scripts/render_dashboard.py, both phases shown.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from client.api import connect
from contract import METRICS_PATH, MODEL_NAME, REST_MODELS_PREFIX
from contract.mnist import load_split, to_model_input
from contract.quality import STATISTICS
from loadtest.server import free_port
from tests.integration.conftest import copy_repository, start_server

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "monitoring" / "rules.yml"
DASHBOARD = ROOT / "monitoring" / "dashboards" / "digits.json"
PRETRAINED = ROOT / "pretrained" / MODEL_NAME
PROMETHEUS = shutil.which("prometheus")
FIGURES_ENV = "DIGITS_DASHBOARD_FIGURES"

WINDOW = "20s"  # every range window of the rules and the dashboard's $__rate_interval
DRIFT_ALERT = "ModelInputDrift"
ZSCORES = "model_version_statistic:serving_input_drift:zscore10m"  # what the alert compares
DRIFTED = ("ink_fraction", "mean_intensity")  # the statistics inverted digits move most (1 - x)
PERIOD_S = 0.2  # each load thread: one request per period (5 requests/s)
BATCH = 16  # images per request
INVALID_EVERY = 25  # the REST thread sends one invalid request in this many
DATA_DEADLINE_S = 60.0  # until every rule and panel query has data
QUIET_S = 30.0  # the MNIST phase lasts at least this long, from the first request
DRIFT_DEADLINE_S = 60.0  # inverted digits -> the drift alert's expression is true and it fires
FIGURE_QUIET_S, FIGURE_INVERTED_S = 90.0, 60.0  # the phases, longer, when rendering the figures
READY_TIMEOUT_S = 30.0  # Prometheus up
LOAD_LIMIT_S = 240.0  # no load thread outlives this, whatever happens

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PROMETHEUS is None, reason="the prometheus binary is not installed "
                       "(Debian: apt-get install prometheus); Prometheus rules and dashboard not checked"),
]


# --- Prometheus -----------------------------------------------------------------------------------
def shorten(expr: str) -> str:
    """Every range selector's window (and a subquery's resolution) shortened for the test."""
    return re.sub(r"\[\s*\d+[smhdwy]\s*(:\s*(\d+[smhdwy])?\s*)?\]",
                  lambda m: f"[{WINDOW}:1s]" if m.group(1) else f"[{WINDOW}]", expr)


def shortened_rules(path: Path) -> dict[str, Any]:
    rules = yaml.safe_load(path.read_text())
    for group in rules["groups"]:
        group.pop("interval", None)  # the global 1 s evaluation interval
        for rule in group["rules"]:
            rule["expr"] = shorten(str(rule["expr"]))
            if "for" in rule:
                rule["for"] = "0s"
    return rules


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>: its ``data``; fails the test on an error (a query that does not parse)."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        assert body["status"] == "success", f"{params}: {body.get('errorType')}: {body.get('error')}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        return self.api("query_range", query=expr, start=start, end=end, step="1s")["result"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_prometheus(workdir: Path, rules: dict[str, Any], target: str) -> Prometheus:
    """Debian's prometheus on a free loopback port, scraping ``target`` every second."""
    (workdir / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(workdir / "rules.yml")],
        "scrape_configs": [{"job_name": "digits-serving", "metrics_path": METRICS_PATH,
                            "static_configs": [{"targets": [target]}]}],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    address = f"127.0.0.1:{free_port()}"
    log_path = workdir / "prometheus.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address={address}",
             "--storage.tsdb.retention.time=1h", "--log.level=warn"],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir,
        )  # fmt: skip
    prometheus = Prometheus(f"http://{address}", process, log_path)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}:\n{prometheus.log()}")
        try:
            with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return prometheus
        except OSError:
            pass
        time.sleep(0.2)
    prometheus.stop()
    raise TimeoutError(f"prometheus not ready within {READY_TIMEOUT_S:.0f} s:\n{prometheus.log()}")


# --- Load -----------------------------------------------------------------------------------------
class Load:
    """Steady traffic: one thread per (API, protocol), each sending ``BATCH`` MNIST test digits
    every ``PERIOD_S``; ``inverted`` switches every thread to 1 - x. The TF Serving REST thread
    sends one invalid request in ``INVALID_EVERY`` instead (so error ratios have series)."""

    def __init__(self, server, images: np.ndarray) -> None:
        self.images = images
        self.inverted = threading.Event()
        self.stop = threading.Event()
        self.failures: list[tuple[str, str]] = []
        self.predict_url = f"{server.rest_url}{REST_MODELS_PREFIX}/{MODEL_NAME}:predict"
        clients = {
            "rest": lambda: connect(rest=server.rest_url),
            "rest-v2": lambda: connect(rest=server.rest_url, protocol="v2"),
            "grpc": lambda: connect(grpc=server.grpc_target),
            "grpc-v2": lambda: connect(grpc=server.grpc_target, protocol="v2"),
        }
        self.threads = [threading.Thread(target=self._loop, args=(name, make, seed), daemon=True)
                        for seed, (name, make) in enumerate(clients.items())]

    def batch(self, rng: np.random.Generator) -> np.ndarray:
        images = self.images[rng.integers(0, len(self.images), BATCH)]
        return 1.0 - images if self.inverted.is_set() else images

    def _loop(self, name: str, make_client, seed: int) -> None:
        rng = np.random.default_rng(seed)
        deadline = time.monotonic() + LOAD_LIMIT_S
        sent = 0
        with make_client() as client:
            while not self.stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                sent += 1
                try:
                    if name == "rest" and sent % INVALID_EVERY == 0:
                        self._invalid()
                    else:
                        client.predict(self.batch(rng))
                except Exception as exc:  # every failure counts, whatever its type
                    self.failures.append((name, repr(exc)))
                self.stop.wait(max(0.0, PERIOD_S - (time.monotonic() - started)))

    def _invalid(self) -> None:
        """A predict request of the wrong shape (the client library would refuse to send it): 400."""
        request = urllib.request.Request(self.predict_url, data=b'{"instances": [[0.5, 0.5]]}',
                                         headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except urllib.error.HTTPError as exc:
            assert exc.code == 400, f"an invalid request answered {exc.code}"
        else:
            raise AssertionError("an invalid request was answered 200")

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


# --- The stack ------------------------------------------------------------------------------------
@dataclass
class Stack:
    prometheus: Prometheus
    load: Load
    started: float  # unix time of the first request


@pytest.fixture(scope="module")
def stack(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Server, Prometheus and MNIST load, for the whole module (its tests run in order)."""
    workdir = tmp_path_factory.mktemp("prometheus")
    images, _ = load_split("t10k", str(mnist_dir))
    repository = copy_repository(PRETRAINED, workdir / MODEL_NAME)
    server = start_server(repository, workdir / "server.log", "--num_workers", "2", "--access_log", "false")
    try:
        target = urllib.parse.urlsplit(server.rest_url).netloc
        prometheus = start_prometheus(workdir, shortened_rules(RULES), target)
        try:
            with Load(server, to_model_input(images)) as load:
                yield Stack(prometheus, load, time.time())
            assert load.failures == [], load.failures[:5]
        finally:
            prometheus.stop()
    finally:
        server.stop()


# --- What the rules and the dashboard ask ------------------------------------------------------------
def recording_rules() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["record"] for group in groups for rule in group["rules"] if "record" in rule]


def alert_expr(name: str) -> str:
    groups = shortened_rules(RULES)["groups"]
    hits = [rule["expr"] for group in groups for rule in group["rules"] if rule.get("alert") == name]
    assert len(hits) == 1, f"monitoring/rules.yml: expected one alert {name}, found {len(hits)}"
    return hits[0]


def panel_queries() -> dict[str, str]:
    """'panel title / refId' -> its expression, the dashboard's variables substituted."""
    variables = {"model": MODEL_NAME, "version": "1", "__rate_interval": WINDOW, "__interval": "1s",
                 "__range": WINDOW}
    out = {}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name in sorted(variables, key=len, reverse=True):
                expr = expr.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
            out[f"{panel['title']} / {target['refId']}"] = expr
    return out


def wait_for_data(prometheus: Prometheus, queries: dict[str, str]) -> None:
    """Poll until every query returns at least one series; fail naming the empty ones."""
    deadline = time.monotonic() + DATA_DEADLINE_S
    empty = dict(queries)
    while empty and time.monotonic() < deadline:
        empty = {name: expr for name, expr in empty.items() if not prometheus.query(expr)}
        if empty:
            time.sleep(1.0)
    assert not empty, f"no data within {DATA_DEADLINE_S:.0f} s of load: {empty}"


# --- Tests (in this order: the last one switches the load to inverted digits) ----------------------
def test_every_recording_rule_returns_data(stack: Stack) -> None:
    names = recording_rules()
    assert names, "monitoring/rules.yml records nothing"
    wait_for_data(stack.prometheus, {name: name for name in names})


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    queries = panel_queries()
    assert queries
    wait_for_data(stack.prometheus, queries)


def test_drift_alert_is_quiet_on_mnist_and_fires_on_inverted_digits(stack: Stack) -> None:
    prometheus, load = stack.prometheus, stack.load
    expr = alert_expr(DRIFT_ALERT)
    threshold = float(re.search(ZSCORES + r"\s*>\s*([0-9.]+)", expr).group(1))
    figures = os.environ.get(FIGURES_ENV)
    time.sleep(max(0.0, stack.started + (FIGURE_QUIET_S if figures else QUIET_S) - time.time()))
    switched = time.time()
    # MNIST test digits: every statistic's z-score there and under the threshold, the alert quiet.
    zscores = prometheus.query_range(f'{ZSCORES}{{model="{MODEL_NAME}"}}', stack.started, switched)
    assert {s["metric"]["statistic"] for s in zscores} == set(STATISTICS), zscores
    worst = max(float(value) for s in zscores for _, value in s["values"])
    assert worst < threshold, f"z-score {worst:.2f} under MNIST test digits"
    assert prometheus.query_range(expr, stack.started, switched) == [], f"{DRIFT_ALERT} true under MNIST"
    assert prometheus.query_range(f'ALERTS{{alertname="{DRIFT_ALERT}"}}', stack.started, switched) == []
    # Inverted digits (1 - x): the expression turns true, the alert fires (its `for` shortened).
    load.inverted.set()
    wait_until_true(prometheus, expr, switched)
    firing = f'ALERTS{{alertname="{DRIFT_ALERT}", alertstate="firing", statistic=~"{"|".join(DRIFTED)}"}}'
    wait_until_true(prometheus, f"count({firing}) == {len(DRIFTED)}", switched)
    print(f"MNIST: highest z-score {worst:.2f}; inverted: {DRIFT_ALERT} firing "
          f"{time.time() - switched:.1f} s after the switch")
    if figures:
        time.sleep(max(0.0, switched + FIGURE_INVERTED_S - time.time()))
        render_figures(prometheus, Path(figures), stack.started, switched)


def wait_until_true(prometheus: Prometheus, expr: str, since: float) -> list[dict[str, Any]]:
    """Poll until ``expr`` returns a series (within ``DRIFT_DEADLINE_S`` of ``since``); those series."""
    while not (result := prometheus.query(expr)):
        assert time.time() < since + DRIFT_DEADLINE_S, f"{expr} still empty {DRIFT_DEADLINE_S:.0f} s on"
        time.sleep(1.0)
    return result


def render_figures(prometheus: Prometheus, out: Path, started: float, switched: float) -> None:
    """The dashboard over both phases, as PNGs in ``out`` (scripts/render_dashboard.py)."""
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "render_dashboard.py"), prometheus.url,
         "--start", f"{started - 5:.0f}", "--end", f"{time.time():.0f}", "--step", "1s",
         "--rate-interval", WINDOW, "--out", str(ROOT / out), "--mark", f"{switched:.0f}=inverted digits"],
        check=True, timeout=120,
    )  # fmt: skip
