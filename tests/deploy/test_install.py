"""The serve extra installed as the serve image installs it, then run: a fresh virtual environment,
``pip install -c requirements/lock.txt '<build context>[serve]'`` (not editable; pip's cache and
configured indexes allowed), no TensorFlow in it, and ``digits-serve`` from it serving the
exported model (``model_base_path``, tests/conftest.py) on free loopback ports: ready, one REST
predict, SIGTERM, clean exit of the whole process tree.

Opt-in (DIGITS_IMAGES_SMOKE=1): the real images built and smoke-tested, `make images images-smoke`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest
from deploy_support import ROOT, build_context

import contract
from loadtest.server import free_port

pytestmark = pytest.mark.slow

HEAVY = {"tensorflow", "tensorflow-cpu", "keras", "tf-keras", "tf2onnx", "tensorboard"}
INSTALL_TIMEOUT_S = 240.0
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def _clean_env() -> dict[str, str]:
    """This environment without what would point Python at the repository or this venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def test_serve_extra_installs_without_tensorflow_and_serves(model_base_path: Path, mnist_test,
                                                            tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    env = _clean_env()

    # The build context, as `docker build .` sends it, and a fresh venv.
    context = build_context(tmp_path / "context")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=120)
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    timings["venv"] = time.monotonic() - started

    # What Dockerfile.serve runs: the project with its serve extra, pinned by the lock.
    mark = time.monotonic()
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-c", str(ROOT / "requirements" / "lock.txt"),
         f"{context}[serve]"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    timings["install"] = time.monotonic() - mark

    listing = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], env=env,
                             capture_output=True, text=True, check=True, timeout=60)
    installed = {entry["name"].lower().replace("_", "-") for entry in json.loads(listing.stdout)}
    assert not installed & HEAVY, f"the serve extra installed {sorted(installed & HEAVY)}"
    assert {"digits", "onnxruntime", "granian", "grpcio"} <= installed
    probe = subprocess.run(
        [str(python), "-c",
         "import importlib.util, json, serving\n"
         "from importlib import metadata\n"
         "direct = metadata.distribution('digits').read_text('direct_url.json') or '{}'\n"
         "print(json.dumps({'tensorflow': importlib.util.find_spec('tensorflow') is not None,\n"
         "                  'serving': serving.__file__,\n"
         "                  'editable': json.loads(direct).get('dir_info', {}).get('editable', False)}))"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr[-3000:]
    facts = json.loads(probe.stdout)
    assert not facts["tensorflow"]
    assert not facts["editable"]
    assert Path(facts["serving"]).is_relative_to(venv), facts["serving"]
    assert (bin_dir / "digits-serve").is_file()

    # Its console script serving a copy of the exported model.
    repository = tmp_path / "models" / contract.MODEL_NAME
    shutil.copytree(model_base_path, repository)
    grpc_port, rest_port = free_port(), free_port()
    rest = f"http://127.0.0.1:{rest_port}"
    log_path = tmp_path / "server.log"
    mark = time.monotonic()
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [str(bin_dir / "digits-serve"), "--host", "127.0.0.1", "--port", str(grpc_port),
             "--rest_api_port", str(rest_port), "--model_base_path", str(repository)],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while _get(rest + contract.READINESS_PATH) != 200:
            log_tail = log_path.read_text(errors="replace")[-3000:]
            assert server.poll() is None, f"exited with {server.returncode}:\n{log_tail}"
            assert time.monotonic() < deadline, f"not ready in {READY_TIMEOUT_S:.0f}s:\n{log_tail}"
            time.sleep(0.2)
        timings["ready"] = time.monotonic() - mark

        images, labels = mnist_test
        body = json.dumps({"instances": np.asarray(images[:1]).tolist()}).encode()
        request = urllib.request.Request(
            f"{rest}{contract.REST_MODELS_PREFIX}/{contract.MODEL_NAME}:predict", data=body,
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
        (prediction,) = answer["predictions"]
        probabilities = np.asarray(prediction[contract.OUTPUT_PROBABILITIES])
        assert probabilities.shape == (contract.NUM_CLASSES,)
        assert abs(probabilities.sum() - 1) < 1e-4
        assert prediction[contract.OUTPUT_DIGIT] == int(probabilities.argmax()) == int(labels[0])
        tree = psutil.Process(server.pid).children(recursive=True)
    finally:
        mark = time.monotonic()
        server.send_signal(signal.SIGTERM)
        try:
            returncode = server.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for child in psutil.Process(server.pid).children(recursive=True):
                child.kill()
            server.kill()
            server.wait()
            raise
        timings["stop"] = time.monotonic() - mark
    assert returncode == 0, log_path.read_text()[-3000:]
    _, alive = psutil.wait_procs(tree, timeout=5)
    assert not alive, f"left running after SIGTERM: {[p.pid for p in alive]}"
    timings["total"] = time.monotonic() - started
    print("install test timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))


SMOKE_ENV = "DIGITS_IMAGES_SMOKE"


@pytest.mark.skipif(os.environ.get(SMOKE_ENV) != "1",
                    reason=f"builds and runs the images with podman/buildah (minutes, GBs): set "
                           f"{SMOKE_ENV}=1, or run `make images images-smoke`")
def test_images_build_and_pass_their_smoke_test() -> None:
    # The real images, built (cached layers reused) and run by scripts/images.py: see docs/images.md.
    for command, timeout in (("build", 3600), ("smoke", 1800)):
        result = subprocess.run([sys.executable, str(ROOT / "scripts" / "images.py"), command], cwd=ROOT,
                                capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, (
            f"images.py {command}:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
    assert "images smoke test: passed" in result.stdout
