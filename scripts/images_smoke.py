"""`make images-smoke`: the built images, run as Kubernetes runs them, as far as this machine allows.

Usage: python scripts/images.py smoke [--tag VERSION-gREV]   (after `make images`)

Containers are buildah working containers run with chroot isolation (`buildah run --isolation
chroot`): the only way to run an image on our machines without Docker (scripts/images.py says why).
Steps, each checked, with timings and a summary at the end (also build/images/smoke.json):

1. serve, the shipped model: the serving Deployment's own arguments (read from k8s/, the ports
   replaced by free ones on 127.0.0.1), its runAsUser:runAsGroup, the model repository mounted
   read-only at /models and a scratch /tmp (the manifest's emptyDir). Ready when the startup
   probe's GET /v1/models/lenet5 reports the version AVAILABLE and grpc.health.v1 says SERVING; 100
   MNIST test digits classified over REST and over gRPC (the official tensorflow-serving-api stubs);
   the process runs as that UID; nothing was written outside the mounts (what a read-only root
   filesystem needs); SIGTERM to the server, which must exit 0 within the grace period the manifest
   leaves it (terminationGracePeriodSeconds minus the preStop sleep), no process left behind.
2. train, each built variant, as UID 10001: the devices TensorFlow sees and whether the CUDA wheels
   are there; with DIGITS_REQUIRE_GPU=1 and no GPU, exit code 2; one short run of the quick grid
   (MNIST mounted read-only, MNIST_DIR, the runs on a mounted /work) stopped by SIGTERM after its
   first epoch (exit 143 within seconds), the same command again resuming it (the first epoch not redone)
   to the end, and its export into a mounted model repository.
3. serve the exported version, as in 1, while the load-test image runs Locust headless against it
   over REST and gRPC for a few seconds: requests made, none failed.

What chroot isolation cannot enforce, so this does not check it: a read-only root filesystem
(checked instead: the server writes nothing outside its mounts), dropped capabilities and
no-new-privileges, the seccomp profile, PID/network/mount namespaces (the server shares the host's
network and PID space, hence the free loopback ports and the SIGTERM sent to the server's own PID,
as the kubelet sends it to the container's main process), and CPU/memory limits.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import psutil
import tensorflow as tf  # tf.make_tensor_proto/make_ndarray for the official TF Serving stubs
import tritonclient.grpc as triton_grpc  # the official Open Inference Protocol (V2) clients
import tritonclient.http as triton_http
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from image_store import OUT, ROOT, TRAIN_VARIANTS, image_exists, image_size, local_image, log
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import contract
from contract.mnist import load_split, mnist_dir, to_model_input
from loadtest.server import free_port

MNIST_DIR = mnist_dir().resolve()  # $MNIST_DIR, else data/mnist: mounted read-only into containers
PRETRAINED = ROOT / "pretrained" / contract.MODEL_NAME
DIGITS = 100  # MNIST test digits classified per protocol
READY_TIMEOUT_S = 180
TRAIN_TIMEOUT_S = 900
# The short training run: the quick grid's LeNet-5 (Adam, ReLU), three short epochs on 12,000
# images (stopped with SIGTERM after its first epoch, then resumed).
EPOCHS = 3
TRAIN_ARGS = ["--grid", "quick", "--index", "4", "--epochs", str(EPOCHS), "--train-limit", "12000"]
TRAIN_STOP_S = 15  # "promptly": well inside the 60 s the Job allows after SIGTERM
MIN_ACCURACY = {"pretrained": 0.95, "exported": 0.8}  # on the first 100 test digits
LOAD_TEST_S = 8
SERVING = health_pb2.HealthCheckResponse.SERVING


class SmokeFailure(Exception):
    """A check of the smoke test failed."""


def check(condition: object, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


# --- The Kubernetes manifest the serve image is run like ------------------------------------------
@dataclass(frozen=True)
class ServingPod:
    source: str
    args: list[str]
    user: str  # runAsUser:runAsGroup
    grace_s: float  # what the server has after SIGTERM: terminationGracePeriodSeconds - preStop sleep


def workload(image: str, kinds: tuple[str, ...]) -> tuple[str, dict, dict]:
    """(file, pod spec, container) of the first workload under k8s/ whose container runs the image."""
    for path in sorted((ROOT / "k8s").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in kinds:
                spec = doc["spec"]["template"]["spec"]
                for c in spec["containers"]:
                    if str(c.get("image", "")).split(":")[0] == image:
                        return str(path.relative_to(ROOT)), spec, c
    raise SmokeFailure(f"no {' or '.join(kinds)} under k8s/ runs the {image} image")


def run_as(spec: dict, c: dict) -> str:
    """runAsUser:runAsGroup, the container's securityContext over the pod's."""
    security = {**spec.get("securityContext", {}), **c.get("securityContext", {})}
    return f"{security['runAsUser']}:{security.get('runAsGroup', security['runAsUser'])}"


def serving_pod() -> ServingPod:
    """How the serving Deployment runs the digits-serve image."""
    source, spec, c = workload("digits-serve", ("Deployment",))
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pause = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
    grace = float(spec.get("terminationGracePeriodSeconds", 30)) - pause
    return ServingPod(source, list(c.get("args", [])), run_as(spec, c), grace)


def with_ports(args: list[str], grpc_port: int, rest_port: int) -> list[str]:
    """The manifest's arguments with the ports replaced and the servers bound to loopback."""
    replaced = {"--port": str(grpc_port), "--rest_api_port": str(rest_port), "--host": "127.0.0.1"}
    kept = [a for a in args if a.split("=", 1)[0] not in replaced]
    return kept + [f"{k}={v}" for k, v in replaced.items()]


# --- Containers: buildah working containers, chroot isolation --------------------------------------
@dataclass
class Container:
    """One working container of an image, running one command at a time."""

    image: str
    name: str = ""

    def __enter__(self) -> Container:
        result = subprocess.run(["buildah", "from", "--pull=never", "--quiet", local_image(self.image)],
                                capture_output=True, text=True, timeout=300)
        check(result.returncode == 0, f"buildah from {self.image}: {result.stderr[-2000:]}")
        self.name = result.stdout.strip().splitlines()[-1]
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["buildah", "rm", self.name], capture_output=True, timeout=120)

    def entrypoint(self) -> list[str]:
        out = subprocess.run(["podman", "image", "inspect", "--format", "{{json .Config.Entrypoint}}",
                              local_image(self.image)], capture_output=True, text=True, timeout=60)
        return json.loads(out.stdout) or []

    def command(self, args: list[str], user: str, volumes: dict[Path, str], env: dict[str, str]) -> list[str]:
        return ["buildah", "run", "--isolation", "chroot", "--user", user,
                *[x for host, target in volumes.items() for x in ("-v", f"{host}:{target}")],
                *[x for k, v in env.items() for x in ("--env", f"{k}={v}")],
                self.name, "--", *args]

    def run(self, args: list[str], log_path: Path, *, user: str, volumes: dict[Path, str],
            env: dict[str, str] | None = None, timeout: float = 600) -> int:
        with open(log_path, "wb") as out:
            result = subprocess.run(self.command(args, user, volumes, env or {}), stdout=out,
                                    stderr=subprocess.STDOUT, timeout=timeout)
        return result.returncode

    def start(self, args: list[str], log_path: Path, *, user: str, volumes: dict[Path, str],
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(log_path, "wb") as out:
            return subprocess.Popen(self.command(args, user, volumes, env or {}), stdout=out,
                                    stderr=subprocess.STDOUT)

    def written(self) -> list[str]:
        """Paths the container's processes created or changed in its root filesystem: the overlay's
        upper directory, less what `buildah run` itself puts there (hosts, resolv.conf, run/ and the
        mount points)."""
        merged = subprocess.run(["buildah", "mount", self.name], capture_output=True, text=True,
                                timeout=60).stdout.strip()
        try:
            upper = Path(merged).parent / "diff"
            check(upper.is_dir(), f"no overlay upper directory beside {merged}")
            found = sorted(str(p.relative_to(upper)) for p in upper.rglob("*"))
        finally:
            subprocess.run(["buildah", "umount", self.name], capture_output=True, timeout=60)
        own = {"etc", "etc/hosts", "etc/hostname", "etc/resolv.conf", "run", "run/.containerenv",
               "models", "tmp", "work", "data", "data/mnist"}
        return [p for p in found if p not in own and not p.startswith("run/")]


def main_process(runner: subprocess.Popen[bytes], uid: int, timeout: float = 30) -> psutil.Process:
    """The container's main process: the first process of that UID under `buildah run` (its
    chroot helper execs the command there)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(runner.pid).children(recursive=True):
                if child.uids().real == uid and "buildah" not in child.name():
                    return child
        check(runner.poll() is None, f"the container exited with {runner.returncode}")
        time.sleep(0.2)
    raise SmokeFailure("no container process found")


# --- Talking to the server ---------------------------------------------------------------------------
def http_json(url: str, body: object | None = None, timeout: float = 10) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {}
    except OSError:
        return 0, {}


def wait_ready(rest: str, grpc_target: str, runner: subprocess.Popen[bytes], log_path: Path) -> float:
    """Seconds until both probes pass: the startup probe's GET /v1/models/lenet5 reports a version
    AVAILABLE, and the readiness probe's grpc.health.v1 says SERVING (each protocol's workers load
    the model on their own, so one may lag the other)."""
    started = time.monotonic()
    status_url = f"{rest}{contract.REST_MODELS_PREFIX}/{contract.MODEL_NAME}"
    with grpc.insecure_channel(grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            code, body = http_json(status_url, timeout=2)
            states = [v["state"] for v in body.get("model_version_status", [])]
            available = code == 200 and "AVAILABLE" in states
            try:
                serving = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == SERVING
            except grpc.RpcError:
                serving = False
            if available and serving:
                return time.monotonic() - started
            check(runner.poll() is None, f"the server exited with {runner.returncode}:\n"
                  + log_path.read_text(errors="replace")[-3000:])
            check(time.monotonic() - started < READY_TIMEOUT_S,
                  f"not ready in {READY_TIMEOUT_S} s (REST AVAILABLE: {available}, gRPC SERVING: {serving})")
            time.sleep(0.5)


def classify(rest: str, grpc_target: str) -> dict[str, float]:
    """Accuracy on the first DIGITS MNIST test digits over TF Serving's REST and gRPC APIs and the
    Open Inference Protocol's (V2, with tritonclient), all four giving the same answers."""
    images, labels = load_split("t10k", str(MNIST_DIR))
    batch, truth = to_model_input(images[:DIGITS]), labels[:DIGITS].astype(int)
    code, body = http_json(f"{rest}{contract.REST_MODELS_PREFIX}/{contract.MODEL_NAME}:predict",
                           {"instances": batch.tolist()}, timeout=30)
    check(code == 200, f"REST predict answered {code}")
    rest_digits = np.array([p[contract.OUTPUT_DIGIT] for p in body["predictions"]])
    request = predict_pb2.PredictRequest()
    request.model_spec.name = contract.MODEL_NAME
    request.model_spec.signature_name = contract.SIGNATURE_NAME
    request.inputs[contract.INPUT_NAME].CopyFrom(tf.make_tensor_proto(batch))
    with grpc.insecure_channel(grpc_target) as channel:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    grpc_digits = tf.make_ndarray(reply.outputs[contract.OUTPUT_DIGIT]).astype(int)
    probabilities = tf.make_ndarray(reply.outputs[contract.OUTPUT_PROBABILITIES])
    check(probabilities.shape == (DIGITS, contract.NUM_CLASSES), f"gRPC probabilities {probabilities.shape}")
    check(np.allclose(probabilities.sum(axis=1), 1, atol=1e-4), "probabilities do not sum to 1")
    check((rest_digits == grpc_digits).all(), "REST and gRPC disagree")
    v2_answers = {}
    for api, module, url in (("v2-rest", triton_http, rest.removeprefix("http://")),
                             ("v2-grpc", triton_grpc, grpc_target)):
        tensor = module.InferInput(contract.INPUT_NAME, list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        client = module.InferenceServerClient(url)
        try:
            check(client.is_model_ready(contract.MODEL_NAME), f"{api}: model not ready")
            result = client.infer(contract.MODEL_NAME, [tensor])
        finally:
            client.close()
        check(np.array_equal(result.as_numpy(contract.OUTPUT_PROBABILITIES), probabilities),
              f"{api} and TF Serving's gRPC API give different probabilities")
        v2_answers[api] = result.as_numpy(contract.OUTPUT_DIGIT).astype(int)
    return {"rest": float((rest_digits == truth).mean()), "grpc": float((grpc_digits == truth).mean()),
            **{api: float((digits == truth).mean()) for api, digits in v2_answers.items()}}


# --- The steps -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def serving(image: str, models: Path, scratch: Path, label: str, report: dict) -> Iterator[tuple[str, str]]:
    """The serve image running on a model repository; yields (REST URL, gRPC target), then SIGTERM."""
    pod = serving_pod()
    uid = int(pod.user.split(":")[0])
    grpc_port, rest_port = free_port(), free_port()
    tmp = owned_dir(scratch / f"serve-{label}-tmp", uid)
    log_path = scratch / f"serve-{label}.log"
    step: dict = {"manifest": pod.source, "user": pod.user, "grace_s": pod.grace_s, "log": str(log_path)}
    report[f"serve_{label}"] = step
    with Container(image) as box:
        args = [*box.entrypoint(), *with_ports(pod.args, grpc_port, rest_port)]
        log(f"serve ({label}): {' '.join(args)} as {pod.user}, /models read-only")
        runner = box.start(args, log_path, user=pod.user, volumes={models: "/models:ro", tmp: "/tmp"})
        try:
            rest, target = f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}"
            step["ready_s"] = round(wait_ready(rest, target, runner, log_path), 1)
            server = main_process(runner, uid)
            step["process_uids"] = sorted(set(server.uids()))
            check(step["process_uids"] == [uid], f"the server runs as {step['process_uids']}, not {uid}")
            yield rest, target
        finally:
            step["stop_s"], step["exit_code"] = stop(runner, uid, pod.grace_s)
        log(f"serve ({label}): exit {step['exit_code']} {step['stop_s']:.1f} s after SIGTERM "
            f"(grace {pod.grace_s:.0f} s)")
        check(step["exit_code"] == 0, f"the server exited with {step['exit_code']} after SIGTERM:\n"
              + log_path.read_text(errors="replace")[-3000:])
        check(step["stop_s"] <= pod.grace_s, f"the server took {step['stop_s']:.1f} s to stop")
        step["written_outside_mounts"] = box.written()
        check(not step["written_outside_mounts"],
              f"wrote outside its volumes (fails on a read-only root): {step['written_outside_mounts']}")


def stop(runner: subprocess.Popen[bytes], uid: int, grace_s: float) -> tuple[float, int]:
    """SIGTERM to the container's main process, as the kubelet sends it; SIGKILL after the grace
    period. (exit code, seconds to exit); no process of the container may survive it."""
    if runner.poll() is not None:
        return 0.0, runner.returncode
    server = main_process(runner, uid)
    family = [server, *server.children(recursive=True)]
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    try:
        code = runner.wait(timeout=grace_s + 5)
    except subprocess.TimeoutExpired:
        for process in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        runner.wait(timeout=30)
        raise SmokeFailure(f"still running {grace_s + 5:.0f} s after SIGTERM: killed") from None
    seconds = time.monotonic() - started
    _, alive = psutil.wait_procs(family, timeout=5)
    check(not alive, f"left running after SIGTERM: {[p.pid for p in alive]}")
    return round(seconds, 2), code


def owned_dir(path: Path, uid: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, uid)
    return path


@dataclass
class TrainingBox:
    """A working container of the training image, run as the grid Job runs it: its runAsUser and
    runAsGroup, the shared volume at /work, MNIST read-only (MNIST_DIR), a model repository at
    /models."""

    box: Container
    variant: str
    scratch: Path
    volumes: dict[Path, str]
    user: str
    env: dict[str, str] = field(default_factory=lambda: {contract.MNIST_DIR_ENV: "/data/mnist"})

    def log_path(self, name: str) -> Path:
        return self.scratch / f"train-{self.variant}-{name}.log"

    def run(self, name: str, args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
        code = self.box.run(args, self.log_path(name), user=self.user, volumes=self.volumes,
                            env={**self.env, **(env or {})}, timeout=TRAIN_TIMEOUT_S)
        return code, self.log_path(name).read_text(errors="replace")


RUN_ARGS = ["run", *TRAIN_ARGS, "--runs-dir", "/work/runs", "--progress", "lines"]
EXPORT_ARGS = ["export", "--grid", "quick", "--run", TRAIN_ARGS[3], "--runs-dir", "/work/runs",
               "--model-base-path", f"/models/{contract.MODEL_NAME}"]
DEVICE_PROBE = (
    "import json, importlib.util, tensorflow as tf\n"
    "print(json.dumps({'gpus': [d.name for d in tf.config.list_physical_devices('GPU')],\n"
    "  'cuda_build': tf.sysconfig.get_build_info().get('cuda_version'),\n"
    "  'cuda_wheels': importlib.util.find_spec('nvidia') is not None}))"
)


def train(image: str, variant: str, scratch: Path, report: dict) -> Path:
    """The training image: its devices and the GPU requirement, one short run (stopped once by
    SIGTERM, then resumed), its export. Returns the model repository it exported into."""
    user = run_as(*workload("digits-train", ("Job",))[1:])
    uid = int(user.split(":")[0])
    work = owned_dir(scratch / f"train-{variant}-work", uid)
    models = owned_dir(scratch / f"models-{variant}", uid)
    step: dict = {"image": image}
    report[f"train_{variant}"] = step
    with Container(image) as box:
        volumes = {work: "/work", models: "/models", MNIST_DIR: "/data/mnist:ro"}
        t = TrainingBox(box, variant, scratch, volumes, user)
        check_devices(t, step)
        entry = box.entrypoint()
        preempt(t, [*entry, *RUN_ARGS], uid, step)
        for name, args in (("run", RUN_ARGS), ("export", EXPORT_ARGS)):
            log(f"train ({variant}): {' '.join([*entry, *args])}")
            started = time.monotonic()
            code, text = t.run(name, [*entry, *args])
            step[f"{name}_s"] = round(time.monotonic() - started, 1)
            check(code == 0, f"training {name} exited {code}:\n{text[-3000:]}")
            if name == "run":  # resumed after the SIGTERM: the first epoch is not redone
                step["resumed"] = f" epoch 1/{EPOCHS} " not in text and f" epoch {EPOCHS}/{EPOCHS} " in text
                check(step["resumed"], f"the rerun did not resume after the first epoch:\n{text[-3000:]}")
        step["written_outside_mounts"] = box.written()
    versions = sorted(p for p in (models / contract.MODEL_NAME).iterdir() if p.name.isdigit())
    check(versions and (versions[-1] / contract.ONNX_FILENAME).is_file(), f"no exported version in {models}")
    step["exported"] = [str(p.relative_to(models)) for p in versions]
    log(f"train ({variant}): run {step['run_s']:.0f} s, export {step['export_s']:.0f} s "
        f"-> {step['exported']}")
    return models


def check_devices(t: TrainingBox, step: dict) -> None:
    """What TensorFlow sees; the CUDA wheels in the GPU variant only; with DIGITS_REQUIRE_GPU=1 and
    no GPU, exit 2."""
    code, text = t.run("devices", ["python", "-c", DEVICE_PROBE])
    check(code == 0, f"TensorFlow does not start in the {t.variant} image:\n{text[-3000:]}")
    # The probe's one JSON line, among TensorFlow's own messages on stderr (the same log).
    found = [line for line in text.splitlines() if line.startswith("{")]
    check(found, f"no device report from the probe:\n{text[-3000:]}")
    step["devices"] = devices = json.loads(found[-1])
    log(f"train ({t.variant}): TensorFlow sees GPUs {devices['gpus']}, CUDA build "
        f"{devices['cuda_build']}, CUDA wheels {'present' if devices['cuda_wheels'] else 'absent'}")
    check(devices["cuda_wheels"] == (t.variant == "gpu"), "CUDA wheels in the wrong variant")
    if not devices["gpus"]:
        # Its own runs directory: whatever it leaves must not be resumed by the runs below.
        args = [*t.box.entrypoint(), "run", *TRAIN_ARGS, "--runs-dir", "/tmp/runs"]
        code, text = t.run("require-gpu", args, env={"DIGITS_REQUIRE_GPU": "1"})
        step["require_gpu_exit_code"] = code
        check(code == 2, f"DIGITS_REQUIRE_GPU=1 without a GPU exited {code}, not 2:\n{text[-3000:]}")
        log(f"train ({t.variant}): DIGITS_REQUIRE_GPU=1 without a GPU: exit 2")


def preempt(t: TrainingBox, args: list[str], uid: int, step: dict) -> None:
    """The run, stopped by SIGTERM once its first epoch is done: exit 143 within seconds."""
    log(f"train ({t.variant}): {' '.join(args)}, SIGTERM after its first epoch")
    log_path = t.log_path("sigterm")
    runner = t.box.start(args, log_path, user=t.user, volumes=t.volumes, env=t.env)
    wait_for_line(runner, log_path, f" epoch 1/{EPOCHS} ")
    step["sigterm_stop_s"], step["sigterm_exit_code"] = stop(runner, uid, TRAIN_STOP_S)
    log(f"train ({t.variant}): exit {step['sigterm_exit_code']} {step['sigterm_stop_s']} s after SIGTERM")
    check(step["sigterm_exit_code"] == 143, f"exit {step['sigterm_exit_code']} after SIGTERM, not 143:\n"
          + log_path.read_text(errors="replace")[-3000:])


def wait_for_line(runner: subprocess.Popen[bytes], log_path: Path, text: str) -> None:
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while text not in log_path.read_text(errors="replace"):
        check(runner.poll() is None, f"exited ({runner.returncode}) before {text.strip()!r}:\n"
              + log_path.read_text(errors="replace")[-3000:])
        check(time.monotonic() < deadline, f"no {text.strip()!r} in {TRAIN_TIMEOUT_S} s")
        time.sleep(0.1)


def load_test(image: str, rest: str, target: str, scratch: Path, report: dict) -> None:
    """Locust from the load-test image, headless, REST and gRPC users: requests made, none failed."""
    out = owned_dir(scratch / "loadtest-tmp", 10001)
    args = ["--headless", "-u", "4", "-r", "4", "-t", f"{LOAD_TEST_S}s", "--host", rest,
            "--grpc-target", target, "--mnist-dir", "/data/mnist", "--csv", "/tmp/locust",
            "RestDigitsUser", "GrpcDigitsUser"]
    log_path = scratch / "loadtest.log"
    with Container(image) as box:
        log(f"load test: {' '.join([*box.entrypoint(), *args])}")
        code = box.run([*box.entrypoint(), *args], log_path, user="10001:10001",
                       volumes={out: "/tmp", MNIST_DIR: "/data/mnist:ro"}, timeout=120)
    check(code == 0, f"locust exited {code}:\n{log_path.read_text(errors='replace')[-3000:]}")
    with open(out / "locust_stats.csv") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    total = rows["Aggregated"]
    step = {"requests": int(total["Request Count"]), "failures": int(total["Failure Count"]),
            "rps": round(float(total["Requests/s"]), 1),
            "by_type": sorted({row["Type"] for name, row in rows.items() if name != "Aggregated"})}
    report["load_test"] = step
    log(f"load test: {step['requests']} requests, {step['failures']} failed, {step['rps']} req/s, "
        f"{step['by_type']}")
    check(step["requests"] > 0 and step["failures"] == 0, "the load test failed requests")
    check(len(step["by_type"]) >= 2, f"expected REST and gRPC requests, got {step['by_type']}")


def smoke(tag: str) -> int:
    started = time.monotonic()
    report: dict = {"tag": tag, "images": {}}
    train_images = {variant: f"digits-train:{tag}{suffix}" for variant, suffix in TRAIN_VARIANTS.items()
                    if image_exists(f"digits-train:{tag}{suffix}")}
    serve_image, loadtest_image = f"digits-serve:{tag}", f"digits-loadtest:{tag}"
    missing = [i for i in (serve_image, loadtest_image) if not image_exists(i)] + (
        [] if train_images else [f"digits-train:{tag}"])
    if missing:
        built = subprocess.run(["podman", "images", "--format", "{{.Tag}}", "--filter",
                                "reference=localhost/digits-serve"], capture_output=True, text=True,
                               timeout=60).stdout.split()
        print(f"not built: {', '.join(missing)}; run `make images` first (this tree is {tag}), or "
              f"test a built one: scripts/images.py smoke --tag TAG (built: {', '.join(built) or 'none'})")
        return 1
    for image in [*train_images.values(), serve_image, loadtest_image]:
        report["images"][image] = image_size(image)
    scratch = Path(tempfile.mkdtemp(prefix="digits-smoke-", dir="/var/tmp"))
    os.chmod(scratch, 0o755)
    models = scratch / "models-pretrained"
    shutil.copytree(PRETRAINED, models / contract.MODEL_NAME)
    try:
        with serving(serve_image, models, scratch, "pretrained", report) as (rest, target):
            report["serve_pretrained"]["accuracy"] = accuracy = classify(rest, target)
            log(f"serve (pretrained): accuracy on {DIGITS} digits {accuracy}")
            check(min(accuracy.values()) >= MIN_ACCURACY["pretrained"], f"accuracy {accuracy}")
        exported = [train(image, variant, scratch, report) for variant, image in train_images.items()]
        with serving(serve_image, exported[0], scratch, "exported", report) as (rest, target):
            report["serve_exported"]["accuracy"] = accuracy = classify(rest, target)
            log(f"serve (exported): accuracy on {DIGITS} digits {accuracy}")
            check(min(accuracy.values()) >= MIN_ACCURACY["exported"], f"accuracy {accuracy}")
            load_test(loadtest_image, rest, target, scratch, report)
        report["result"] = "passed"
    except (SmokeFailure, subprocess.TimeoutExpired, grpc.RpcError) as failure:
        report["result"] = f"FAILED: {failure}"
    report["total_s"] = round(time.monotonic() - started, 1)
    report["scratch"] = str(scratch)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "smoke.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_summary(report)
    if report["result"] == "passed":
        shutil.rmtree(scratch, ignore_errors=True)
        return 0
    return 1


def print_summary(report: dict) -> None:
    print(f"\nimages smoke test: {report['result']} in {report['total_s']:.0f} s")
    for image, size in report["images"].items():
        print(f"  {image:55s} {size / 1e6:8,.0f} MB")
    for key in ("serve_pretrained", "serve_exported"):
        if key in report:
            s = report[key]
            print(f"  {key}: ready {s.get('ready_s', '-')} s, accuracy {s.get('accuracy', '-')}, "
                  f"SIGTERM -> exit {s.get('exit_code', '-')} in {s.get('stop_s', '-')} s "
                  f"(grace {s['grace_s']:.0f} s), uids {s.get('process_uids', '-')}, "
                  f"written outside mounts {s.get('written_outside_mounts', '-')}")
    for key in ("train_gpu", "train_cpu"):
        if key in report:
            s = report[key]
            print(f"  {key}: devices {s.get('devices', '-')}, require-GPU exit "
                  f"{s.get('require_gpu_exit_code', 'not checked')}, SIGTERM after epoch 1 -> exit "
                  f"{s.get('sigterm_exit_code', '-')} in {s.get('sigterm_stop_s', '-')} s, resumed "
                  f"{s.get('resumed', '-')}, run {s.get('run_s', '-')} s, export {s.get('export_s', '-')} s, "
                  f"exported {s.get('exported', '-')}")
    if "load_test" in report:
        print(f"  load_test: {report['load_test']}")
    print(f"  details: {(OUT / 'smoke.json').relative_to(ROOT)}; logs: {report['scratch']}")
