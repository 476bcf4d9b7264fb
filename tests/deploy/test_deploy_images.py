"""The images, checked without Docker. Each Dockerfile installs the project as a package
(``pip install -c requirements/lock.txt '.[extra]'`` from the build context), so the checks are on
what that installs: the build context (.dockerignore), the wheel built from it, its declared
dependencies per extra, and its code installed alone into a directory and run from there.

- every image: the pins of its extra agree with the lock, which pins their whole closure; a
  dependency layer before the code; no editable install, no source files copied by hand;
- the wheel: every module and data file of the packages, the console scripts resolving;
- serve: no TensorFlow in its extra's closure; every serving module imports with TensorFlow
  unimportable; ENTRYPOINT + CMD parse with serving's settings parser and match the contract; the
  final stage carries only the venv; it writes only under /tmp;
- train: `python -m training --help` and `list` run from the installed code; the GPU image (the
  default, DEVICE=gpu) installs tensorflow[and-cuda] at the locked TensorFlow with every CUDA
  wheel pinned by requirements/lock-gpu.txt, the CPU variant (DEVICE=cpu) none of them, and an
  unknown DEVICE fails the build;
- loadtest: the ENTRYPOINT's locustfile is the installed loadtest/locust_bench/locustfile.py; the
  manifests' master/worker arguments parse with Locust's own parser, the locustfile's options
  included.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path, PurePosixPath

import pytest
import yaml
from deploy_support import (
    DOCKERFILES,
    EXTRAS,
    IMAGES,
    ROOT,
    arg_default,
    container,
    context_files,
    copies,
    exec_form,
    extra_requirement_files,
    final_stage,
    find,
    instructions,
    last,
    pyproject,
    wheel_files,
    wheel_metadata,
)
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import contract
from serving.settings import load_settings

HEAVY = {"tensorflow", "tensorflow-cpu", "keras", "tf-keras", "tf2onnx", "tensorboard", "jax", "torch"}
MODEL_BASE_PATH = str(PurePosixPath("/") / PurePosixPath(*contract.DEFAULT_MODEL_BASE_PATH.parts))
VENV = "/opt/venv"
LOCUSTFILE = "loadtest/locust_bench/locustfile.py"  # in the source tree and the installed one
# Run first in a child process: TensorFlow and its kin become unimportable, as in the serve and
# load-test images (this venv has them, for the training tests).
BLOCK_TENSORFLOW = (
    "import sys\n"
    "class _NotInTheImage:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in {'tensorflow', 'keras', 'tf2onnx', 'tensorboard'}:\n"
    "            raise ImportError(f'{name} is not in this image')\n"
    "sys.meta_path.insert(0, _NotInTheImage())\n"
)


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (version,) = [s.version for s in req.specifier if s.operator == "=="]
            pins[canonicalize_name(req.name)] = version
    return pins


def _extra_pins(wheel: Path, extra: str) -> dict[str, str]:
    """The wheel's declared dependencies when installed with ``[extra]`` (the base ones too)."""
    pins = {}
    for line in wheel_metadata(wheel, "METADATA").splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.partition(":")[2].strip())
        if req.marker is None or req.marker.evaluate({"extra": extra}):
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


def _pip_installs(dockerfile: str) -> list[tuple[int, list[str]]]:
    """(instruction number, words) of every ``pip install`` in the Dockerfile's RUNs."""
    out = []
    for number, ins in enumerate(instructions(ROOT / dockerfile)):
        if ins.keyword != "RUN":
            continue
        lexer = shlex.shlex(ins.value, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        command: list[str] = []
        for token in [*lexer, ";"]:
            if token in {";", "&&", "||", "|", "&"}:
                while command[:1] and command[0] in {"if", "then", "else", "do"}:
                    command.pop(0)
                if command[:2] == ["pip", "install"]:
                    out.append((number, command))
                command = []
            else:
                command.append(token)
    return out


def _run_installed(tree: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run this venv's Python with the project importable only from the installed tree."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(tree)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def _imports_report(tree: Path, cwd: Path, packages: list[str], first: tuple[str, ...] = ()) -> dict:
    """Import every module of ``packages`` from the installed tree with TensorFlow unimportable
    (after the modules ``first``); returns the module names and the file each one came from."""
    code = BLOCK_TENSORFLOW + (
        "import importlib, importlib.util, json, pkgutil\n"
        f"for name in {list(first)!r}: importlib.import_module(name)\n"
        "names = []\n"
        f"for package in {packages!r}:\n"
        "    root = importlib.import_module(package)\n"
        "    names += sorted(m.name for m in pkgutil.walk_packages(root.__path__, package + '.'))\n"
        "for name in names:\n"
        "    if not name.endswith('.__main__'):  # entry scripts run on import: found, not run\n"
        "        importlib.import_module(name)\n"
        "    assert importlib.util.find_spec(name), name\n"
        "files = {n: getattr(m, '__file__', None) or '' for n, m in list(sys.modules.items())}\n"
        "print(json.dumps({'names': names, 'files': files}))\n"
    )
    result = _run_installed(tree, cwd, "-c", code)
    assert result.returncode == 0, f"a module needs what the image lacks:\n{result.stderr[-3000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    heavy = sorted(n for n in report["files"] if n.split(".")[0] in {"tensorflow", "keras", "tf2onnx"})
    assert not heavy, heavy
    ours = {n: f for n, f in report["files"].items() if n.split(".")[0] in packages}
    elsewhere = sorted(n for n, f in ours.items() if f and not f.startswith(str(tree)))
    assert not elsewhere, f"imported from outside the installed tree: {elsewhere}"
    return report


# --- Every image: the project as a package, its extra, the lock ---------------------------------------
@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_installs_the_project_with_its_extra_under_the_lock(dockerfile: str) -> None:
    extra = EXTRAS[dockerfile]
    installs = _pip_installs(dockerfile)
    assert installs
    for _, words in installs:
        assert "--no-cache-dir" in words and words[words.index("-c") + 1] == "requirements/lock.txt", words
        assert not {"-e", "--editable"} & set(words), "the image installs the package, not editable"
    # The dependency layer (the files the extra is read from, before the code is copied), then
    # the project from the copied source tree. The training image's GPU layer comes between them.
    (deps_at, deps), = [(n, w) for n, w in installs if "requirements/base.txt" in w]
    files = {PurePosixPath(w[i + 1]).name for w in [deps] for i, x in enumerate(w) if x == "-r"}
    assert files == {"base.txt", *extra_requirement_files(extra)}
    device_layers = [(n, w) for n, w in installs if "-r" in w and n != deps_at]
    assert [w[w.index("-r") + 1] for _, w in device_layers] == (
        ["requirements/train-gpu.txt"] if extra == "train" else [])
    project_at = next(n for n, w in installs if f".[{extra}]" in w)
    copied = [(sources, dest) for sources, dest in copies(ROOT / dockerfile)]
    assert [sources for sources, _ in copied] == [["requirements/"], ["."]], (
        "the build context goes in whole (requirements first, for the cache); no chosen files")
    copy_at = [n for n, ins in enumerate(instructions(ROOT / dockerfile))
               if ins.keyword == "COPY" and ins.value.split()[0] == "."]
    assert deps_at < copy_at[0] < project_at
    assert all(deps_at < n < copy_at[0] for n, _ in device_layers), "CUDA wheels before the code"
    env = " ".join(i.value for i in instructions(ROOT / dockerfile) if i.keyword == "ENV")
    assert "PYTHONPATH" not in env, "the code is installed, not put on a path"
    # pip trusts the base's CA bundle through a build argument (never an ENV that would stay in
    # the image): scripts/images.py mounts the host's bundle there behind a TLS-intercepting proxy.
    found = instructions(ROOT / dockerfile)
    (cert_at,) = [n for n, i in enumerate(found) if i.keyword == "ARG" and i.value.startswith("PIP_CERT")]
    assert found[cert_at].value == "PIP_CERT=/etc/ssl/certs/ca-certificates.crt"
    assert cert_at < deps_at and "PIP_CERT" not in env
    stage_at = max(n for n, i in enumerate(found[:deps_at]) if i.keyword == "FROM")
    assert stage_at < cert_at, "declared in the stage that runs pip"


@pytest.mark.parametrize("extra", sorted(set(EXTRAS.values())))
def test_extra_pins_agree_with_the_lock_which_pins_their_closure(wheel: Path, extra: str) -> None:
    lock = _pins(ROOT / "requirements" / "lock.txt")
    pins = _extra_pins(wheel, extra)
    assert pins, f"the wheel declares nothing for [{extra}]"
    for name, version in pins.items():
        assert lock.get(name) == version, f"[{extra}]: {name}=={version} but lock.txt has {lock.get(name)}"
    unlocked = sorted(_closure(list(pins)) - set(lock) - {"pip", "setuptools", "wheel"})
    assert not unlocked, f"[{extra}] pulls in packages lock.txt does not pin: {unlocked}"


@pytest.mark.parametrize("extra", ["serve", "loadtest"])
def test_serve_and_loadtest_extras_install_no_tensorflow(wheel: Path, extra: str) -> None:
    closure = _closure(list(_extra_pins(wheel, extra)))
    assert not closure & HEAVY, f"[{extra}] pulls in {sorted(closure & HEAVY)}"
    assert ("onnxruntime" in closure) == (extra == "serve")


def test_tensorflow_is_what_the_train_extra_pulls_in(wheel: Path) -> None:
    # The closure check above must be able to fail: [train] does pull TensorFlow in.
    assert "tensorflow" in _closure(list(_extra_pins(wheel, "train")))


# --- The build context and the wheel ---------------------------------------------------------------
def _packages() -> list[str]:
    return sorted(p.rstrip("*") for p in pyproject()["tool"]["setuptools"]["packages"]["find"]["include"])


def test_build_context_is_the_package_source_and_nothing_else() -> None:
    files = context_files()
    top = {f.split("/")[0] for f in files}
    assert top == {"pyproject.toml", "README.md", "requirements", *_packages()}, top
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc") or ".egg-info" in f]
    # Every importable top-level package of the repository is one the project declares.
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert on_disk <= set(_packages()), f"packages pyproject.toml leaves out: {on_disk - set(_packages())}"


def test_wheel_holds_every_module_and_data_file_of_the_packages(wheel: Path) -> None:
    expected = {f for f in context_files() if f.split("/")[0] in _packages()}
    shipped = {f for f in wheel_files(wheel) if ".dist-info/" not in f}
    missing, extra = sorted(expected - shipped), sorted(shipped - expected)
    assert not missing, f"files the wheel leaves out (package-data?): {missing}"
    assert not extra, f"files in the wheel that are not in the source: {extra}"
    for required in ("contract/proto/digits_tfserving.proto", "serving/rest/openapi.yaml",
                     LOCUSTFILE):
        assert required in shipped


def test_console_scripts_resolve_in_the_installed_code(wheel: Path, installed_tree: Path,
                                                       tmp_path: Path) -> None:
    text = wheel_metadata(wheel, "entry_points.txt")
    scripts = dict(re.findall(r"^(\S+) = (\S+)$", text.split("[console_scripts]", 1)[1], re.M))
    assert scripts == pyproject()["project"]["scripts"]
    assert {"digits-train", "digits-serve", "digits", "digits-loadtest"} <= scripts.keys()
    code = BLOCK_TENSORFLOW + (
        "import importlib, json\n"
        f"targets = {sorted(scripts.values())!r}\n"
        "out = {}\n"
        "for target in targets:\n"
        "    module, _, attr = target.partition(':')\n"
        "    m = importlib.import_module(module)\n"
        "    assert callable(getattr(m, attr)), target\n"
        "    out[target] = m.__file__\n"
        "print(json.dumps(out))\n"
    )
    result = _run_installed(installed_tree, tmp_path, "-c", code)
    assert result.returncode == 0, result.stderr[-3000:]
    files = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(f.startswith(str(installed_tree)) for f in files.values()), files


# --- Dockerfile.serve ------------------------------------------------------------------------------
def _only_the_venv_in_the_final_stage(path: Path) -> None:
    stages = [i for i in instructions(path) if i.keyword == "FROM"]
    assert len(stages) >= 2, "multi-stage: the source tree and build tools stay in the build stage"
    final = final_stage(path)
    assert not [i for i in final if i.keyword == "RUN"], "the final stage only copies"
    copied = [i.value.split() for i in final if i.keyword == "COPY"]
    assert copied == [["--from=build", VENV, VENV]], "the final stage carries only the venv"
    env = " ".join(i.value for i in final if i.keyword == "ENV")
    assert f"PATH={VENV}/bin:" in env
    user = last(path, "USER").value.split(":")[0]
    assert user.isdigit() and int(user) > 0
    assert arg_default(path, "PYTHON_IMAGE") == "python:3.11-slim"


def test_serve_dockerfile_shape() -> None:
    path = ROOT / "Dockerfile.serve"
    _only_the_venv_in_the_final_stage(path)
    final = final_stage(path)
    assert "tensorflow" not in path.read_text().split("FROM", 1)[1].replace("TF Serving", "").lower()
    exposed = {int(p) for i in final if i.keyword == "EXPOSE" for p in i.value.split()}
    assert exposed == {contract.GRPC_PORT, contract.REST_PORT}
    health = last(path, "HEALTHCHECK").value
    assert f"127.0.0.1:{contract.REST_PORT}{contract.LIVENESS_PATH}" in health
    env = " ".join(i.value for i in final if i.keyword == "ENV")
    for variable in ("HOME", "TMPDIR"):  # a read-only root filesystem: writes go to /tmp
        assert re.search(rf"\b{variable}=/tmp\b", env), variable
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    # `python -m` puts the working directory on sys.path: not a writable one.
    assert last(path, "WORKDIR").value == "/"


def test_serve_entrypoint_and_defaults_parse_with_the_settings_parser() -> None:
    path = ROOT / "Dockerfile.serve"
    assert exec_form(last(path, "ENTRYPOINT").value) == ["python", "-m", "serving"]
    settings = load_settings(exec_form(last(path, "CMD").value), environ={})
    assert settings.model_name == contract.MODEL_NAME
    assert settings.model_base_path == MODEL_BASE_PATH
    assert (settings.port, settings.rest_api_port) == (contract.GRPC_PORT, contract.REST_PORT)


def test_serve_image_code_imports_every_serving_module_without_tensorflow(installed_tree: Path,
                                                                          tmp_path: Path) -> None:
    report = _imports_report(installed_tree, tmp_path, ["serving", "contract"])
    assert "serving.process.workers" in report["names"] and "serving.__main__" in report["names"]


def test_serve_image_entrypoint_runs(installed_tree: Path, tmp_path: Path) -> None:
    path = ROOT / "Dockerfile.serve"
    entry = exec_form(last(path, "ENTRYPOINT").value)
    assert entry[:2] == ["python", "-m"]
    # `python -m MODULE ARGS`, run after making TensorFlow unimportable.
    run_module = BLOCK_TENSORFLOW + (
        f"import runpy; runpy.run_module({entry[2]!r}, run_name='__main__', alter_sys=True)\n")
    result = _run_installed(installed_tree, tmp_path, "-c", run_module, "--help")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--model_base_path" in result.stdout
    # The image's defaults plus a flag the server does not know: the parser, not Python, refuses.
    result = _run_installed(installed_tree, tmp_path, "-c", run_module,
                            *exec_form(last(path, "CMD").value), "--no_such_flag=1")
    assert result.returncode == 2 and "--no_such_flag" in result.stderr


# --- Dockerfile.train ------------------------------------------------------------------------------
def test_train_dockerfile_shape() -> None:
    path = ROOT / "Dockerfile.train"
    assert exec_form(last(path, "ENTRYPOINT").value) == ["python", "-m", "training"]
    assert arg_default(path, "PYTHON_IMAGE") == "python:3.11-slim"
    assert arg_default(path, "DEVICE") == "gpu", "the GPU image is the default"
    text = path.read_text()
    assert "--build-arg DEVICE=cpu" in text, "the CPU variant is documented"
    user = last(path, "USER").value.split(":")[0]
    assert user.isdigit() and int(user) > 0
    # Runs start in the shared volume's mount point, not in the source tree the build copied.
    assert last(path, "WORKDIR").value == "/work"
    # Everything is installed into a venv (Debian's Python, the stand-in base, refuses a system-wide
    # pip install; python:3.11-slim accepts either), whose bin/ comes first on PATH.
    assert any(i.keyword == "RUN" and i.value == f"python -m venv {VENV}" for i in instructions(path))
    env = " ".join(i.value for i in instructions(path) if i.keyword == "ENV")
    assert f"PATH={VENV}/bin:" in env
    # The device argument is declared after the CPU dependency layer: that layer, the biggest but
    # one, is the same (cached, pushed once) for both variants.
    found = instructions(path)
    device_at = next(n for n, i in enumerate(found) if i.keyword == "ARG" and i.value.startswith("DEVICE"))
    deps_at = next(n for n, i in enumerate(found)
                   if i.keyword == "RUN" and "requirements/base.txt" in i.value)
    assert deps_at < device_at


def _device_layer() -> str:
    (run,) = [i.value for i in instructions(ROOT / "Dockerfile.train")
              if i.keyword == "RUN" and "$DEVICE" in i.value]
    return run


@pytest.mark.parametrize("device", ["gpu", "cpu", "tpu", ""])
def test_train_device_layer_installs_cuda_wheels_for_gpu_only(device: str, tmp_path: Path) -> None:
    # The RUN itself, under sh, with a `pip` that records its arguments instead of installing.
    (tmp_path / "pip").write_text('#!/bin/sh\necho "$@" >> "$PIP_CALLS"\n')
    (tmp_path / "pip").chmod(0o755)
    calls = tmp_path / "calls"
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "DEVICE": device, "PIP_CALLS": str(calls)}
    result = subprocess.run(["sh", "-c", _device_layer()], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=10)
    recorded = calls.read_text().split() if calls.exists() else []
    if device == "gpu":
        assert result.returncode == 0, result.stderr
        assert recorded == ["install", "--no-cache-dir", "-c", "requirements/lock.txt",
                            "-c", "requirements/lock-gpu.txt", "-r", "requirements/train-gpu.txt"]
    elif device == "cpu":
        assert result.returncode == 0 and not recorded, result.stderr
    else:  # a typo must not build a CPU image silently
        assert result.returncode == 1 and not recorded and "gpu or cpu" in result.stderr


def _requirement_lines(path: Path) -> list[Requirement]:
    return [Requirement(line.split("#", 1)[0]) for line in path.read_text().splitlines()
            if line.split("#", 1)[0].strip()]


def test_gpu_requirements_are_tensorflow_with_cuda_at_the_locked_version() -> None:
    lock = _pins(ROOT / "requirements" / "lock.txt")
    (req,) = _requirement_lines(ROOT / "requirements" / "train-gpu.txt")
    assert (canonicalize_name(req.name), req.extras, str(req.specifier)) == (
        "tensorflow", {"and-cuda"}, f"=={lock['tensorflow']}")
    assert "and-cuda" in (metadata.metadata("tensorflow").get_all("Provides-Extra") or [])


def test_gpu_lock_pins_every_cuda_wheel_of_the_locked_tensorflow() -> None:
    lock = _pins(ROOT / "requirements" / "lock.txt")
    gpu_path = ROOT / "requirements" / "lock-gpu.txt"
    gpu = _pins(gpu_path)
    # What the and-cuda extra of TensorFlow (this venv's is the locked one) adds to its requirements.
    assert metadata.version("tensorflow") == lock["tensorflow"]
    added = {}
    for text in metadata.requires("tensorflow") or []:
        req = Requirement(text)
        only_with_the_extra = req.marker and not req.marker.evaluate({"extra": ""})
        if only_with_the_extra and req.marker.evaluate({"extra": "and-cuda"}):
            added[canonicalize_name(req.name)] = req.specifier
    assert added and all(name.startswith("nvidia-") for name in added)
    for name, specifier in added.items():
        assert name in gpu, f"lock-gpu.txt does not pin {name}"
        assert specifier.contains(gpu[name]), f"{name}=={gpu[name]} outside tensorflow's {specifier}"
    # Only the CUDA wheels (and what they need): nothing lock.txt pins already, no install tools.
    assert all(name.startswith("nvidia-") for name in gpu), sorted(gpu)
    assert not set(gpu) & set(lock)
    # Says how it is made, by a command that exists.
    header = gpu_path.read_text()
    assert "python scripts/images.py lock-gpu" in header and "--dry-run" in header
    assert '"lock-gpu"' in (ROOT / "scripts" / "images.py").read_text()


def test_train_image_entrypoint_runs(installed_tree: Path, tmp_path: Path) -> None:
    cwd = tmp_path / "work"  # the image's WORKDIR: the shared volume, no code in it
    result = _run_installed(installed_tree, cwd, "-m", "training", "--help")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "run" in result.stdout and "export" in result.stdout
    job_args = container(find("Job", "digits-train-grid"), "train")["args"]
    grid_name = job_args[job_args.index("--grid") + 1]
    result = _run_installed(installed_tree, cwd, "-m", "training", "list", "--grid", grid_name)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [line for line in result.stdout.splitlines() if re.match(r"\s*\d+\s", line)]
    assert len(runs) == find("Job", "digits-train-grid")["spec"]["completions"]


# --- Dockerfile.loadtest and the Locust pods ---------------------------------------------------------
def _locustfile_link() -> tuple[list[str], str]:
    """The build stage's ``ln -s "$(python ...)" LINK``: the command that finds the installed
    locustfile, and the link's path."""
    run = next(i.value for i in instructions(ROOT / "Dockerfile.loadtest")
               if i.keyword == "RUN" and "ln -s" in i.value)
    found = re.search(r"""ln -s "\$\((python .*?)\)"\s+(\S+)""", run)
    assert found, run
    return shlex.split(found[1]), found[2]


def test_loadtest_dockerfile_shape() -> None:
    path = ROOT / "Dockerfile.loadtest"
    _only_the_venv_in_the_final_stage(path)
    final = final_stage(path)
    exposed = {int(p) for i in final if i.keyword == "EXPOSE" for p in i.value.split()}
    assert exposed == {8089, 5557}  # Locust's web UI and the master's port for workers
    entry = exec_form(last(path, "ENTRYPOINT").value)
    _, link = _locustfile_link()
    assert entry == ["locust", "-f", link]
    assert PurePosixPath(link).is_relative_to(VENV), "the link travels with the venv"


def test_loadtest_entrypoint_locustfile_is_the_installed_one(installed_tree: Path,
                                                             build_context: Path) -> None:
    command, _ = _locustfile_link()
    assert command[:2] == ["python", "-P"], "not the source tree's copy in the working directory"
    # Run where the build runs it: in the copied source tree, which has a loadtest/ of its own.
    assert (build_context / LOCUSTFILE).is_file()
    result = _run_installed(installed_tree, build_context, *command[1:])
    assert result.returncode == 0, result.stderr[-3000:]
    assert Path(result.stdout.strip()) == installed_tree / LOCUSTFILE


def test_loadtest_image_code_imports_without_tensorflow(installed_tree: Path, tmp_path: Path) -> None:
    # Locust first, as the locust command and digits-loadtest's Locust processes import it: it
    # monkey-patches the standard library (gevent) before anything imports ssl.
    report = _imports_report(installed_tree, tmp_path, ["loadtest", "client", "contract"], first=("locust",))
    assert "loadtest.locust_bench.locustfile" in report["names"] and "client.cli" in report["names"]


def test_locust_pods_arguments_parse_with_locusts_parser(installed_tree: Path, tmp_path: Path) -> None:
    locustfile = installed_tree / LOCUSTFILE
    results = {}
    for name in ("locust-master", "locust-worker"):
        pod = container(find("Deployment", name), "locust")
        assert "command" not in pod, "the image's ENTRYPOINT runs locust with the locustfile"
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
                   **env, "PYTHONPATH": str(installed_tree)}
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


# --- scripts/images.py: what `make images` builds and tags -------------------------------------------
def _script(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _images_script():
    # images.py imports its sibling image_store (scripts/ is sys.path[0] when it runs as a script).
    _script("image_store", ROOT / "scripts" / "image_store.py")
    return _script("images_script", ROOT / "scripts" / "images.py")


def test_images_script_builds_every_dockerfile_and_both_training_variants() -> None:
    script = _images_script()
    built = script.images(["gpu", "cpu"])
    assert {(i.name, i.dockerfile) for i in built} == set(IMAGES.items())
    train = {i.variant: i for i in built if i.name == "digits-train"}
    assert {v: i.build_args for v, i in train.items()} == {"gpu": {"DEVICE": "gpu"}, "cpu": {"DEVICE": "cpu"}}
    assert train["gpu"].suffix == "" and train["cpu"].suffix == "-cpu", "the GPU image is the default"
    # The dirty flag looks at the whole build context: every top-level path docker would send.
    covered = set(script.context_paths())
    assert {f.split("/")[0] for f in context_files()} <= covered
    assert set(DOCKERFILES) <= covered


def test_images_script_tags_are_what_the_kustomize_overlays_deploy() -> None:
    script = _images_script()
    version = pyproject()["project"]["version"]
    tags = {}
    for image in script.images(["gpu", "cpu"]):
        unique = image.tag(f"{version}-g0123456789ab")
        assert unique.endswith(f":{version}-g0123456789ab{image.suffix}")
        tags.setdefault(image.name, set()).update({unique, *image.aliases()})
        assert f"{image.name}:latest{image.suffix}" in image.aliases()
    # Every digits-* image an overlay pins (kustomize `images:`) is a tag `make images` makes.
    pinned = []
    for kustomization in (ROOT / "k8s").rglob("kustomization.yaml"):
        for entry in (yaml.safe_load(kustomization.read_text()) or {}).get("images", []):
            if entry["name"] in tags and "newTag" in entry:
                pinned.append((kustomization.parent.name, f"{entry['name']}:{entry['newTag']}"))
    assert pinned, "no kustomization pins a digits image"
    for overlay, reference in pinned:
        assert reference in tags[reference.split(":")[0]], f"{overlay} deploys {reference}, never built"
