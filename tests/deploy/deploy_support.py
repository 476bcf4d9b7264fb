"""Reading the deployment files for tests/deploy: manifests, kustomizations and Dockerfiles.

Plain functions over the files in the repository; no cluster, no Docker engine, no network.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
BIN = Path(__import__("sys").executable).parent  # the venv's bin: hadolint, yamllint, ...
DOCKERFILES = ("Dockerfile.train", "Dockerfile.serve", "Dockerfile.client")
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


def assemble(dockerfile: Path, root: Path) -> Path:
    """Lay out under ``root`` the files the Dockerfile COPYs from the build context, at their
    image paths (WORKDIR-relative destinations resolved), minus what .dockerignore drops.

    This is the image's own code tree without Docker: tests run the entry points in it.
    """
    import fnmatch
    import shutil

    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]

    def skip(relative: str) -> bool:
        # Docker's rules, the subset we use: a pattern matches from the context root (a directory
        # drops everything under it); "**/" matches at any depth.
        parts = relative.split("/")
        for pattern in ignored:
            if pattern.startswith("**/"):
                if any(fnmatch.fnmatch(part, pattern[3:]) for part in parts):
                    return True
            elif any(fnmatch.fnmatch("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)):
                return True
        return False

    workdir = PurePosixPath("/")
    for ins in instructions(dockerfile):
        if ins.keyword == "WORKDIR":
            workdir = workdir / ins.value
            continue
        if ins.keyword != "COPY" or "--from" in ins.value:
            continue
        *sources, dest = [w for w in shlex.split(ins.value) if not w.startswith("--")]
        target = workdir / dest
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"{dockerfile.name}: COPY {source}: not in the build context"
            assert not skip(source.rstrip("/")), f"{dockerfile.name}: .dockerignore drops {source}"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            for file in files:
                relative = file.relative_to(ROOT).as_posix()
                if skip(relative):
                    continue
                inner = file.relative_to(path) if path.is_dir() else PurePosixPath(file.name)
                into = target / inner if (path.is_dir() or dest.endswith("/")) else target
                out = root / str(into).lstrip("/")
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, out)
    return root
