"""The manifests agree with the code: contract ports, paths and model name; flags the programs
accept; the grid's size; security and resources on every workload; selectors that select.

The contract (the contract package) is the source of truth; the manifests' literal values are
checked against it, and the containers' arguments are parsed by the programs' own parsers.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import pytest
from deploy_support import (
    IMAGES,
    ROOT,
    all_documents,
    container,
    container_port,
    containers,
    find,
    flag_values,
    last,
    pod_spec,
    workloads,
)

import contract
from serving.settings import load_settings
from training.__main__ import build_parser
from training.config import grid, run_config

MODEL_STATUS_PATH = f"{contract.REST_MODELS_PREFIX}/{contract.MODEL_NAME}"
MODEL_BASE_PATH = str(PurePosixPath("/") / PurePosixPath(*contract.DEFAULT_MODEL_BASE_PATH.parts))
MODEL_SERVERS = {"digits-serving": "server", "tfserving": "server"}  # Deployment -> container
# Containers without probes, and why: a Locust worker has no port; it exits by itself when it
# loses the master's heartbeat, and the Deployment restarts it.
NO_PROBES = {("locust-worker", "locust")}


def _volume_claims(workload: dict) -> dict[str, str]:
    return {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod_spec(workload).get("volumes", [])
        if "persistentVolumeClaim" in v
    }


def _mount_for(workload: dict, c: dict, path: str) -> tuple[dict, str | None]:
    """The volume mount that holds ``path`` in container ``c`` and the PVC behind it."""
    mounts = [m for m in c.get("volumeMounts", []) if PurePosixPath(path).is_relative_to(m["mountPath"])]
    assert mounts, f"{c['name']}: {path} is on no volume (lost when the pod ends)"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    return mount, _volume_claims(workload).get(mount["name"])


def _env(c: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


# --- The training grid: one Indexed Job -------------------------------------------------------------
def test_grid_job_has_one_completion_per_lab_run() -> None:
    job = find("Job", "digits-train-grid")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == len(grid("lab"))
    assert 1 <= spec["parallelism"] <= spec["completions"]
    assert spec["backoffLimitPerIndex"] >= 1
    assert 0 <= spec["maxFailedIndexes"] < spec["completions"]
    assert pod_spec(job)["restartPolicy"] == "Never"  # backoffLimitPerIndex requires it
    names = {c["name"] for c in containers(job)}
    for rule in spec.get("podFailurePolicy", {}).get("rules", []):
        if "onExitCodes" in rule:
            assert rule["onExitCodes"]["containerName"] in names


def test_grid_job_command_parses_and_every_index_is_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    job = find("Job", "digits-train-grid")
    train = container(job, "train")
    assert "command" not in train, "the image's ENTRYPOINT is `python -m training`"
    assert "--index" not in train["args"], "the index must come from $JOB_COMPLETION_INDEX"
    last_index = job["spec"]["completions"] - 1
    monkeypatch.setenv("JOB_COMPLETION_INDEX", str(last_index))  # what the Job controller sets
    args = build_parser().parse_args(train["args"])
    assert (args.command, args.grid, args.index) == ("run", "lab", last_index)
    run_config(args.grid, args.index)  # the last index is a run of that grid
    with pytest.raises(IndexError):
        run_config(args.grid, last_index + 1)
    # Runs and data land on the shared volume, not in the container.
    assert _mount_for(job, train, str(args.runs_dir))[1] == "digits-work"
    assert _mount_for(job, train, _env(train)[contract.MNIST_DIR_ENV])[1] == "digits-work"


def test_grid_job_asks_for_one_gpu() -> None:
    train = container(find("Job", "digits-train-grid"), "train")
    assert str(train["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    text = (ROOT / "k8s" / "train-grid-job.yaml").read_text()
    assert re.search(r"#.*[Rr]emove.*CPU", text), "say how to run on CPU"


def test_data_prep_fetches_mnist_where_the_runs_read_it() -> None:
    job = find("Job", "digits-train-grid")
    fetch, train = container(job, "fetch-mnist"), container(job, "train")
    assert fetch in pod_spec(job)["initContainers"]
    assert fetch["command"][:2] == ["python", "-c"]
    code = fetch["command"][2]
    compile(code, "fetch-mnist", "exec")
    assert "from training import data" in code and "data.load(" in code
    from training import data

    assert callable(data.load)
    assert _env(fetch)[contract.MNIST_DIR_ENV] == _env(train)[contract.MNIST_DIR_ENV]
    assert _mount_for(job, fetch, _env(fetch)[contract.MNIST_DIR_ENV])[1] == "digits-work"


# --- Select and export ---------------------------------------------------------------------------
def test_export_job_reports_and_exports_the_grid_into_the_served_repository() -> None:
    job = find("Job", "digits-export")
    grid_args = build_parser().parse_args(container(find("Job", "digits-train-grid"), "train")["args"])
    report_c, export_c = container(job, "report"), container(job, "export")
    report = build_parser().parse_args(report_c["args"])
    export = build_parser().parse_args(export_c["args"])
    assert (report.command, export.command) == ("report", "export")
    for args in (report, export):
        assert (args.grid, args.runs_dir) == (grid_args.grid, grid_args.runs_dir)
    assert export.run is None, "export selects the best run by validation accuracy"
    assert _mount_for(job, report_c, str(report.runs_dir))[1] == "digits-work"
    assert _mount_for(job, export_c, str(export.runs_dir))[1] == "digits-work"
    assert export.model_base_path.name == contract.MODEL_NAME
    mount, claim = _mount_for(job, export_c, str(export.model_base_path))
    assert not mount.get("readOnly")
    # The servers read the same volume, at the same place relative to the mount.
    relative = PurePosixPath(export.model_base_path).relative_to(mount["mountPath"])
    for name, server_name in MODEL_SERVERS.items():
        server = find("Deployment", name)
        served = flag_values(container(server, server_name)["args"])["model_base_path"]
        server_mount, server_claim = _mount_for(server, container(server, server_name), served)
        assert server_claim == claim, f"{name} reads another volume than export writes"
        assert PurePosixPath(served).relative_to(server_mount["mountPath"]) == relative


# --- Our model server --------------------------------------------------------------------------
def _server() -> tuple[dict, dict]:
    deployment = find("Deployment", "digits-serving")
    return deployment, container(deployment, "server")


def test_serving_args_are_flags_the_server_accepts_and_match_the_contract() -> None:
    _, server = _server()
    assert "command" not in server, "the image's ENTRYPOINT is `python -m serving`"
    settings = load_settings(server["args"], environ={})  # exits (status 2) on an unknown flag
    assert settings.model_name == contract.MODEL_NAME
    assert settings.model_base_path == MODEL_BASE_PATH
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
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace >= sleep + settings.shutdown_grace_period_seconds + 1, (
        "the kubelet would SIGKILL the server while it drains"
    )


@pytest.fixture(scope="module")
def rest_app(tmp_path_factory: pytest.TempPathFactory):
    """Our REST app over an empty model repository (what a new pod sees before the export)."""
    from serving.dataplane import DataPlane
    from serving.repository import ModelRepository
    from serving.rest import create_app

    _, server = _server()
    settings = load_settings(server["args"], environ={})
    base = tmp_path_factory.mktemp("models") / contract.MODEL_NAME
    base.mkdir()
    repository = ModelRepository(settings.model_name, base, poll_wait_seconds=0)
    return create_app(DataPlane(repository), access_log=False)


def test_serving_probes_use_contract_ports_and_real_endpoints(rest_app) -> None:
    _, server = _server()
    routes = rest_app.url_map.bind("localhost")
    startup, readiness, liveness = (server[p] for p in ("startupProbe", "readinessProbe", "livenessProbe"))
    # Startup: the model status API, which fails until a version is loaded.
    assert startup["httpGet"]["path"] == MODEL_STATUS_PATH
    assert container_port(server, startup["httpGet"]["port"]) == contract.REST_PORT
    assert routes.match(MODEL_STATUS_PATH, method="GET")[0] == "models"
    client = rest_app.test_client()
    assert client.get(MODEL_STATUS_PATH).status_code == 404, "no model yet: startup must fail"
    # Readiness: grpc.health.v1 on the numeric gRPC port.
    assert readiness["grpc"]["port"] == contract.GRPC_PORT
    # Liveness: cheap, and alive without a model.
    assert liveness["httpGet"]["path"] == contract.LIVENESS_PATH
    assert container_port(server, liveness["httpGet"]["port"]) == contract.REST_PORT
    assert client.get(contract.LIVENESS_PATH).status_code == 200
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 60, "time to load a model"


def test_serving_metrics_annotations_point_at_the_metrics_endpoint(rest_app) -> None:
    deployment, server = _server()
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == contract.METRICS_PATH
    assert int(annotations["prometheus.io/port"]) == contract.REST_PORT
    assert rest_app.test_client().get(contract.METRICS_PATH).status_code == 200


@pytest.mark.parametrize("name", sorted(MODEL_SERVERS))
def test_model_server_ports_and_services_match_the_contract(name: str) -> None:
    deployment = find("Deployment", name)
    server = container(deployment, MODEL_SERVERS[name])
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {"grpc": contract.GRPC_PORT, "http": contract.REST_PORT}
    service = find("Service", name)
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(by_name) == {"grpc", "http"}
    assert by_name["grpc"]["port"] == contract.GRPC_PORT
    assert by_name["grpc"]["appProtocol"] == "grpc"
    assert by_name["http"]["port"] == contract.REST_PORT
    for port in by_name.values():
        assert container_port(server, port["targetPort"]) == port["port"]


def test_model_server_mounts_the_models_read_only() -> None:
    for name, container_name in MODEL_SERVERS.items():
        deployment = find("Deployment", name)
        server = container(deployment, container_name)
        served = flag_values(server["args"])["model_base_path"]
        mount, claim = _mount_for(deployment, server, served)
        assert claim == "digits-models" and mount.get("readOnly") is True, name
        volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"])
        assert volume["persistentVolumeClaim"].get("readOnly") is True


def test_hpa_and_pdb_target_the_serving_deployment() -> None:
    deployment, server = _server()
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    hpa = find("HorizontalPodAutoscaler", "digits-serving")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "digits-serving"}
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert "cpu" in server["resources"]["requests"], "CPU utilisation needs a CPU request"
    pdb = find("PodDisruptionBudget", "digits-serving")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    # With fewer replicas than minAvailable + 1, a node drain would block.
    assert hpa["spec"]["minReplicas"] >= 2 and deployment["spec"]["replicas"] >= 2


# --- TF Serving, the drop-in alternative ------------------------------------------------------------
def test_tfserving_runs_the_same_model_with_flags_our_server_shares() -> None:
    deployment = find("Deployment", "tfserving")
    server = container(deployment, "server")
    image, _, tag = server["image"].partition(":")
    assert image == "tensorflow/serving"
    lock = (ROOT / "requirements" / "lock.txt").read_text()
    api_version = re.search(r"^tensorflow-serving-api==(\S+)$", lock, re.M)[1]
    assert tag == api_version, "TF Serving's release should match the API stubs we test against"
    flags = flag_values(server["args"])
    assert flags["model_name"] == contract.MODEL_NAME
    assert flags["model_base_path"] == MODEL_BASE_PATH
    assert int(flags["port"]) == contract.GRPC_PORT
    assert int(flags["rest_api_port"]) == contract.REST_PORT
    # Drop-in: the TF Serving flags used here mean the same to our server (monitoring aside).
    shared = [a for a in server["args"] if not a.startswith("--monitoring_config_file=")]
    settings = load_settings(shared, environ={})
    assert (settings.model_name, settings.model_base_path) == (contract.MODEL_NAME, MODEL_BASE_PATH)


def test_tfserving_probes_and_metrics_config() -> None:
    deployment = find("Deployment", "tfserving")
    server = container(deployment, "server")
    for probe in ("startupProbe", "readinessProbe"):
        get = server[probe]["httpGet"]
        assert get["path"] == MODEL_STATUS_PATH
        assert container_port(server, get["port"]) == contract.REST_PORT
    assert "tcpSocket" in server["livenessProbe"] or "httpGet" in server["livenessProbe"]
    config_path = PurePosixPath(flag_values(server["args"])["monitoring_config_file"])
    mount = next(m for m in server["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"])
    config_map = find("ConfigMap", volume["configMap"]["name"])
    text = config_map["data"][config_path.name]
    assert re.search(r"enable:\s*true", text)
    assert f'path: "{contract.METRICS_PATH}"' in text
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == contract.METRICS_PATH


# --- Locust ----------------------------------------------------------------------------------------
def test_locust_targets_the_serving_service_and_workers_find_the_master() -> None:
    master_d, worker_d = find("Deployment", "locust-master"), find("Deployment", "locust-worker")
    master, worker = container(master_d, "locust"), container(worker_d, "locust")
    env = _env(master)
    assert env["LOCUST_HOST"] == f"http://digits-serving:{contract.REST_PORT}"
    assert env["LOCUST_GRPC_TARGET"] == f"digits-serving:{contract.GRPC_PORT}"
    find("Service", "digits-serving")
    assert "--master" in master["args"] and master_d["spec"]["replicas"] == 1
    assert "--worker" in worker["args"]
    flags = dict(a[2:].split("=", 1) for a in worker["args"] if "=" in a)
    service = find("Service", flags["master-host"])
    comm = next(p for p in service["spec"]["ports"] if p["port"] == int(flags["master-port"]))
    assert container_port(master, comm["targetPort"]) == comm["port"]
    # The master sends its options to the workers: the MNIST directory must agree, and be mounted.
    assert env[contract.MNIST_DIR_ENV] == _env(worker)[contract.MNIST_DIR_ENV]
    _, claim = _mount_for(worker_d, worker, _env(worker)[contract.MNIST_DIR_ENV])
    assert claim == "digits-work"


# --- Every workload -------------------------------------------------------------------------------
def _workload_ids() -> list[str]:
    return [f"{doc['kind']}/{doc['metadata']['name']}" for _, doc in workloads()]


@pytest.mark.parametrize("workload", [doc for _, doc in workloads()], ids=_workload_ids())
def test_workload_runs_non_root_with_resources(workload: dict) -> None:
    spec, name = pod_spec(workload), workload["metadata"]["name"]
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert isinstance(pod_security["runAsUser"], int) and pod_security["runAsUser"] > 0
    assert spec.get("automountServiceAccountToken") is False, "no workload here calls the API"
    for c in containers(workload):
        security = c["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, (name, c["name"])
        assert security["capabilities"]["drop"] == ["ALL"], (name, c["name"])
        resources = c["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys(), (name, c["name"])
        assert "memory" in resources["limits"], (name, c["name"])
        assert ":" in c["image"] and not c["image"].endswith(":"), f"{c['image']}: tag it"


@pytest.mark.parametrize(
    "workload",
    [doc for _, doc in workloads() if doc["kind"] == "Deployment"],
    ids=[i for i in _workload_ids() if i.startswith("Deployment/")],
)
def test_deployment_is_hardened_and_probed(workload: dict) -> None:
    name = workload["metadata"]["name"]
    tmp_volumes = {v["name"] for v in pod_spec(workload)["volumes"] if "emptyDir" in v}
    for c in containers(workload):
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, (name, c["name"])
        assert any(m["mountPath"] == "/tmp" and m["name"] in tmp_volumes for m in c["volumeMounts"]), (
            f"{name}/{c['name']}: /tmp must be a writable emptyDir"
        )
        assert "cpu" in c["resources"]["limits"], (name, c["name"])
        if (name, c["name"]) in NO_PROBES:
            assert not c.get("ports"), "a container with ports gets probes"
            continue
        assert "readinessProbe" in c and "livenessProbe" in c, (name, c["name"])


def test_services_select_pods_that_have_their_ports() -> None:
    pods = {doc["metadata"]["name"]: doc for _, doc in workloads() if doc["kind"] == "Deployment"}
    for path, service in all_documents():
        if service["kind"] != "Service":
            continue
        selector = service["spec"]["selector"]
        matches = [d for d in pods.values()
                   if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matches) == 1, f"{path.name}: selects {len(matches)} Deployments"
        server = matches[0]["spec"]["template"]["spec"]["containers"][0]
        for port in service["spec"]["ports"]:
            assert container_port(server, port["targetPort"]) == port["port"]


def test_images_are_built_here_or_pinned() -> None:
    for _, workload in workloads():
        for c in containers(workload):
            image, _, tag = c["image"].partition(":")
            if image in IMAGES:
                assert (ROOT / IMAGES[image]).is_file()
            else:
                assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{c['image']}: pin a release"


def test_pod_uid_is_the_image_user() -> None:
    for _, workload in workloads():
        for c in containers(workload):
            image = c["image"].partition(":")[0]
            if image in IMAGES:
                user = last(ROOT / IMAGES[image], "USER").value.split(":")[0]
                assert int(user) == pod_spec(workload)["securityContext"]["runAsUser"], image
