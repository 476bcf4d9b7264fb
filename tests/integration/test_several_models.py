"""Several models in one real server: the config file, the official clients' runtime changes,
every worker converging, and changes under load never failing another model's requests.

The server runs 2 REST and 2 gRPC workers (separate processes): a change that reached one of
them is checked on all four through the per-worker gauge ``serving_worker_served_version``.
"""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc
from tritonclient.utils import InferenceServerException

from client.api import connect
from client.base import ModelSpec
from contract import INPUT_SHAPE, METRICS_PATH
from tests.integration.conftest import BackgroundLoad, RunningServer, copy_repository, start_server

NUM_WORKERS = 2  # per protocol
WORKERS = 2 * NUM_WORKERS
WAIT_S = 60.0
LOAD_DEADLINE_S = 150.0
IMAGE = np.random.default_rng(3).random((1, *INPUT_SHAPE), dtype=np.float32)


def _config(models: dict[str, Path], labels: dict[str, dict[str, int]] | None = None) -> str:
    items = []
    for name, base in models.items():
        extra = "".join(f' version_labels {{ key: "{k}" value: {v} }}'
                        for k, v in (labels or {}).get(name, {}).items())
        items.append(f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow"{extra} }}')
    return "model_config_list {\n  " + "\n  ".join(items) + "\n}\n"


@pytest.fixture
def models(model_base_path: Path, tmp_path: Path) -> dict[str, Path]:
    """Three private repositories of the test model: lenet5, other and third."""
    return {name: copy_repository(Path(model_base_path), tmp_path / "models" / name)
            for name in ("lenet5", "other", "third")}


@pytest.fixture
def servers(tmp_path: Path):
    started: list[RunningServer] = []

    def start(config: str, *flags: str, wait: bool = True) -> RunningServer:
        path = tmp_path / f"models-{len(started)}.config"
        path.write_text(config)
        server = start_server(None, tmp_path / f"server-{len(started)}.log", "--num_workers",
                              str(NUM_WORKERS), *flags, wait=wait, model_config_file=path)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def served_by_worker(server: RunningServer) -> dict[str, set[str]]:
    """worker -> the models it serves now (any version), from the per-worker gauge."""
    with urllib.request.urlopen(server.rest_url + METRICS_PATH, timeout=10) as response:
        text = response.read().decode()
    served: dict[str, set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(text):
        if family.name == "serving_worker_served_version":
            for sample in family.samples:
                if sample.value == 1:
                    served[sample.labels["worker"]].add(sample.labels["model"])
    return dict(served)


def every_worker_serves(server: RunningServer, expected: set[str]) -> bool:
    served = served_by_worker(server)
    return len(served) == WORKERS and all(models == expected for models in served.values())


def _until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _reload(server: RunningServer, config: dict[str, Path]) -> None:
    request = model_management_pb2.ReloadConfigRequest()
    for name, base in config.items():
        item = request.config.model_config_list.config.add()
        item.name, item.base_path, item.model_platform = name, str(base), "tensorflow"
    with grpc.insecure_channel(server.grpc_target) as channel:
        response = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
            request, timeout=60)
    assert response.status.error_code == 0, response


def test_tf_servings_reload_config_reaches_every_worker_before_it_answers(servers, models) -> None:
    server = servers(_config({"lenet5": models["lenet5"]}), "--model_control_mode", "explicit")
    # Ready is one worker of each protocol answering; all four up before the call counts them.
    _until(lambda: every_worker_serves(server, {"lenet5"}), "every worker to start")

    _reload(server, {"lenet5": models["lenet5"], "third": models["third"]})
    # The answer came: every worker serves the new model, whichever connection asks.
    assert every_worker_serves(server, {"lenet5", "third"})
    for _ in range(4):
        with connect(grpc=server.grpc_target, spec=ModelSpec(name="third")) as client:
            assert client.predict(IMAGE).model_version == 1
        with connect(rest=server.rest_url, spec=ModelSpec(name="third"), protocol="v2") as client:
            assert client.predict(IMAGE).model_version == 1

    _reload(server, {"third": models["third"]})
    assert every_worker_serves(server, {"third"})
    with pytest.raises(Exception, match="model 'lenet5' is not served here \\(served models: 'third'\\)"):
        with connect(rest=server.rest_url) as client:
            client.predict(IMAGE)


def test_tritonclients_repository_calls_over_both_transports(servers, models) -> None:
    server = servers(_config({"lenet5": models["lenet5"], "other": models["other"]}),
                     "--model_control_mode", "explicit")
    _until(lambda: every_worker_serves(server, {"lenet5", "other"}), "every worker to start")
    http = triton_http.InferenceServerClient(server.rest_url.removeprefix("http://"))
    rpc = triton_grpc.InferenceServerClient(server.grpc_target)
    expected = [{"name": "lenet5", "version": "1", "state": "READY", "reason": ""},
                {"name": "other", "version": "1", "state": "READY", "reason": ""}]
    assert http.get_model_repository_index() == expected
    assert [dict(m) for m in rpc.get_model_repository_index(as_json=True)["models"]] == [
        {"name": "lenet5", "version": "1", "state": "READY"},
        {"name": "other", "version": "1", "state": "READY"}]

    rpc.unload_model("other")
    assert every_worker_serves(server, {"lenet5"})
    assert not http.is_model_ready("other") and http.is_model_ready("lenet5")
    assert http.get_model_repository_index()[1] == {
        "name": "other", "version": "", "state": "UNAVAILABLE", "reason": "unloaded"}
    http.load_model("other")
    assert every_worker_serves(server, {"lenet5", "other"}) and rpc.is_model_ready("other")
    http.unload_model("other")
    assert every_worker_serves(server, {"lenet5"})
    rpc.load_model("other")
    assert every_worker_serves(server, {"lenet5", "other"})

    with pytest.raises(InferenceServerException, match="not in the model config"):
        http.load_model("nope")
    with pytest.raises(InferenceServerException, match="not supported"):
        http.load_model("other", config='{"backend": "onnxruntime"}')


def test_runtime_changes_are_refused_unless_explicit_and_the_index_stays_readable(servers, models) -> None:
    server = servers(_config({"lenet5": models["lenet5"]}))
    _until(lambda: every_worker_serves(server, {"lenet5"}), "every worker to start")
    http = triton_http.InferenceServerClient(server.rest_url.removeprefix("http://"))
    assert [m["name"] for m in http.get_model_repository_index()] == ["lenet5"]
    with pytest.raises(InferenceServerException, match="--model_control_mode explicit"):
        http.unload_model("lenet5")
    with pytest.raises(grpc.RpcError) as caught:
        _reload(server, {})
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    request = urllib.request.Request(server.rest_url + "/v2/repository/models/lenet5/unload",
                                     data=b"", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403
    assert every_worker_serves(server, {"lenet5"})


def test_every_api_routes_by_name_and_an_unknown_model_names_the_served_ones(servers, models) -> None:
    server = servers(_config({"lenet5": models["lenet5"], "other": models["other"]},
                             {"other": {"stable": 1}}))
    for name in ("lenet5", "other"):
        for protocol, kwargs in (("tfserving", {"rest": server.rest_url}),
                                 ("tfserving", {"grpc": server.grpc_target}),
                                 ("v2", {"rest": server.rest_url}), ("v2", {"grpc": server.grpc_target})):
            with connect(protocol=protocol, spec=ModelSpec(name=name), **kwargs) as client:
                assert client.predict(IMAGE).digits.shape == (1,)
                assert client.metadata().name == name
    with connect(rest=server.rest_url, spec=ModelSpec(name="other", label="stable")) as client:
        assert client.status()[0].version == 1
    for path in ("/v1/models/nope", "/v1/models/nope/metadata", "/v2/models/nope", "/v2/models/nope/config"):
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.rest_url + path, timeout=10)
        assert missing.value.code == 404
        assert b"served models: 'lenet5', 'other'" in missing.value.read()
    with connect(grpc=server.grpc_target, spec=ModelSpec(name="nope")) as client:
        with pytest.raises(Exception, match="NOT_FOUND.*served models: 'lenet5', 'other'"):
            client.predict(IMAGE)


def test_a_broken_config_file_stops_the_start_and_a_broken_change_is_refused(servers, models) -> None:
    broken = servers('model_config_list { config { name: "x" base_pth: "/m" } }', wait=False)
    assert broken.process.wait(timeout=30) == 2
    assert 'has no field named \\"base_pth\\"' in broken.log()  # a JSON log line

    server = servers(_config({"lenet5": models["lenet5"]}), "--model_config_file_poll_wait_seconds", "0.3")
    _until(lambda: every_worker_serves(server, {"lenet5"}), "every worker to start")
    config_file = Path(server.args[server.args.index("--model_config_file") + 1])
    config_file.write_text(_config({"lenet5": models["lenet5"], "other": models["other"]}))
    _until(lambda: every_worker_serves(server, {"lenet5", "other"}), "the changed config file")
    config_file.write_text("model_config_list { config { name: ")
    _until(lambda: "refused the changed model config file" in server.log(), "the refusal")
    assert every_worker_serves(server, {"lenet5", "other"})
    with connect(rest=server.rest_url, spec=ModelSpec(name="other")) as client:
        assert client.predict(IMAGE).digits.shape == (1,)


class Load(BackgroundLoad):
    """Threads predicting on one model over TF Serving REST, V2 REST and gRPC until stopped."""

    def __init__(self, server: RunningServer, model: str) -> None:
        spec = ModelSpec(name=model)
        super().__init__({
            "rest": lambda: connect(rest=server.rest_url, spec=spec),
            "v2-rest": lambda: connect(rest=server.rest_url, protocol="v2", spec=spec),
            "grpc": lambda: connect(grpc=server.grpc_target, spec=spec),
        }, LOAD_DEADLINE_S)

    def request(self, name: str, client) -> None:
        client.predict(IMAGE)


def test_adding_changing_and_removing_models_under_load_never_fails_another_models_request(
    servers, models, tmp_path
) -> None:
    server = servers(_config({"lenet5": models["lenet5"]}), "--model_control_mode", "explicit",
                     "--model_config_file_poll_wait_seconds", "0.3")
    config_file = Path(server.args[server.args.index("--model_config_file") + 1])
    _until(lambda: every_worker_serves(server, {"lenet5"}), "every worker to start")
    with Load(server, "lenet5") as load:
        time.sleep(1)
        _reload(server, {"lenet5": models["lenet5"], "other": models["other"]})  # add
        with Load(server, "other") as other_load:
            time.sleep(1)
            config_file.write_text(_config({"lenet5": models["lenet5"], "other": models["third"]},
                                           {"other": {"stable": 1}}))  # change: another base path
            _until(lambda: "config file" in server.log() and every_worker_serves(server, {"lenet5", "other"}),
                   "the file's change")
            time.sleep(1)
        assert other_load.count > 0 and other_load.failures == []
        triton_grpc.InferenceServerClient(server.grpc_target).unload_model("other")  # remove
        _reload(server, {"lenet5": models["lenet5"], "third": models["third"]})  # add again
        config_file.write_text(_config({"lenet5": models["lenet5"]}))  # remove through the file
        _until(lambda: every_worker_serves(server, {"lenet5"}), "the removal")
        time.sleep(1)
    assert load.count > 50, load.count
    assert load.failures == [], load.failures[:5]
    assert server.process.poll() is None
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=40) == 0
