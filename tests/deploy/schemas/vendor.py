"""Vendor the JSON schemas of the custom resources the manifests use, from their CRDs.

kubernetes-validate knows Kubernetes' own types only; a ServiceMonitor or a PrometheusRule
(Prometheus Operator) or an InferenceService (KServe) is checked against the openAPIV3Schema of
its published CRD instead. This script turns a CRD file into that schema, made as strict as the
API server's field validation (``kubectl apply`` rejects unknown fields): every object that
lists its properties gets ``additionalProperties: false`` unless it preserves unknown fields.
Descriptions are dropped (size), and ``--keep`` prunes the tree to the subtrees the manifests use,
so the vendored file stays small; what is pruned away then counts as an unknown field.

Produced the files here with (CRDs from the tagged releases of the fetched repositories):
  git show v0.93.0:example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml \\
      > sm.yaml   # prometheus-operator/prometheus-operator
  python tests/deploy/schemas/vendor.py sm.yaml v1 \\
      tests/deploy/schemas/servicemonitor-monitoring.coreos.com-v1.json \\
      --source prometheus-operator/prometheus-operator@v0.93.0
  git show v0.93.0:example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml \\
      > monitoring.coreos.com_prometheusrules.yaml   # the same repository and tag
  python tests/deploy/schemas/vendor.py monitoring.coreos.com_prometheusrules.yaml v1 \\
      tests/deploy/schemas/prometheusrule-monitoring.coreos.com-v1.json \\
      --source prometheus-operator/prometheus-operator@v0.93.0
  git show v0.20.0:config/crd/full/serving.kserve.io_inferenceservices.yaml > isvc.yaml  # kserve
  python tests/deploy/schemas/vendor.py isvc.yaml v1beta1 \\
      tests/deploy/schemas/inferenceservice-serving.kserve.io-v1beta1.json \\
      --source kserve/kserve@v0.20.0 --keep spec.predictor --drop-predictor-frameworks
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

# Predictor fields of one model framework each (KServe's built-in runtimes), and the multi-node
# worker spec: each a full copy of a container's schema that a custom predictor does not use.
PREDICTOR_FRAMEWORKS = ("huggingface", "lightgbm", "model", "onnx", "paddle", "pmml", "pytorch",
                        "sklearn", "tensorflow", "triton", "xgboost", "workerSpec")


def strict(node: Any) -> Any:
    """The schema without descriptions, closed to unknown fields where Kubernetes closes it."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict(value) for key, value in node.items() if key != "description"}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def keep_only(schema: dict[str, Any], path: str) -> None:
    """Prune ``spec`` to the one subtree ``path`` names (e.g. spec.predictor); status goes too."""
    node = schema
    for name in path.split("."):
        properties = node["properties"]
        for other in [key for key in properties if key != name]:
            if node is not schema:
                del properties[other]
        node = properties[name]
    schema["properties"].pop("status", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crd", type=Path)
    parser.add_argument("version")
    parser.add_argument("out", type=Path)
    parser.add_argument("--source", required=True, help="repository@tag the CRD comes from")
    parser.add_argument("--keep", help="dotted path of the one subtree of spec to keep")
    parser.add_argument("--drop-predictor-frameworks", action="store_true")
    args = parser.parse_args()
    crd = yaml.safe_load(args.crd.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == args.version]
    schema = version["schema"]["openAPIV3Schema"]
    if args.keep:
        keep_only(schema, args.keep)
    if args.drop_predictor_frameworks:
        predictor = schema["properties"]["spec"]["properties"]["predictor"]["properties"]
        for name in PREDICTOR_FRAMEWORKS:
            predictor.pop(name, None)
    schema = strict(schema)
    group = crd["spec"]["group"]
    pruned = f", pruned to {args.keep}" if args.keep else ""
    schema["$comment"] = (f"{crd['spec']['names']['kind']} {group}/{args.version}: the "
                          f"openAPIV3Schema of {args.crd.name} from {args.source}, made strict by "
                          f"tests/deploy/schemas/vendor.py{pruned}")
    args.out.write_text(json.dumps(schema, indent=None, separators=(",", ":"), sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
