"""Protocol-neutral types: the served signature is the contract's."""

from __future__ import annotations

import contract
from contract.types import AVAILABLE, LOADING, ModelMetadata, VersionStatus, served_metadata


def test_served_metadata_describes_the_contract():
    meta = served_metadata(contract.MODEL_NAME, 3)
    assert (meta.name, meta.version) == ("lenet5", 3)
    signature = meta.signatures[contract.SIGNATURE_NAME]
    assert signature.method_name == contract.PREDICT_METHOD_NAME
    image = signature.inputs[contract.INPUT_NAME]
    assert (image.dtype, image.shape) == ("DT_FLOAT", (None, 28, 28, 1))
    assert signature.outputs[contract.OUTPUT_PROBABILITIES].shape == (None, 10)
    assert signature.outputs[contract.OUTPUT_DIGIT].dtype == "DT_INT64"
    assert meta.as_dict()["signatures"]["serving_default"]["inputs"]["image"]["shape"] == [None, 28, 28, 1]
    assert ModelMetadata("m", None).as_dict() == {"name": "m", "version": None, "signatures": {}}


def test_version_status():
    assert VersionStatus(2, AVAILABLE).available
    failed = VersionStatus(3, LOADING, "INVALID_ARGUMENT", "bad graph")
    assert not failed.available and failed.error_code == "INVALID_ARGUMENT"
