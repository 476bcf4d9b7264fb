"""The manifests, as each overlay renders them, agree with the code and with what a platform team
expects: contract ports, paths and model name; flags the programs accept; the grid's size; a
pipeline that chains itself; servers deployable before any model; images pinned; restricted pod
security; a network policy for every pod; GPU only where asked; storage per cluster.

Every applied kustomization (``ROOTS``) is rendered once with ``kubectl kustomize`` (skipped,
saying why, where kubectl is absent; tests/deploy/test_deploy_lint.py still validates the
files). The contract (the contract package) is the source of truth; the containers' arguments are
parsed by the programs' own parsers and the probes are asked of our REST app.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import PurePosixPath
from typing import Any

import pytest
import yaml
from deploy_support import IMAGES, K8S, ROOT, container_port, flag_values, last, pyproject
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

import contract
from contract import v2
from serving.settings import load_settings
from training.__main__ import build_parser
from training.config import grid, run_config

# What `kubectl apply -k` is pointed at: the pipeline overlays, then the add-ons applied after one.
OVERLAYS = ("gpu", "kind", "tfserving")
ROOTS = {"gpu": K8S / "overlays" / "gpu", "kind": K8S / "overlays" / "kind",
         "tfserving": K8S / "overlays" / "tfserving", "locust": K8S / "locust",
         "kserve": K8S / "kserve"}
GPU_OVERLAYS = {"gpu", "tfserving"}
MONITORED = {"gpu", "tfserving"}  # overlays for clusters with the Prometheus Operator
# Overlay -> (its model server Deployment, that server's container).
SERVER = {"gpu": ("digits-serving", "server"), "kind": ("digits-serving", "server"),
          "tfserving": ("tfserving", "server")}
NAMESPACE = "digits"
MODEL_STATUS_PATH = f"{contract.REST_MODELS_PREFIX}/{contract.MODEL_NAME}"
MODEL_BASE_PATH = str(PurePosixPath("/") / PurePosixPath(*contract.DEFAULT_MODEL_BASE_PATH.parts))
# The models the servers serve (base/models-configmap.yaml), each base path /models/<name>.
SERVED_MODELS = (contract.MODEL_NAME, "lenet5-ensemble")
MODELS_CONFIG_FILE = "/etc/digits/models.config"
# Grid Job -> (its grid, the export Job that waits for it and publishes its model, that model).
GRIDS = {"digits-train-grid": ("lab", "digits-export", contract.MODEL_NAME),
         "digits-train-ensemble": ("ensemble", "digits-export-ensemble", "lenet5-ensemble")}
VERSION = pyproject()["project"]["version"]
WORKLOAD_KINDS = {"Deployment", "Job", "StatefulSet", "DaemonSet"}
# Containers without probes, and why: a Locust worker has no port; it exits by itself when it
# loses the master's heartbeat, and the Deployment restarts it.
NO_PROBES = {("locust-worker", "locust")}
# Pod Security Standards, "restricted" profile: the volume types it allows.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}


# --- Rendering -------------------------------------------------------------------------------------
@functools.cache
def _render(root: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed here (Debian: kubernetes-client): overlays not "
                    "rendered; test_deploy_lint.py still validates every file")
    result = subprocess.run([kubectl, "kustomize", str(ROOTS[root])], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def rendered(root: str) -> list[dict[str, Any]]:
    return list(_render(root))


def get(root: str, kind: str, name: str) -> dict[str, Any]:
    hits = [d for d in rendered(root) if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"{root}: expected one {kind}/{name}, found {len(hits)}"
    return hits[0]


def of_kind(root: str, kind: str) -> list[dict[str, Any]]:
    return [d for d in rendered(root) if d["kind"] == kind]


def pods(root: str) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """(name, pod spec, pod labels) of every pod a root creates, KServe's predictor included
    (its predictor spec is a pod spec with KServe's fields beside it)."""
    out = []
    for doc in rendered(root):
        if doc["kind"] in WORKLOAD_KINDS:
            template = doc["spec"]["template"]
            out.append((doc["metadata"]["name"], template["spec"], template["metadata"]["labels"]))
        elif doc["kind"] == "InferenceService":
            predictor = doc["spec"]["predictor"]
            out.append((f"{doc['metadata']['name']}-predictor", predictor, predictor["labels"]))
    return out


def all_pods() -> list[tuple[str, str, dict[str, Any], dict[str, str]]]:
    return [(root, *pod) for root in ROOTS for pod in pods(root)]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return spec.get("initContainers", []) + spec["containers"]


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    hits = [c for c in containers(workload["spec"]["template"]["spec"]) if c["name"] == name]
    assert len(hits) == 1, f"{workload['metadata']['name']}: no single container named {name!r}"
    return hits[0]


def _volume_claims(spec: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in spec.get("volumes", []) if "persistentVolumeClaim" in v}


def _mount_for(spec: dict[str, Any], c: dict[str, Any], path: str) -> tuple[dict, str | None]:
    """The volume mount that holds ``path`` in container ``c`` and the PVC behind it."""
    mounts = [m for m in c.get("volumeMounts", []) if PurePosixPath(path).is_relative_to(m["mountPath"])]
    assert mounts, f"{c['name']}: {path} is on no volume (lost when the pod ends)"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    return mount, _volume_claims(spec).get(mount["name"])


def _env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are used here"
    return selector.get("matchLabels", {}).items() <= labels.items()


# --- The training grid: one Indexed Job --------------------------------------------------------------
@pytest.mark.parametrize("root", OVERLAYS)
def test_grid_job_has_one_completion_per_lab_run(root: str) -> None:
    job = get(root, "Job", "digits-train-grid")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == len(grid("lab"))
    assert 1 <= spec["parallelism"] <= spec["completions"]
    assert spec["backoffLimitPerIndex"] >= 1
    assert 0 <= spec["maxFailedIndexes"] < spec["completions"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"  # backoffLimitPerIndex needs it


@pytest.mark.parametrize("root", OVERLAYS)
def test_grid_failures_config_errors_fail_the_index_and_disruptions_are_ignored(root: str) -> None:
    job = get(root, "Job", "digits-train-grid")
    rules = job["spec"]["podFailurePolicy"]["rules"]
    names = {c["name"] for c in containers(job["spec"]["template"]["spec"])}
    fail_index = [r for r in rules if r["action"] == "FailIndex"]
    assert [(r["onExitCodes"]["containerName"], r["onExitCodes"]["operator"], r["onExitCodes"]["values"])
            for r in fail_index] == [("train", "In", [2])]  # argparse, bad data, GPU required and absent
    assert "train" in names
    ignore = [r for r in rules if r["action"] == "Ignore"]
    # Exit 143: the run caught SIGTERM, saved its state and resumes on the retry (training.preemption).
    assert [r.get("onExitCodes") for r in ignore] == [
        {"containerName": "train", "operator": "In", "values": [143]}, None]
    assert [r.get("onPodConditions") for r in ignore] == [
        None, [{"type": "DisruptionTarget", "status": "True"}]]
    # SIGTERM: the run saves and exits within seconds; the grace period leaves it room, not minutes.
    assert 30 <= job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] <= 120


@pytest.mark.parametrize("root", OVERLAYS)
def test_grid_job_command_parses_and_every_index_is_a_run(root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    job = get(root, "Job", "digits-train-grid")
    spec, train = job["spec"]["template"]["spec"], container(job, "train")
    assert "command" not in train, "the image's ENTRYPOINT is `python -m training`"
    assert "--index" not in train["args"], "the index must come from $JOB_COMPLETION_INDEX"
    last_index = job["spec"]["completions"] - 1
    monkeypatch.setenv("JOB_COMPLETION_INDEX", str(last_index))  # what the Job controller sets
    args = build_parser().parse_args(train["args"])
    assert (args.command, args.grid, args.index) == ("run", "lab", last_index)
    run_config(args.grid, args.index)  # the last index is a run of that grid
    with pytest.raises(IndexError):
        run_config(args.grid, last_index + 1)
    assert _mount_for(spec, train, str(args.runs_dir))[1] == "digits-work"
    assert _mount_for(spec, train, _env(train)[contract.MNIST_DIR_ENV])[1] == "digits-work"


@pytest.mark.parametrize("root", OVERLAYS)
def test_ensemble_grid_job_runs_every_member_as_the_lab_grid_runs_its_runs(
    root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab, job = get(root, "Job", "digits-train-grid"), get(root, "Job", "digits-train-ensemble")
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == len(grid("ensemble"))
    assert 0 <= job["spec"]["maxFailedIndexes"] < job["spec"]["completions"]
    assert job["spec"]["podFailurePolicy"] == lab["spec"]["podFailurePolicy"]
    monkeypatch.setenv("JOB_COMPLETION_INDEX", str(job["spec"]["completions"] - 1))
    args = build_parser().parse_args(container(job, "train")["args"])
    assert (args.command, args.grid) == ("run", "ensemble")
    run_config(args.grid, args.index)
    with pytest.raises(IndexError):
        run_config(args.grid, args.index + 1)
    lab_args = build_parser().parse_args(container(lab, "train")["args"])
    assert args.runs_dir == lab_args.runs_dir, "both grids on the work volume, side by side"
    # Everything but the grid and its size is the lab grid's Job: data prep, volumes, security.
    assert container(job, "fetch-mnist") == container(lab, "fetch-mnist")
    assert job["spec"]["template"]["spec"]["volumes"] == lab["spec"]["template"]["spec"]["volumes"]


@pytest.mark.parametrize("grid_job", GRIDS)
@pytest.mark.parametrize("root", OVERLAYS)
def test_gpu_only_in_gpu_overlays_and_only_for_training(root: str, grid_job: str) -> None:
    from training.devices import REQUIRE_GPU_ENV, gpu_required

    job = get(root, "Job", grid_job)
    spec, train = job["spec"]["template"]["spec"], container(job, "train")
    if root in GPU_OVERLAYS:
        assert str(train["resources"]["limits"]["nvidia.com/gpu"]) == "1"
        assert gpu_required(None, _env(train)) is True, f"{REQUIRE_GPU_ENV} must be set"
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        assert not train["image"].endswith("-cpu"), "the GPU build of digits-train"
    else:
        assert gpu_required(None, _env(train)) is False
        assert "nodeSelector" not in spec and "tolerations" not in spec
        assert train["image"].endswith("-cpu"), "the CPU build of digits-train"
    # No other container anywhere asks for a GPU (data prep, export, servers, Locust), and the
    # training image's other containers run its CPU build (no 4.4 GB of CUDA wheels to pull).
    for _, pod_name, pod, _ in all_pods():
        for c in containers(pod):
            if not (pod_name in GRIDS and c["name"] == "train"):
                assert "nvidia.com/gpu" not in c.get("resources", {}).get("limits", {}), (pod_name, c["name"])
    for pod_name in (*GRIDS, *(export for _, export, _ in GRIDS.values())):
        pod = get(root, "Job", pod_name)["spec"]["template"]["spec"]
        for c in containers(pod):
            gpu_build_allowed = pod_name in GRIDS and c["name"] == "train"
            if c["image"].startswith("digits-train:") and not gpu_build_allowed:
                assert c["image"].endswith("-cpu"), (root, pod_name, c["name"], c["image"])
    if root not in GPU_OVERLAYS:
        assert "nvidia.com" not in yaml.safe_dump_all(rendered(root))


@pytest.mark.parametrize("root", OVERLAYS)
def test_data_prep_fetches_mnist_where_the_runs_read_it(root: str) -> None:
    job = get(root, "Job", "digits-train-grid")
    spec = job["spec"]["template"]["spec"]
    fetch, train = container(job, "fetch-mnist"), container(job, "train")
    assert fetch in spec["initContainers"]
    # The image's entrypoint is `python -m training`; `data` downloads and verifies, handling
    # SIGTERM like every command (PID 1 would otherwise ignore it for the whole grace period).
    assert "command" not in fetch and fetch["args"] == ["data"]
    from training.__main__ import build_parser

    assert build_parser().parse_args(fetch["args"]).command == "data"
    assert _env(fetch)[contract.MNIST_DIR_ENV] == _env(train)[contract.MNIST_DIR_ENV]
    assert _mount_for(spec, fetch, _env(fetch)[contract.MNIST_DIR_ENV])[1] == "digits-work"


# --- The pipeline chains itself: export waits for the grid in the cluster -----------------------------
@pytest.mark.parametrize("grid_job", GRIDS)
@pytest.mark.parametrize("root", OVERLAYS)
def test_export_waits_for_the_grid_job_with_kubectl_under_least_privilege(root: str, grid_job: str) -> None:
    export = get(root, "Job", GRIDS[grid_job][1])
    spec = export["spec"]["template"]["spec"]
    wait = spec["initContainers"][0]
    assert wait["name"] == "wait-for-grid", "the first init container blocks until the grid is done"
    image, _, tag = wait["image"].partition(":")
    assert image == "registry.k8s.io/kubectl" and re.fullmatch(r"v\d+\.\d+\.\d+", tag)
    assert "command" not in wait, "the image's entrypoint is kubectl"
    grid_name = get(root, "Job", grid_job)["metadata"]["name"]
    assert wait["args"][:3] == ["wait", "--for=condition=Complete", f"job/{grid_name}"]
    timeout = [a for a in wait["args"] if a.startswith("--timeout=")]
    assert timeout and timeout[0] not in ("--timeout=0", "--timeout=0s"), "a bounded wait"
    # The API token: only in the wait container, never in the ones that run our code.
    assert spec["automountServiceAccountToken"] is False
    token_volumes = {v["name"] for v in spec["volumes"]
                     if any("serviceAccountToken" in s for s in v.get("projected", {}).get("sources", []))}
    sa_path = "/var/run/secrets/kubernetes.io/serviceaccount"
    for c in containers(spec):
        mounted = {m["name"] for m in c.get("volumeMounts", []) if m["mountPath"] == sa_path}
        assert bool(mounted & token_volumes) == (c is wait), c["name"]
    # RBAC: the pod's ServiceAccount may read and watch the grid Jobs, nothing else.
    account = get(root, "ServiceAccount", spec["serviceAccountName"])
    assert account.get("automountServiceAccountToken") is False
    bindings = [b for b in of_kind(root, "RoleBinding")
                if {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
                in b["subjects"]]
    assert len(bindings) == 1 and bindings[0]["roleRef"]["kind"] == "Role"
    role = get(root, "Role", bindings[0]["roleRef"]["name"])
    assert role["rules"] == [{"apiGroups": ["batch"], "resources": ["jobs"], "resourceNames": list(GRIDS),
                              "verbs": ["get", "list", "watch"]}]
    assert grid_name in role["rules"][0]["resourceNames"]
    assert not of_kind(root, "ClusterRoleBinding")


@pytest.mark.parametrize("grid_job", GRIDS)
@pytest.mark.parametrize("root", OVERLAYS)
def test_export_reports_and_exports_the_grid_into_the_served_repository(root: str, grid_job: str) -> None:
    grid_name, export_name, model = GRIDS[grid_job]
    job = get(root, "Job", export_name)
    spec = job["spec"]["template"]["spec"]
    grid_args = build_parser().parse_args(container(get(root, "Job", grid_job), "train")["args"])
    report_c, export_c = container(job, "report"), container(job, "export")
    report = build_parser().parse_args(report_c["args"])
    export = build_parser().parse_args(export_c["args"])
    assert (report.command, export.command) == ("report", "export")
    for args in (report, export):
        assert (args.grid, args.runs_dir) == (grid_args.grid, grid_args.runs_dir)
        assert args.grid == grid_name
    assert export.run is None, "export selects the best run by validation accuracy"
    assert _mount_for(spec, report_c, str(report.runs_dir))[1] == "digits-work"
    assert export.model_base_path.name == model
    mount, claim = _mount_for(spec, export_c, str(export.model_base_path))
    assert claim == "digits-models" and not mount.get("readOnly")
    relative = PurePosixPath(export.model_base_path).relative_to(mount["mountPath"])
    # The serving rollout is the server noticing the new version on the volume it reads.
    name, server_name = SERVER[root]
    server = get(root, "Deployment", name)
    served = _served_base_paths(root)[model]
    server_mount, server_claim = _mount_for(server["spec"]["template"]["spec"],
                                            container(server, server_name), served)
    assert server_claim == claim, f"{name} reads another volume than export writes"
    assert PurePosixPath(served).relative_to(server_mount["mountPath"]) == relative
    assert float(flag_values(container(server, server_name)["args"])["file_system_poll_wait_seconds"]) > 0


def _models_config(root: str) -> tuple[model_server_config_pb2.ModelServerConfig, dict, dict]:
    """The model server's --model_config_file parsed as TF Serving parses it (text format), with
    the volume mount and the volume it is read from."""
    name, server_name = SERVER[root]
    deployment = get(root, "Deployment", name)
    spec, server = deployment["spec"]["template"]["spec"], container(deployment, server_name)
    path = PurePosixPath(flag_values(server["args"])["model_config_file"])
    mount = next(m for m in server["volumeMounts"] if m["mountPath"] == str(path.parent))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    text = get(root, "ConfigMap", volume["configMap"]["name"])["data"][path.name]
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig()), mount, volume


def _served_base_paths(root: str) -> dict[str, str]:
    config, _, _ = _models_config(root)
    return {model.name: model.base_path for model in config.model_config_list.config}


@pytest.mark.parametrize("root", OVERLAYS)
def test_the_models_config_is_tf_servings_format_mounted_read_only_and_reread(root: str) -> None:
    name, server_name = SERVER[root]
    flags = flag_values(container(get(root, "Deployment", name), server_name)["args"])
    assert flags["model_config_file"] == MODELS_CONFIG_FILE
    assert "model_name" not in flags and "model_base_path" not in flags, "the config file names the models"
    # ConfigMap edits reach a mounted directory (never a subPath mount) within about a minute.
    assert 0 < float(flags["model_config_file_poll_wait_seconds"]) <= 60
    config, mount, volume = _models_config(root)
    assert mount.get("readOnly") is True and "subPath" not in mount
    assert "items" not in volume["configMap"] or volume["configMap"]["items"]
    served = _served_base_paths(root)
    assert list(served) == list(SERVED_MODELS)
    for model in config.model_config_list.config:
        assert model.base_path == f"/models/{model.name}"
        assert model.model_platform == "tensorflow"
    # Every base path is one an export Job publishes into (relative to the same volume).
    written = set()
    for _, export_name, _ in GRIDS.values():
        job = get(root, "Job", export_name)
        export_c = container(job, "export")
        path = build_parser().parse_args(export_c["args"]).model_base_path
        mount_point = _mount_for(job["spec"]["template"]["spec"], export_c, str(path))[0]["mountPath"]
        written.add(str(PurePosixPath(path).relative_to(mount_point)))
    assert {str(PurePosixPath(p).relative_to("/models")) for p in served.values()} == written


def test_the_control_api_is_off_on_our_server() -> None:
    for root in ("gpu", "kind"):
        flags = flag_values(_server(root)[1]["args"])
        assert flags["model_control_mode"] == "none", "load/unload only behind a narrowed NetworkPolicy"


@pytest.mark.parametrize("root", OVERLAYS)
def test_export_retries_after_sigterm_and_fails_on_a_usage_error(root: str) -> None:
    rules = get(root, "Job", "digits-export")["spec"]["podFailurePolicy"]["rules"]
    by_code = {(r["action"], tuple(r["onExitCodes"]["values"])) for r in rules if "onExitCodes" in r}
    assert by_code == {("FailJob", (2,)), ("Ignore", (143,))}  # 143: training.preemption


# --- Our model server --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rest_app(tmp_path_factory: pytest.TempPathFactory):
    """Our REST app over an empty model repository (what a new pod sees before the export)."""
    from serving.core.dataplane import DataPlane
    from serving.core.repository import ModelRepository
    from serving.rest.app import create_app

    base = tmp_path_factory.mktemp("models") / contract.MODEL_NAME
    base.mkdir()
    repository = ModelRepository(contract.MODEL_NAME, base, poll_wait_seconds=0)
    return create_app(DataPlane(repository), access_log=False)


def _server(root: str = "gpu") -> tuple[dict, dict]:
    deployment = get(root, "Deployment", "digits-serving")
    return deployment, container(deployment, "server")


@pytest.mark.parametrize("root", ["gpu", "kind"])
def test_serving_args_are_flags_the_server_accepts_and_match_the_contract(root: str) -> None:
    _, server = _server(root)
    assert "command" not in server, "the image's ENTRYPOINT is `python -m serving`"
    settings = load_settings(server["args"], environ={})  # exits (status 2) on an unknown flag
    assert flag_values(server["args"])["model_config_file"] == MODELS_CONFIG_FILE
    assert _served_base_paths(root)[contract.MODEL_NAME] == MODEL_BASE_PATH
    assert settings.port == contract.GRPC_PORT
    assert settings.rest_api_port == contract.REST_PORT
    cpu_limit = float(server["resources"]["limits"]["cpu"])
    assert settings.num_workers <= max(1, int(cpu_limit)), "one worker per CPU of the limit"


def test_the_settings_parser_really_rejects_unknown_flags() -> None:
    with pytest.raises(SystemExit):
        load_settings(["--model_nmae=lenet5"], environ={})


def test_serving_shutdown_fits_in_the_grace_period() -> None:
    deployment, server = _server()
    settings = load_settings(server["args"], environ={})
    pre_stop = server.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= sleep + settings.shutdown_grace_period_seconds + 1, (
        "the kubelet would SIGKILL the server while it drains"
    )


def test_serving_starts_and_lives_without_a_model_and_is_ready_only_with_one(rest_app) -> None:
    _, server = _server()
    client = rest_app.test_client()
    startup, readiness, liveness = (server[p] for p in ("startupProbe", "readinessProbe", "livenessProbe"))
    # Startup and liveness: the process answers, model or not (no restarts before the export).
    for probe in (startup, liveness):
        assert container_port(server, probe["httpGet"]["port"]) == contract.REST_PORT
        assert client.get(probe["httpGet"]["path"]).status_code == 200, probe["httpGet"]["path"]
    assert startup["httpGet"]["path"] != MODEL_STATUS_PATH, "a startup probe on the model crash-loops"
    # Readiness: grpc.health.v1 on the numeric gRPC port, NOT_SERVING until a version is AVAILABLE;
    # REST's own readiness says the same.
    assert readiness["grpc"]["port"] == contract.GRPC_PORT
    assert client.get(contract.READINESS_PATH).status_code == 503


def test_serving_grpc_health_is_not_serving_without_a_model(tmp_path) -> None:
    from grpc_health.v1 import health_pb2

    from serving.core.dataplane import DataPlane
    from serving.core.repository import ModelRepository
    from serving.grpc.server import build_server

    base = tmp_path / contract.MODEL_NAME
    base.mkdir()
    dataplane = DataPlane(ModelRepository(contract.MODEL_NAME, base, poll_wait_seconds=0))
    server, health, _ = build_server(dataplane, "127.0.0.1:0")
    try:
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), None)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert dataplane.ready is False, "the gRPC worker sets health from this: stays NOT_SERVING"
    finally:
        server.stop(0)


def test_serving_metrics_annotations_point_at_the_metrics_endpoint(rest_app) -> None:
    deployment, _ = _server()
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == contract.METRICS_PATH
    assert int(annotations["prometheus.io/port"]) == contract.REST_PORT
    assert rest_app.test_client().get(contract.METRICS_PATH).status_code == 200


@pytest.mark.parametrize("root", OVERLAYS)
def test_model_server_ports_and_services_match_the_contract(root: str) -> None:
    name, container_name = SERVER[root]
    server = container(get(root, "Deployment", name), container_name)
    assert {p["name"]: p["containerPort"] for p in server["ports"]} == {
        "grpc": contract.GRPC_PORT, "http": contract.REST_PORT}
    by_name = {p["name"]: p for p in get(root, "Service", name)["spec"]["ports"]}
    assert set(by_name) == {"grpc", "http"}
    assert by_name["grpc"]["port"] == contract.GRPC_PORT and by_name["grpc"]["appProtocol"] == "grpc"
    assert by_name["http"]["port"] == contract.REST_PORT
    for port in by_name.values():
        assert container_port(server, port["targetPort"]) == port["port"]


@pytest.mark.parametrize("root", OVERLAYS)
def test_model_server_mounts_the_models_read_only(root: str) -> None:
    name, container_name = SERVER[root]
    deployment = get(root, "Deployment", name)
    spec, server = deployment["spec"]["template"]["spec"], container(deployment, container_name)
    for base_path in _served_base_paths(root).values():
        mount, claim = _mount_for(spec, server, base_path)
        assert claim == "digits-models" and mount.get("readOnly") is True
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        assert volume["persistentVolumeClaim"].get("readOnly") is True


# --- Scaling and disruptions ---------------------------------------------------------------------------
@pytest.mark.parametrize("root", OVERLAYS)
def test_hpa_owns_the_replicas_and_the_pdb_never_blocks_a_drain(root: str) -> None:
    name, server_name = SERVER[root]
    deployment = get(root, "Deployment", name)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    hpa = get(root, "HorizontalPodAutoscaler", name)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert "replicas" not in deployment["spec"], "a re-apply would reset the HPA's count"
    assert "cpu" in container(deployment, server_name)["resources"]["requests"], "utilisation needs it"
    pdb = get(root, "PodDisruptionBudget", name)
    assert _selects(pdb["spec"]["selector"], pod_labels)
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "else a drain blocks"


def test_no_deployment_under_an_hpa_sets_replicas_and_every_pdb_lets_unhealthy_pods_go() -> None:
    for root in ROOTS:
        for hpa in of_kind(root, "HorizontalPodAutoscaler"):
            target = hpa["spec"]["scaleTargetRef"]
            assert "replicas" not in get(root, target["kind"], target["name"])["spec"], (root, target)
        for pdb in of_kind(root, "PodDisruptionBudget"):
            assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow", (root, pdb["metadata"]["name"])
            assert any(_selects(pdb["spec"]["selector"], labels) for _, _, labels in pods(root)), pdb


# --- TF Serving in place of ours --------------------------------------------------------------------------
def test_tfserving_runs_the_same_model_with_flags_our_server_shares() -> None:
    server = container(get("tfserving", "Deployment", "tfserving"), "server")
    image, _, tag = server["image"].partition(":")
    assert image == "tensorflow/serving"
    lock = (ROOT / "requirements" / "lock.txt").read_text()
    api_version = re.search(r"^tensorflow-serving-api==(\S+)$", lock, re.M)[1]
    assert tag == api_version, "TF Serving's release should match the API stubs we test against"
    flags = flag_values(server["args"])
    ours = flag_values(_server("gpu")[1]["args"])
    assert flags["model_config_file"] == ours["model_config_file"] == MODELS_CONFIG_FILE
    assert _served_base_paths("tfserving") == _served_base_paths("gpu"), "the same models, the same paths"
    assert int(flags["port"]) == contract.GRPC_PORT
    assert int(flags["rest_api_port"]) == contract.REST_PORT
    shared = [a for a in server["args"] if not a.startswith("--monitoring_config_file=")]
    load_settings(shared, environ={})  # drop-in: the same flags mean the same to ours
    assert not any(d["kind"] == "Deployment" and d["metadata"]["name"] == "digits-serving"
                   for d in rendered("tfserving")), "TF Serving instead of ours, not beside it"


def test_tfserving_is_ready_only_with_an_available_version(rest_app) -> None:
    deployment = get("tfserving", "Deployment", "tfserving")
    server = container(deployment, "server")
    # No model needed to start or live: TCP checks of its ports.
    assert container_port(server, server["startupProbe"]["tcpSocket"]["port"]) == contract.REST_PORT
    assert container_port(server, server["livenessProbe"]["tcpSocket"]["port"]) == contract.GRPC_PORT
    # Ready: the metadata API, answered only from an AVAILABLE version (the status API answers
    # 200 while a version is LOADING or failed). Our server, its drop-in, fails it too (TF Serving
    # answers 404 NOT_FOUND, ours 503 UNAVAILABLE: either fails an httpGet probe).
    get_ = server["readinessProbe"]["httpGet"]
    assert get_["path"] == f"{MODEL_STATUS_PATH}/metadata"
    assert container_port(server, get_["port"]) == contract.REST_PORT
    assert rest_app.test_client().get(get_["path"]).status_code >= 400


def test_tfserving_metrics_config() -> None:
    deployment = get("tfserving", "Deployment", "tfserving")
    server = container(deployment, "server")
    config_path = PurePosixPath(flag_values(server["args"])["monitoring_config_file"])
    mount = next(m for m in server["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    text = get("tfserving", "ConfigMap", volume["configMap"]["name"])["data"][config_path.name]
    assert re.search(r"enable:\s*true", text)
    assert f'path: "{contract.METRICS_PATH}"' in text


# --- Prometheus Operator ------------------------------------------------------------------------------
@pytest.mark.parametrize("root", OVERLAYS)
def test_service_monitor_scrapes_the_model_server_at_the_metrics_path(root: str, rest_app) -> None:
    monitors = of_kind(root, "ServiceMonitor")
    if root not in MONITORED:
        assert not monitors, "no Prometheus Operator CRDs on kind by default"
        return
    (monitor,) = monitors
    services = [s for s in of_kind(root, "Service")
                if _selects(monitor["spec"]["selector"], s["metadata"]["labels"])]
    assert [s["metadata"]["name"] for s in services] == [SERVER[root][0]]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in services[0]["spec"]["ports"]}
    assert endpoint["path"] == contract.METRICS_PATH
    assert rest_app.test_client().get(endpoint["path"]).status_code == 200


@pytest.mark.parametrize("root", OVERLAYS)
def test_prometheus_rules_come_with_the_service_monitor_and_the_same_labels(root: str) -> None:
    """The rules (monitoring/rules.yml as a PrometheusRule) wherever the scrape is, labelled as
    the ServiceMonitor so that the Prometheus selecting one selects the other."""
    monitors, rules = of_kind(root, "ServiceMonitor"), of_kind(root, "PrometheusRule")
    assert len(rules) == len(monitors) == (1 if root in MONITORED else 0), root
    for monitor, rule in zip(monitors, rules, strict=True):
        assert monitor["metadata"]["labels"].items() <= rule["metadata"]["labels"].items()
        assert rule["metadata"]["namespace"] == monitor["metadata"]["namespace"] == NAMESPACE
        assert rule["spec"]["groups"], "no rule groups"


# --- KServe ---------------------------------------------------------------------------------------------
def test_kserve_inference_service_runs_our_server_over_v2_on_kserve_ports(rest_app) -> None:
    (isvc,) = of_kind("kserve", "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    predictor = isvc["spec"]["predictor"]
    (server,) = predictor["containers"]
    assert server["name"] == "kserve-container"
    assert server["image"].partition(":")[0] == "digits-serve"
    assert _env(server)["PROTOCOL"] == "v2"  # how KServe learns a custom predictor's protocol
    http, grpc = server["ports"]
    assert http["containerPort"] == 8080, "KServe's Service sends port 80 to the first port: 8080"
    assert "grpc" in grpc["name"], "KServe marks a port gRPC by its name"
    settings = load_settings(server["args"], environ={})
    assert (settings.rest_api_port, settings.port) == (http["containerPort"], grpc["containerPort"])
    assert settings.model_name == isvc["metadata"]["name"] == contract.MODEL_NAME
    mount, claim = _mount_for(predictor, server, settings.model_base_path)
    assert claim == "digits-models" and mount.get("readOnly") is True
    assert PurePosixPath(settings.model_base_path).relative_to(mount["mountPath"]) == PurePosixPath(
        contract.MODEL_NAME)  # where the export writes, relative to the volume
    client = rest_app.test_client()
    for probe in ("startupProbe", "livenessProbe"):
        assert server[probe]["httpGet"]["path"] == v2.HEALTH_LIVE_PATH
        assert client.get(v2.HEALTH_LIVE_PATH).status_code == 200
    assert server["readinessProbe"]["httpGet"]["path"] == v2.HEALTH_READY_PATH
    assert client.get(v2.HEALTH_READY_PATH).status_code != 200, "not ready before a model exists"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"]["port"] == http["containerPort"]


# --- Storage per cluster --------------------------------------------------------------------------------
@pytest.mark.parametrize("root", OVERLAYS)
def test_volumes_are_rwx_on_clusters_and_rwo_on_kind_from_the_default_class(root: str) -> None:
    claims = of_kind(root, "PersistentVolumeClaim")
    assert {c["metadata"]["name"] for c in claims} == {"digits-work", "digits-models"}
    expected = ["ReadWriteOnce"] if root == "kind" else ["ReadWriteMany"]
    for claim in claims:
        assert claim["spec"]["accessModes"] == expected, claim["metadata"]["name"]
        assert "storageClassName" not in claim["spec"], "the cluster's default class"


# --- Images ----------------------------------------------------------------------------------------------
def test_every_image_is_pinned_by_tag_or_digest_never_latest() -> None:
    for root, pod_name, pod, _ in all_pods():
        for c in containers(pod):
            image = c["image"]
            name, tag = (image.split("@")[0], "") if "@" in image else image.rpartition(":")[::2]
            if "@" in image:
                assert re.fullmatch(r"sha256:[0-9a-f]{64}", image.split("@")[1]), image
                continue
            assert tag and "/" not in tag and tag != "latest", f"{root}/{pod_name}: {image}"
            if name in IMAGES:  # ours: the version `make images` tags (train's CPU build: -cpu)
                assert tag in (VERSION, f"{VERSION}-cpu"), image
                assert tag == VERSION or name == "digits-train", image
                assert (ROOT / IMAGES[name]).is_file()
            else:
                assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{image}: pin a release"


def test_pod_uid_is_the_image_user() -> None:
    for root, pod_name, pod, _ in all_pods():
        for c in containers(pod):
            image = c["image"].partition(":")[0]
            if image in IMAGES:
                user = last(ROOT / IMAGES[image], "USER").value.split(":")[0]
                assert int(user) == pod["securityContext"]["runAsUser"], (root, pod_name)


# --- Pod security: the restricted standard --------------------------------------------------------------
def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Where a pod spec breaks the Pod Security Standards' "restricted" profile (the checks of
    the restricted and baseline levels that pod specs can break)."""
    pod_security = pod.get("securityContext", {})
    found = [key for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}: {sorted(kinds)}")
    if pod_security.get("runAsUser") == 0:
        found.append("pod runAsUser 0")
    for c in containers(pod):
        name = c["name"]
        found += [f"{name}: {problem}" for problem in container_violations(c, pod_security)]
    return found


def container_violations(c: dict[str, Any], pod_security: dict[str, Any]) -> list[str]:
    """The restricted profile's checks of one container, its securityContext over the pod's."""
    security = c.get("securityContext", {})
    effective = {**pod_security, **security}  # what the container runs with
    capabilities = security.get("capabilities", {})
    seccomp = effective.get("seccompProfile", {}).get("type")
    checks = [
        (security.get("privileged"), "privileged"),
        (security.get("allowPrivilegeEscalation") is not False, "allowPrivilegeEscalation must be false"),
        ("ALL" not in capabilities.get("drop", []), "capabilities must drop ALL"),
        (set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}, "adds capabilities"),
        (effective.get("runAsNonRoot") is not True, "runAsNonRoot must be true"),
        (effective.get("runAsUser") == 0, "runAsUser 0"),
        (seccomp not in ("RuntimeDefault", "Localhost"), "seccompProfile RuntimeDefault or Localhost"),
        (any("hostPort" in p for p in c.get("ports", [])), "hostPort"),
    ]
    return [problem for broken, problem in checks if broken]


def test_namespace_enforces_the_restricted_pod_security_standard() -> None:
    for root in OVERLAYS:
        (namespace,) = of_kind(root, "Namespace")
        labels = namespace["metadata"]["labels"]
        assert namespace["metadata"]["name"] == NAMESPACE
        for mode in ("enforce", "audit", "warn"):
            assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted", (root, mode)


def test_every_pod_complies_with_the_restricted_standard() -> None:
    broken = {f"{root}/{name}": restricted_violations(pod) for root, name, pod, _ in all_pods()}
    assert not {k: v for k, v in broken.items() if v}


def test_the_restricted_check_finds_violations() -> None:
    pod = {"hostNetwork": True, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
           "securityContext": {"runAsNonRoot": True},
           "containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}},
                           "ports": [{"containerPort": 80, "hostPort": 80}]}]}
    found = " ".join(restricted_violations(pod))
    for expected in ("hostNetwork", "hostPath", "allowPrivilegeEscalation", "drop ALL", "adds",
                     "seccompProfile", "hostPort"):
        assert expected in found, expected


@pytest.mark.parametrize("root", ROOTS)
def test_workload_runs_non_root_with_resources_and_no_api_token(root: str) -> None:
    for name, pod, _ in pods(root):
        security = pod["securityContext"]
        assert isinstance(security["runAsUser"], int) and security["runAsUser"] > 0, name
        assert pod.get("automountServiceAccountToken") is False, f"{name}: no token unless projected"
        for c in containers(pod):
            assert {"cpu", "memory"} <= c["resources"]["requests"].keys(), (name, c["name"])
            assert "memory" in c["resources"]["limits"], (name, c["name"])


@pytest.mark.parametrize("root", ROOTS)
def test_long_running_pods_are_hardened_and_probed(root: str) -> None:
    long_running = [(n, p) for n, p, _ in pods(root)
                    if not any(d["kind"] == "Job" and d["metadata"]["name"] == n for d in rendered(root))]
    for name, pod in long_running:
        tmp_volumes = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for c in containers(pod):
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert any(m["mountPath"] == "/tmp" and m["name"] in tmp_volumes for m in c["volumeMounts"]), (
                f"{name}/{c['name']}: /tmp must be a writable emptyDir")
            assert "cpu" in c["resources"]["limits"], (name, c["name"])
            if (name, c["name"]) in NO_PROBES:
                assert not c.get("ports"), "a container with ports gets probes"
                continue
            assert "readinessProbe" in c and "livenessProbe" in c, (name, c["name"])


# --- Network policies -----------------------------------------------------------------------------------
def _policies_for(root: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    """Policies (of the root and of the overlay it is applied beside) that select a pod, the
    namespace-wide ones (empty selector) excluded."""
    roots = {root} if root in OVERLAYS else {root, "gpu"}
    return [p for r in roots for p in of_kind(r, "NetworkPolicy")
            if p["spec"]["podSelector"] and _selects(p["spec"]["podSelector"], labels)]


def _ports(rules: list[dict[str, Any]]) -> set[int]:
    return {p["port"] for rule in rules for p in rule.get("ports", [])}


def test_namespace_denies_all_traffic_by_default_and_allows_dns() -> None:
    for root in OVERLAYS:
        by_name = {p["metadata"]["name"]: p["spec"] for p in of_kind(root, "NetworkPolicy")}
        assert by_name["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        dns = by_name["allow-dns"]
        assert dns["podSelector"] == {} and dns["policyTypes"] == ["Egress"]
        assert _ports(dns["egress"]) == {53}


@pytest.mark.parametrize("root", ROOTS)
def test_every_pod_has_its_own_network_policy_and_ingress_only_on_its_ports(root: str) -> None:
    for name, pod, labels in pods(root):
        policies = _policies_for(root, labels)
        assert policies, f"{root}/{name}: no NetworkPolicy selects it"
        ingress = [rule for p in policies for rule in p["spec"].get("ingress", [])]
        ports = {p["containerPort"] for c in containers(pod) for p in c.get("ports", [])}
        assert _ports(ingress) <= ports, f"{name}: ingress to ports it does not listen on"
        assert all(rule.get("ports") for rule in ingress), f"{name}: ingress on every port"
        for policy in policies:
            assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def test_network_policies_allow_what_the_pipeline_and_load_test_need() -> None:
    labels = {name: pod_labels for name, _, pod_labels in pods("gpu") + pods("locust")}
    # Model servers take clients on their two ports; Locust workers reach them and the master.
    served = {p["port"] for p in get("gpu", "Service", "digits-serving")["spec"]["ports"]}
    server_ingress = [r for p in _policies_for("gpu", labels["digits-serving"]) for r in p["spec"]["ingress"]]
    assert _ports(server_ingress) == served and all("from" not in r for r in server_ingress)
    worker_egress = [r for p in _policies_for("locust", labels["locust-worker"]) for r in p["spec"]["egress"]]
    to_servers = [r for r in worker_egress if any(_selects(peer["podSelector"], labels["digits-serving"])
                                                  for peer in r["to"])]
    assert served <= _ports(to_servers)
    master_port = {p["port"] for p in get("locust", "Service", "locust-master")["spec"]["ports"]
                   if p["name"] == "comm"}
    to_master = [r for r in worker_egress if any(_selects(peer["podSelector"], labels["locust-master"])
                                                 for peer in r["to"])]
    assert master_port <= _ports(to_master)
    # The export reaches the API server (kubectl wait); the grid reaches the MNIST mirrors (HTTPS).
    export_egress = [r for p in _policies_for("gpu", labels["digits-export"]) for r in p["spec"]["egress"]]
    assert {443, 6443} <= _ports(export_egress)
    train_egress = [r for p in _policies_for("gpu", labels["digits-train-grid"]) for r in p["spec"]["egress"]]
    assert _ports(train_egress) == {443}


# --- Locust -----------------------------------------------------------------------------------------------
def test_locust_targets_the_serving_service_and_workers_find_the_master() -> None:
    master_d = get("locust", "Deployment", "locust-master")
    worker_d = get("locust", "Deployment", "locust-worker")
    master, worker = container(master_d, "locust"), container(worker_d, "locust")
    env = _env(master)
    assert env["LOCUST_HOST"] == f"http://digits-serving:{contract.REST_PORT}"
    assert env["LOCUST_GRPC_TARGET"] == f"digits-serving:{contract.GRPC_PORT}"
    get("gpu", "Service", "digits-serving")
    assert "--master" in master["args"] and master_d["spec"]["replicas"] == 1
    assert "--worker" in worker["args"]
    flags = dict(a[2:].split("=", 1) for a in worker["args"] if "=" in a)
    service = get("locust", "Service", flags["master-host"])
    comm = next(p for p in service["spec"]["ports"] if p["port"] == int(flags["master-port"]))
    assert container_port(master, comm["targetPort"]) == comm["port"]
    assert env[contract.MNIST_DIR_ENV] == _env(worker)[contract.MNIST_DIR_ENV]
    _, claim = _mount_for(worker_d["spec"]["template"]["spec"], worker, _env(worker)[contract.MNIST_DIR_ENV])
    assert claim == "digits-work"


@pytest.mark.parametrize("root", ROOTS)
def test_services_select_pods_that_have_their_ports(root: str) -> None:
    deployments = of_kind(root, "Deployment")
    for service in of_kind(root, "Service"):
        selector = {"matchLabels": service["spec"]["selector"]}
        matches = [d for d in deployments if _selects(selector, d["spec"]["template"]["metadata"]["labels"])]
        assert len(matches) == 1, f"{root}: Service {service['metadata']['name']} selects {len(matches)}"
        server = matches[0]["spec"]["template"]["spec"]["containers"][0]
        for port in service["spec"]["ports"]:
            assert container_port(server, port["targetPort"]) == port["port"]
