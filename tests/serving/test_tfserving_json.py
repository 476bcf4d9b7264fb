"""TF Serving's REST JSON: status and metadata exactly as before the data plane lost protobuf.

The literals below are what the server answered when the data plane still built the messages
itself (int64 as strings, enum names, empty fields present: proto3 JSON as TF Serving prints
it); predict bodies decode to the same arrays in every accepted layout.
"""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from contract import INPUT_NAME, INPUT_SHAPE, MODEL_NAME, OUTPUT_DIGIT, OUTPUT_PROBABILITIES
from contract.errors import InvalidArgument
from contract.types import AVAILABLE, END, VersionStatus, served_metadata
from serving.protocols.tfserving.rest_json import (
    decode_predict_body,
    encode_metadata,
    encode_predict,
    encode_status,
)

_DIM = '{{"size":"{}","name":""}}'
METADATA_V1 = (
    '{"model_spec":{"name":"lenet5","version":"1","signature_name":""},'
    '"metadata":{"signature_def":{"signature_def":{"serving_default":{'
    '"inputs":{"image":{"name":"image","dtype":"DT_FLOAT","tensor_shape":{"dim":['
    + ",".join(_DIM.format(s) for s in (-1, 28, 28, 1))
    + '],"unknown_rank":false}}},'
    '"outputs":{"digit":{"name":"digit","dtype":"DT_INT64","tensor_shape":{"dim":['
    + _DIM.format(-1)
    + '],"unknown_rank":false}},'
    '"probabilities":{"name":"probabilities","dtype":"DT_FLOAT","tensor_shape":{"dim":['
    + ",".join(_DIM.format(s) for s in (-1, 10))
    + '],"unknown_rank":false}}},'
    '"method_name":"tensorflow/serving/predict"}}}}}'
)
STATUS = (
    '{"model_version_status":['
    '{"version":"1","state":"AVAILABLE","status":{"error_code":"OK","error_message":""}},'
    '{"version":"2","state":"END","status":{"error_code":"INVALID_ARGUMENT","error_message":"bad file"}}]}'
)


def test_metadata_json_is_unchanged() -> None:
    assert encode_metadata(served_metadata(MODEL_NAME, 1)) == json.loads(METADATA_V1)


def test_status_json_is_unchanged() -> None:
    rows = [VersionStatus(1, AVAILABLE), VersionStatus(2, END, "INVALID_ARGUMENT", "bad file")]
    assert encode_status(rows) == json.loads(STATUS)
    # Key order within each row is protobuf's field order (maps aside): the bytes match too.
    assert orjson.dumps(encode_status(rows)) == STATUS.encode()


def test_encode_predict_row_and_columnar() -> None:
    outputs = {OUTPUT_PROBABILITIES: np.eye(2, 10, dtype=np.float32), OUTPUT_DIGIT: np.array([0, 1])}
    row = orjson.loads(orjson.dumps(encode_predict(True, outputs), option=orjson.OPT_SERIALIZE_NUMPY))
    assert row == {
        "predictions": [
            {OUTPUT_PROBABILITIES: [1.0] + [0.0] * 9, OUTPUT_DIGIT: 0},
            {OUTPUT_PROBABILITIES: [0.0, 1.0] + [0.0] * 8, OUTPUT_DIGIT: 1},
        ]
    }
    assert encode_predict(False, outputs) == {"outputs": outputs}


def test_every_body_layout_decodes_to_the_same_pixels() -> None:
    images = np.random.default_rng(0).random((2, *INPUT_SHAPE))
    bodies = [
        {"instances": images.tolist()},
        {"instances": [{INPUT_NAME: image.tolist()} for image in images], "signature_name": "s"},
        {"inputs": images.reshape(2, -1).tolist()},
        {"inputs": {INPUT_NAME: images.reshape(2, 28, 28).tolist()}},
    ]
    for body in bodies:
        signature_name, row, inputs = decode_predict_body(json.dumps(body, indent=1).encode())
        assert row == ("instances" in body)
        assert signature_name == body.get("signature_name", "")
        np.testing.assert_array_equal(inputs[INPUT_NAME].reshape(images.shape), images)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{", "not valid JSON"),
        (b"[1]", "JSON object"),
        (b'{"instances": [], "inputs": []}', "exactly one"),
        (b'{"instances": [[1]], "extra": 1}', "unknown key(s) ['extra']"),
        (b'{"instances": [[1]], "signature_name": 5}', "must be a string"),
        (b'{"instances": []}', "non-empty list"),
        (b'{"instances": [{"pixels": [1]}]}', 'exactly the key "image"'),
        (b'{"instances": [[0.1], [0.2, 0.3]]}', "rectangular"),
    ],
)
def test_malformed_bodies_say_what_is_wrong(body: bytes, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        decode_predict_body(body)
    assert fragment in info.value.message
