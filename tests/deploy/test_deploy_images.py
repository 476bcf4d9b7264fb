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
- train: `python -m training --help` and `list` run from the installed code; the optional
  tensorflow[and-cuda] install resolves to the locked TensorFlow;
- loadtest: the ENTRYPOINT's locustfile is the installed loadtest/locustfile.py; the manifests'
  master/worker arguments parse with Locust's own parser, the locustfile's options included.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path, PurePosixPath

import pytest
from deploy_support import (
    DOCKERFILES,
    EXTRAS,
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
        "    names += sorted(package + '.' + m.name for m in pkgutil.iter_modules(root.__path__))\n"
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
    # the project from the copied source tree.
    (deps_at, deps), = [(n, w) for n, w in installs if "-r" in w]
    files = {PurePosixPath(w[i + 1]).name for w in [deps] for i, x in enumerate(w) if x == "-r"}
    assert files == {"base.txt", *extra_requirement_files(extra)}
    project_at = next(n for n, w in installs if f".[{extra}]" in w)
    copied = [(sources, dest) for sources, dest in copies(ROOT / dockerfile)]
    assert [sources for sources, _ in copied] == [["requirements/"], ["."]], (
        "the build context goes in whole (requirements first, for the cache); no chosen files")
    copy_at = [n for n, ins in enumerate(instructions(ROOT / dockerfile))
               if ins.keyword == "COPY" and ins.value.split()[0] == "."]
    assert deps_at < copy_at[0] < project_at
    env = " ".join(i.value for i in instructions(ROOT / dockerfile) if i.keyword == "ENV")
    assert "PYTHONPATH" not in env, "the code is installed, not put on a path"


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
    for required in ("contract/proto/digits_tfserving.proto", "serving/openapi.yaml",
                     "loadtest/locustfile.py"):
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
    assert "serving.workers" in report["names"] and "serving.__main__" in report["names"]


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
    assert arg_default(path, "BASE_IMAGE") == "python:3.11-slim"
    assert arg_default(path, "TF_AND_CUDA") == "false"
    assert "--build-arg BASE_IMAGE=" in path.read_text()
    user = last(path, "USER").value.split(":")[0]
    assert user.isdigit() and int(user) > 0
    # Runs start in the shared volume's mount point, not in the source tree the build copied.
    assert last(path, "WORKDIR").value == "/work"


def test_train_cuda_variant_installs_the_locked_tensorflow_with_its_cuda_extra() -> None:
    path = ROOT / "Dockerfile.train"
    run = next(i.value for i in instructions(path) if i.keyword == "RUN" and "and-cuda" in i.value)
    sed = re.search(r"\$\((sed -n '[^']+' requirements/train\.txt)\)", run)[1]
    result = subprocess.run(sed, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=10)
    lock = _pins(ROOT / "requirements" / "lock.txt")
    assert result.stdout.strip() == f"tensorflow[and-cuda]=={lock['tensorflow']}"
    assert "and-cuda" in (metadata.metadata("tensorflow").get_all("Provides-Extra") or [])


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
    assert (build_context / "loadtest" / "locustfile.py").is_file()
    result = _run_installed(installed_tree, build_context, *command[1:])
    assert result.returncode == 0, result.stderr[-3000:]
    assert Path(result.stdout.strip()) == installed_tree / "loadtest" / "locustfile.py"


def test_loadtest_image_code_imports_without_tensorflow(installed_tree: Path, tmp_path: Path) -> None:
    # Locust first, as the locust command and digits-loadtest's Locust processes import it: it
    # monkey-patches the standard library (gevent) before anything imports ssl.
    report = _imports_report(installed_tree, tmp_path, ["loadtest", "client", "contract"], first=("locust",))
    assert "loadtest.locustfile" in report["names"] and "client.cli" in report["names"]


def test_locust_pods_arguments_parse_with_locusts_parser(installed_tree: Path, tmp_path: Path) -> None:
    locustfile = installed_tree / "loadtest" / "locustfile.py"
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
