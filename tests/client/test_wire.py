"""The clients' encoding and decoding of TF Serving's REST JSON and gRPC messages (no server)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import contract
from client.base import ModelSpec, as_batch
from client.grpc_client import model_spec_proto, predict_request
from client.grpc_client import parse_metadata as parse_grpc_metadata
from client.grpc_client import parse_predict_response as parse_grpc_answer
from client.http_transport import normalise_base_url
from client.rest_client import (
    model_path,
    parse_metadata,
    parse_predict_response,
    parse_status,
    predict_body,
)
from contract.codecs import make_ndarray, make_tensor_proto
from contract.errors import (
    ProtocolError,
)
from contract.proto import digits_tfserving_pb2 as pb

RNG = np.random.default_rng(0)
ROOT = Path(__file__).resolve().parents[2]


def _images(n: int) -> np.ndarray:
    return RNG.random((n, *contract.INPUT_SHAPE), dtype=np.float32)


def _probabilities(n: int) -> np.ndarray:
    p = RNG.random((n, contract.NUM_CLASSES), dtype=np.float32)
    return p / p.sum(axis=1, keepdims=True)


def test_model_spec_and_paths() -> None:
    assert model_path(ModelSpec()) == f"{contract.REST_MODELS_PREFIX}/{contract.MODEL_NAME}"
    assert model_path(ModelSpec(version=3)).endswith(f"/{contract.MODEL_NAME}/versions/3")
    assert model_path(ModelSpec(label="stable")).endswith("/labels/stable")
    with pytest.raises(ValueError, match="not both"):
        ModelSpec(version=1, label="stable")
    with pytest.raises(ValueError, match=">= 0"):
        ModelSpec(version=-1)
    assert normalise_base_url("127.0.0.1:1234/") == "http://127.0.0.1:1234"
    proto = model_spec_proto(ModelSpec(version=2))
    assert proto.WhichOneof("version_choice") == "version" and proto.version.value == 2
    assert model_spec_proto(ModelSpec(label="canary")).version_label == "canary"
    assert model_spec_proto(ModelSpec()).WhichOneof("version_choice") is None


def test_batches_are_checked_before_sending() -> None:
    assert as_batch(np.zeros((contract.IMAGE_SIZE, contract.IMAGE_SIZE))).shape == (
        1,
        *contract.INPUT_SHAPE,
    )
    assert as_batch(np.zeros((3, contract.IMAGE_SIZE, contract.IMAGE_SIZE))).shape[0] == 3
    with pytest.raises(ValueError, match="must have shape"):
        as_batch(np.zeros((2, contract.PIXELS)))
    with pytest.raises(ValueError, match="no images"):
        as_batch(np.zeros((0, *contract.INPUT_SHAPE)))


@pytest.mark.parametrize("request_format", ["row", "columnar"])
def test_rest_body_carries_the_exact_float32_pixels(request_format: str) -> None:
    images = _images(2)
    body = json.loads(predict_body(images, ModelSpec(), request_format=request_format))
    assert body["signature_name"] == contract.SIGNATURE_NAME
    values = body["instances"] if request_format == "row" else body["inputs"][contract.INPUT_NAME]
    np.testing.assert_array_equal(np.asarray(values, dtype=np.float32), images)


def test_rest_answers_in_row_and_columnar_format() -> None:
    probabilities = _probabilities(3)
    digits = probabilities.argmax(axis=1)
    rows = {
        "predictions": [
            {contract.OUTPUT_PROBABILITIES: p.tolist(), contract.OUTPUT_DIGIT: int(d)}
            for p, d in zip(probabilities, digits, strict=True)
        ]
    }
    columns = {
        "outputs": {
            contract.OUTPUT_PROBABILITIES: probabilities.tolist(),
            contract.OUTPUT_DIGIT: digits.tolist(),
        }
    }
    for body in (rows, columns):
        answer = parse_predict_response(json.loads(json.dumps(body)), expected=3)
        np.testing.assert_array_equal(answer.probabilities, probabilities)
        np.testing.assert_array_equal(answer.digits, digits)
        np.testing.assert_array_equal(answer.confidence(), probabilities.max(axis=1))
    with pytest.raises(ProtocolError, match="expected"):
        parse_predict_response(rows, expected=4)
    for malformed in ({}, {"predictions": [{"probabilities": [0.5]}]}, {"outputs": {}}, [1, 2]):
        with pytest.raises(ProtocolError):
            parse_predict_response(malformed)


def test_rest_status_and_metadata_json() -> None:
    status = parse_status(
        {
            "model_version_status": [
                {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK"}},
                {
                    "version": "3",
                    "state": "END",
                    "status": {"error_code": "INVALID_ARGUMENT", "error_message": "bad onnx"},
                },
            ]
        }
    )
    assert [(s.version, s.available) for s in status] == [(2, True), (3, False)]
    assert status[1].error_message == "bad onnx"
    with pytest.raises(ProtocolError):
        parse_status({"versions": []})
    dims = [{"size": "-1"}] + [{"size": str(n)} for n in contract.INPUT_SHAPE]
    meta = parse_metadata(
        {
            "model_spec": {"name": contract.MODEL_NAME, "version": "2"},
            "metadata": {
                "signature_def": {
                    "signature_def": {
                        contract.SIGNATURE_NAME: {
                            "inputs": {
                                contract.INPUT_NAME: {
                                    "name": "x",
                                    "dtype": "DT_FLOAT",
                                    "tensor_shape": {"dim": dims},
                                }
                            },
                            "outputs": {},
                            "method_name": contract.PREDICT_METHOD_NAME,
                        }
                    }
                }
            },
        }
    )
    assert meta.version == 2
    spec = meta.signatures[contract.SIGNATURE_NAME].inputs[contract.INPUT_NAME]
    assert spec.shape == (None, *contract.INPUT_SHAPE) and spec.dtype == "DT_FLOAT"


def test_grpc_request_uses_tensor_content_and_decodes_back() -> None:
    images = _images(3)
    request = predict_request(images, ModelSpec(version=1), output_filter=["digit"])
    tensor = request.inputs[contract.INPUT_NAME]
    assert tensor.tensor_content and not tensor.float_val
    np.testing.assert_array_equal(make_ndarray(tensor), images)
    assert list(request.output_filter) == ["digit"]
    # a byte-identical parse by the official protos is checked in the integration tests
    again = pb.PredictRequest.FromString(request.SerializeToString())
    assert again.model_spec.version.value == 1


def test_grpc_answer_and_metadata_any() -> None:
    probabilities = _probabilities(2)
    response = pb.PredictResponse()
    response.outputs[contract.OUTPUT_PROBABILITIES].CopyFrom(make_tensor_proto(probabilities))
    response.outputs[contract.OUTPUT_DIGIT].CopyFrom(
        make_tensor_proto(probabilities.argmax(axis=1).astype(np.int64))
    )
    response.model_spec.version.value = 4
    answer = parse_grpc_answer(response, expected=2)
    assert answer.model_version == 4
    np.testing.assert_array_equal(answer.digits, probabilities.argmax(axis=1))
    del response.outputs[contract.OUTPUT_DIGIT]
    with pytest.raises(ProtocolError, match="outputs"):
        parse_grpc_answer(response)

    sig_map = pb.SignatureDefMap()
    sig = sig_map.signature_def[contract.SIGNATURE_NAME]
    sig.method_name = contract.PREDICT_METHOD_NAME
    sig.outputs[contract.OUTPUT_DIGIT].dtype = pb.DT_INT64
    sig.outputs[contract.OUTPUT_DIGIT].tensor_shape.dim.add(size=-1)
    meta = pb.GetModelMetadataResponse()
    meta.model_spec.name = contract.MODEL_NAME
    meta.metadata[contract.METADATA_FIELD_SIGNATURE_DEF].Pack(sig_map)
    # Pack writes our package's type URL; TF Serving (and our server) send upstream's name
    with pytest.raises(ProtocolError, match="expected"):
        parse_grpc_metadata(meta)
    meta.metadata[contract.METADATA_FIELD_SIGNATURE_DEF].type_url = contract.SIGNATURE_DEF_MAP_TYPE_URL
    parsed = parse_grpc_metadata(meta)
    output = parsed.signatures[contract.SIGNATURE_NAME].outputs[contract.OUTPUT_DIGIT]
    assert output.dtype == "DT_INT64" and output.shape == (None,)


def _imports_in_fresh_python(code: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_client_never_imports_tensorflow() -> None:
    """The client and its CLI stay light: no TensorFlow, no server or training code, no Locust."""
    _imports_in_fresh_python(
        "import sys\n"
        "import client, client.cli, client.api, client.rest_client, client.grpc_client, client.images\n"
        "import client.v2_rest_client, client.v2_grpc_client, client.http_transport, client.grpc_transport\n"
        "import contract.mnist\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'onnxruntime', "
        "'training', 'serving', 'loadtest', 'locust', 'gevent', 'matplotlib', 'tritonclient'})\n"
        "assert not bad, bad\n"
    )
