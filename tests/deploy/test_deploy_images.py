"""The images, checked without Docker: what each Dockerfile installs and copies, and its entry
point run from the image's own code tree (the COPYs laid out in a temporary directory).

- serve: no TensorFlow anywhere in what requirements/serve.txt pulls in; the copied packages are
  enough to import every serving module; ENTRYPOINT + CMD parse with serving's settings parser and
  match the contract; it writes only under /tmp.
- train: `python -m training --help` and `list` run from the image tree; the optional
  tensorflow[and-cuda] install resolves to the locked TensorFlow.
- client: the Locust entry point and the manifests' master/worker arguments parse with Locust's
  own parser, the locustfile's options included.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path, PurePosixPath

import pytest
from deploy_support import (
    ROOT,
    arg_default,
    assemble,
    container,
    copies,
    exec_form,
    final_stage,
    find,
    instructions,
    last,
)
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import contract
from serving.settings import load_settings

HEAVY = {"tensorflow", "tensorflow-cpu", "keras", "tf-keras", "tf2onnx", "tensorboard", "jax", "torch"}
MODEL_BASE_PATH = str(PurePosixPath("/") / PurePosixPath(*contract.DEFAULT_MODEL_BASE_PATH.parts))


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (version,) = [s.version for s in req.specifier if s.operator == "=="]
            pins[canonicalize_name(req.name)] = version
    return pins


def _closure(names: list[str]) -> set[str]:
    """The installed distributions these names require, transitively (extras not taken)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(name) or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def _installed_requirements(dockerfile: str) -> list[str]:
    """The requirements files that the Dockerfile's pip installs read (-r), by file name."""
    runs = " ".join(i.value for i in instructions(ROOT / dockerfile) if i.keyword == "RUN")
    return sorted(set(re.findall(r"-r\s+\S*?(\w+\.txt)", runs)))


def _run_in_tree(tree: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the venv's Python with only the image's code tree importable (as PYTHONPATH=/app)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(tree / "app")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


# --- Requirements ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("dockerfile", "role"), [("Dockerfile.train", "train.txt"),
                                                  ("Dockerfile.serve", "serve.txt"),
                                                  ("Dockerfile.client", "client.txt")])
def test_image_installs_its_role_requirements_under_the_lock(dockerfile: str, role: str) -> None:
    assert _installed_requirements(dockerfile) == [role]
    runs = [i.value for i in instructions(ROOT / dockerfile)
            if i.keyword == "RUN" and "pip install" in i.value]
    assert runs and all("-c " in r and "lock.txt" in r and "--no-cache-dir" in r for r in runs)
    lock = _pins(ROOT / "requirements" / "lock.txt")
    pins = _pins(ROOT / "requirements" / role)
    for name, version in pins.items():
        assert lock.get(name) == version, f"{role}: {name}=={version} but lock.txt has {lock.get(name)}"
    unlocked = sorted(_closure(list(pins)) - set(lock) - {"pip", "setuptools", "wheel"})
    assert not unlocked, f"{role} pulls in packages lock.txt does not pin: {unlocked}"


@pytest.mark.parametrize("role", ["serve.txt", "client.txt"])
def test_serving_and_client_images_install_no_tensorflow(role: str) -> None:
    closure = _closure(list(_pins(ROOT / "requirements" / role)))
    assert not closure & HEAVY, f"{role} pulls in {sorted(closure & HEAVY)}"
    assert "onnxruntime" in closure or role == "client.txt"


def test_tensorflow_is_what_the_training_image_needs_and_serve_does_not() -> None:
    # The closure check above must be able to fail: train.txt does pull TensorFlow in.
    assert "tensorflow" in _closure(list(_pins(ROOT / "requirements" / "train.txt")))


# --- Dockerfile.serve ------------------------------------------------------------------------------
def test_serve_dockerfile_shape() -> None:
    path = ROOT / "Dockerfile.serve"
    stages = [i for i in instructions(path) if i.keyword == "FROM"]
    assert len(stages) >= 2, "multi-stage: build tools stay in the build stage"
    final = final_stage(path)
    assert not [i for i in final if i.keyword == "RUN"], "the final stage only copies"
    assert "tensorflow" not in path.read_text().split("FROM", 1)[1].replace("TF Serving", "").lower()
    user = last(path, "USER").value.split(":")[0]
    assert user.isdigit() and int(user) > 0
    exposed = {int(p) for i in final if i.keyword == "EXPOSE" for p in i.value.split()}
    assert exposed == {contract.GRPC_PORT, contract.REST_PORT}
    health = last(path, "HEALTHCHECK").value
    assert f"127.0.0.1:{contract.REST_PORT}{contract.LIVENESS_PATH}" in health
    env = " ".join(i.value for i in final if i.keyword == "ENV")
    for variable in ("HOME", "TMPDIR"):  # a read-only root filesystem: writes go to /tmp
        assert re.search(rf"\b{variable}=/tmp\b", env), variable
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert arg_default(path, "PYTHON_IMAGE") == "python:3.11-slim"


def test_serve_entrypoint_and_defaults_parse_with_the_settings_parser() -> None:
    path = ROOT / "Dockerfile.serve"
    assert exec_form(last(path, "ENTRYPOINT").value) == ["python", "-m", "serving"]
    settings = load_settings(exec_form(last(path, "CMD").value), environ={})
    assert settings.model_name == contract.MODEL_NAME
    assert settings.model_base_path == MODEL_BASE_PATH
    assert (settings.port, settings.rest_api_port) == (contract.GRPC_PORT, contract.REST_PORT)


def test_serve_image_tree_imports_every_serving_module_without_tensorflow(tmp_path: Path) -> None:
    tree = assemble(ROOT / "Dockerfile.serve", tmp_path)
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import serving\n"
        "names = sorted('serving.' + m.name for m in pkgutil.iter_modules(serving.__path__))\n"
        "for name in names: importlib.import_module(name)\n"
        "files = {n: getattr(m, '__file__', None) or '' for n, m in list(sys.modules.items())}\n"
        "print(json.dumps({'names': names, 'files': files}))\n"
    )
    result = _run_in_tree(tree, tree / "app", "-c", code)
    assert result.returncode == 0, f"the serve image lacks a module serving imports:\n{result.stderr}"
    report = json.loads(result.stdout)
    assert "serving.workers" in report["names"] and "serving.__main__" in report["names"]
    heavy = sorted(n for n in report["files"] if n.split(".")[0] in {"tensorflow", "keras", "tf2onnx"})
    assert not heavy, heavy
    venv = str(ROOT / ".venv")
    leaked = sorted(n for n, f in report["files"].items()
                    if f.startswith(str(ROOT)) and not f.startswith(venv))
    assert not leaked, f"imported from the repository instead of the image tree: {leaked}"


def test_serve_image_entrypoint_runs(tmp_path: Path) -> None:
    tree = assemble(ROOT / "Dockerfile.serve", tmp_path)
    path = ROOT / "Dockerfile.serve"
    entry = exec_form(last(path, "ENTRYPOINT").value)
    assert entry[0] == "python"
    result = _run_in_tree(tree, tree / "app", *entry[1:], "--help")
    assert result.returncode == 0, result.stderr
    assert "--model_base_path" in result.stdout
    # The image's defaults plus a flag the server does not know: the parser, not Python, refuses.
    result = _run_in_tree(tree, tree / "app", *entry[1:], *exec_form(last(path, "CMD").value),
                          "--no_such_flag=1")
    assert result.returncode == 2 and "--no_such_flag" in result.stderr


# --- Dockerfile.train ------------------------------------------------------------------------------
def test_train_dockerfile_shape() -> None:
    path = ROOT / "Dockerfile.train"
    assert exec_form(last(path, "ENTRYPOINT").value) == ["python", "-m", "training"]
    assert arg_default(path, "BASE_IMAGE") == "python:3.11-slim"
    assert arg_default(path, "TF_AND_CUDA") == "false"
    assert "--build-arg BASE_IMAGE=" in path.read_text()
    user = last(path, "USER").value.split(":")[0]
    assert user.isdigit() and int(user) > 0
    copied = {source.rstrip("/") for sources, _ in copies(path) for source in sources}
    assert {"client", "training"} <= copied, "training imports the contract from client/"


def test_train_cuda_variant_installs_the_locked_tensorflow_with_its_cuda_extra() -> None:
    path = ROOT / "Dockerfile.train"
    run = next(i.value for i in instructions(path) if i.keyword == "RUN" and "and-cuda" in i.value)
    sed = re.search(r"\$\((sed -n '[^']+' requirements/train\.txt)\)", run)[1]
    result = subprocess.run(sed, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=10)
    lock = _pins(ROOT / "requirements" / "lock.txt")
    assert result.stdout.strip() == f"tensorflow[and-cuda]=={lock['tensorflow']}"
    assert "and-cuda" in (metadata.metadata("tensorflow").get_all("Provides-Extra") or [])


def test_train_image_entrypoint_runs(tmp_path: Path) -> None:
    tree = assemble(ROOT / "Dockerfile.train", tmp_path)
    workdir = PurePosixPath(last(ROOT / "Dockerfile.train", "WORKDIR").value)
    cwd = tmp_path / str(workdir).lstrip("/")
    result = _run_in_tree(tree, cwd, "-m", "training", "--help")
    assert result.returncode == 0, result.stderr
    assert "run" in result.stdout and "export" in result.stdout
    job_args = container(find("Job", "digits-train-grid"), "train")["args"]
    grid_name = job_args[job_args.index("--grid") + 1]
    result = _run_in_tree(tree, cwd, "-m", "training", "list", "--grid", grid_name)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == find("Job", "digits-train-grid")["spec"]["completions"]


# --- Dockerfile.client and the Locust pods -----------------------------------------------------------
def test_locust_pods_arguments_parse_with_locusts_parser(tmp_path: Path) -> None:
    path = ROOT / "Dockerfile.client"
    tree = assemble(path, tmp_path)
    entry = exec_form(last(path, "ENTRYPOINT").value)
    assert entry[:2] == ["locust", "-f"]
    locustfile = tmp_path / entry[2].lstrip("/")
    assert locustfile.is_file(), f"{entry[2]} is not in the client image"
    results = {}
    for name in ("locust-master", "locust-worker"):
        pod = container(find("Deployment", name), "locust")
        env = {e["name"]: e["value"] for e in pod.get("env", [])}
        code = (
            "import json, runpy, sys\n"
            "from locust import argument_parser\n"
            f"runpy.run_path({str(locustfile)!r})  # registers the locustfile's options\n"
            "parser = argument_parser.get_parser(default_config_files=[])\n"
            "o = parser.parse_args(sys.argv[1:])\n"
            "print(json.dumps({k: getattr(o, k, None) for k in ('host', 'grpc_target', 'mnist_dir', "
            "'master', 'worker', 'master_host', 'master_port', 'locustfile')}))\n"
        )
        run_env = {**{k: v for k, v in os.environ.items() if not k.startswith(("LOCUST", "PYTHON"))},
                   **env, "PYTHONPATH": str(tree / "app")}
        result = subprocess.run([sys.executable, "-c", code, "-f", str(locustfile), *pod["args"]],
                                cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{name}: {result.stderr[-2000:]}"
        results[name] = json.loads(result.stdout.strip().splitlines()[-1])
    master, worker = results["locust-master"], results["locust-worker"]
    assert master["master"] and not master["worker"]
    assert master["host"] == f"http://digits-serving:{contract.REST_PORT}"
    assert master["grpc_target"] == f"digits-serving:{contract.GRPC_PORT}"
    assert worker["worker"] and worker["master_host"] == "locust-master"
    assert master["mnist_dir"] == worker["mnist_dir"]
