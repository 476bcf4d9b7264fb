"""Reading the deployment files for tests/deploy: manifests, kustomizations, Dockerfiles, and the
build context and wheel the images install.

Plain functions over the files in the repository; no cluster, no Docker engine, no network (the
wheel is built with the setuptools of this venv, without build isolation).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
BIN = Path(sys.executable).parent  # the venv's bin: hadolint, yamllint, ...
# Image name -> the Dockerfile that builds it, and the extra of the project it installs.
IMAGES = {"digits-train": "Dockerfile.train", "digits-serve": "Dockerfile.serve",
          "digits-loadtest": "Dockerfile.loadtest"}
DOCKERFILES = tuple(IMAGES.values())
EXTRAS = {"Dockerfile.train": "train", "Dockerfile.serve": "serve", "Dockerfile.loadtest": "loadtest"}
WORKLOAD_KINDS = {"Deployment", "Job", "StatefulSet", "DaemonSet"}


# --- Kubernetes manifests -------------------------------------------------------------------------
def kustomization_dirs() -> list[Path]:
    """Every directory of k8s/ that holds a kustomization.yaml (each one `kubectl apply -k`-able)."""
    return sorted(path.parent for path in K8S.rglob("kustomization.yaml"))


def manifest_files() -> list[Path]:
    """Every Kubernetes manifest under k8s/ (kustomizations and linter configs excluded)."""
    return sorted(
        path
        for path in K8S.rglob("*.yaml")
        if path.name != "kustomization.yaml" and not path.name.startswith(".")
    )


def documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def all_documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in manifest_files() for doc in documents(path)]


def find(kind: str, name: str) -> dict[str, Any]:
    """The one resource of this kind and name under k8s/ (fails the test if absent or repeated)."""
    hits = [doc for _, doc in all_documents() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind}/{name} under k8s/, found {len(hits)}"
    return hits[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict[str, Any], init: bool = True) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return (spec.get("initContainers", []) if init else []) + spec["containers"]


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    hits = [c for c in containers(workload) if c["name"] == name]
    assert len(hits) == 1, f"{workload['metadata']['name']}: no single container named {name!r}"
    return hits[0]


def workloads() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path, doc in all_documents():
        if doc["kind"] in WORKLOAD_KINDS:
            yield path, doc


def container_port(c: dict[str, Any], port: int | str) -> int:
    """A probe's port (number or the name of a container port) as a number."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in c.get("ports", []) if "name" in p}
    assert port in named, f"container {c['name']}: probe port {port!r} names no container port"
    return named[port]


def flag_values(args: list[str]) -> dict[str, str]:
    """``--name=value`` flags of a container's args as a dict (TF Serving's spelling)."""
    out = {}
    for arg in args:
        assert arg.startswith("--") and "=" in arg, f"expected --flag=value, got {arg!r}"
        key, _, value = arg[2:].partition("=")
        out[key] = value
    return out


# --- Dockerfiles ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, COPY, RUN, ...
    value: str  # the rest of the (joined) line


def instructions(dockerfile: Path) -> list[Instruction]:
    """The instructions of a Dockerfile, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, value = line.partition(" ")
        out.append(Instruction(keyword.upper(), value.strip()))
    return out


def exec_form(value: str) -> list[str]:
    """A JSON-array instruction value (ENTRYPOINT/CMD) as a list; fails on the shell form."""
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(x, str) for x in parsed), value
    return parsed


def final_stage(dockerfile: Path) -> list[Instruction]:
    """The instructions of the last build stage (what the image runs)."""
    found = instructions(dockerfile)
    starts = [i for i, ins in enumerate(found) if ins.keyword == "FROM"]
    return found[starts[-1]:]


def copies(dockerfile: Path) -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context (not ``--from=`` stages)."""
    out = []
    for ins in instructions(dockerfile):
        if ins.keyword != "COPY":
            continue
        words = shlex.split(ins.value)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        out.append((words[:-1], words[-1]))
    return out


def last(dockerfile: Path, keyword: str) -> Instruction:
    hits = [ins for ins in final_stage(dockerfile) if ins.keyword == keyword]
    assert hits, f"{dockerfile.name}: no {keyword} in the final stage"
    return hits[-1]


def arg_default(dockerfile: Path, name: str) -> str | None:
    for ins in instructions(dockerfile):
        if ins.keyword == "ARG" and ins.value.split("=", 1)[0] == name:
            return ins.value.split("=", 1)[1] if "=" in ins.value else None
    return None


# --- The build context (.dockerignore) --------------------------------------------------------------
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """One .dockerignore pattern as a regex over context-relative paths (Go's filepath.Match plus
    ``**``, as Docker reads it: ``*`` and ``?`` stop at ``/``, ``**`` spans directories)."""
    pattern = pattern.strip("/")
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_rules() -> list[tuple[bool, str, re.Pattern[str]]]:
    """(is an exception ``!``, the pattern, its regex) for every line of .dockerignore, in order."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        rules.append((negated, pattern, _pattern_regex(pattern)))
    return rules


def in_context(relative: str, rules: list[tuple[bool, str, re.Pattern[str]]] | None = None) -> bool:
    """Whether Docker sends this context-relative path: the last pattern that matches the path or
    one of its parent directories decides (``!`` keeps it)."""
    rules = dockerignore_rules() if rules is None else rules
    parts = relative.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    keep = True
    for negated, _, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            keep = negated
    return keep


def context_files() -> list[str]:
    """The files (context-relative) that ``docker build .`` sends from this working tree."""
    rules = dockerignore_rules()
    exceptions = [pattern for negated, pattern, _ in rules if negated]
    found = []
    for directory, subdirs, files in os.walk(ROOT):
        here = Path(directory).relative_to(ROOT).as_posix()
        here = "" if here == "." else here + "/"
        # Skip an excluded directory unless an exception ("!") might keep something below it.
        subdirs[:] = [d for d in subdirs if in_context(here + d, rules)
                      or any(p.startswith(here + d + "/") or p.startswith("**") for p in exceptions)]
        found += [here + f for f in files if in_context(here + f, rules)]
    return sorted(found)


def build_context(destination: Path) -> Path:
    """Copy the build context (what ``docker build .`` sends) to ``destination``."""
    for relative in context_files():
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target)
    return destination


# --- The project as a package ---------------------------------------------------------------------------
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def extra_requirement_files(extra: str) -> list[str]:
    """The requirements files an extra of the project is read from (pyproject's dynamic table)."""
    table = pyproject()["tool"]["setuptools"]["dynamic"]["optional-dependencies"][extra]
    return [PurePosixPath(f).name for f in table["file"]]


def build_wheel(context: Path, out_dir: Path) -> Path:
    """Build the project's wheel from a source tree (this venv's setuptools, offline)."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
         "--quiet", "--wheel-dir", str(out_dir), str(context)],
        cwd=out_dir, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out_dir.glob("digits-*.whl")
    return wheel


def wheel_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def wheel_metadata(wheel: Path, name: str) -> str:
    """A file of the wheel's .dist-info (METADATA, entry_points.txt, ...)."""
    with zipfile.ZipFile(wheel) as archive:
        (path,) = [n for n in archive.namelist() if n.endswith(f".dist-info/{name}")]
        return archive.read(path).decode()


def install_tree(wheel: Path, target: Path) -> Path:
    """Install the wheel's files alone (no dependencies) into ``target``: the code an image's venv
    gets from the project, importable with PYTHONPATH=target."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir", "--quiet",
         "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return target
