"""The V2 (Open Inference Protocol) clients' encoding and decoding, checked against tritonclient.

No server: our requests are read back with the official ``tritonclient`` (its HTTP body builder,
its gRPC ``inference`` messages) and answers shaped as Triton sends them are decoded by ours.
tritonclient is a test-only dependency; the client itself never imports it (test_wire.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2 as triton_pb

import contract
from client.api import ModelSpec, V2GrpcClient, V2RestClient, connect
from client.v2_grpc_client import infer_request as grpc_infer_request
from client.v2_grpc_client import parse_infer_response as parse_grpc_answer
from client.v2_grpc_client import parse_model_metadata as parse_grpc_metadata
from client.v2_rest_client import (
    BINARY,
    JSON,
    infer_request,
    parse_infer_response,
    parse_model_metadata,
    split_body,
)
from contract import v2
from contract.errors import ProtocolError
from contract.proto import digits_v2_pb2 as pb

RNG = np.random.default_rng(7)


def _images(n: int) -> np.ndarray:
    return RNG.random((n, *contract.INPUT_SHAPE), dtype=np.float32)


def _answer(n: int) -> tuple[np.ndarray, np.ndarray]:
    logits = RNG.random((n, contract.NUM_CLASSES), dtype=np.float32)
    probabilities = (logits / logits.sum(axis=1, keepdims=True)).astype(np.float32)
    return probabilities, probabilities.argmax(axis=1).astype(np.int64)


def _split(body: bytes, header_length: int) -> tuple[dict, bytes]:
    return json.loads(body[:header_length]), body[header_length:]


# --- REST --------------------------------------------------------------------------------------------
def test_binary_request_matches_what_tritonclient_sends() -> None:
    images = _images(3)
    path, body, headers = infer_request(images, ModelSpec(version=2))
    assert path == "/v2/models/lenet5/versions/2/infer"
    assert headers["Content-Type"] == "application/octet-stream"
    ours, tail = _split(body, int(headers[v2.HEADER_CONTENT_LENGTH]))

    image = triton_http.InferInput("image", [3, *contract.INPUT_SHAPE], "FP32")
    image.set_data_from_numpy(images, binary_data=True)
    outputs = [triton_http.InferRequestedOutput(name, binary_data=True) for name in contract.OUTPUT_NAMES]
    triton_body, json_size = triton_http.InferenceServerClient.generate_request_body([image], outputs)
    theirs, triton_tail = _split(triton_body, json_size)

    assert ours["inputs"] == theirs["inputs"]
    assert sorted(ours["outputs"], key=str) == sorted(theirs["outputs"], key=str)
    assert tail == triton_tail == images.astype("<f4").tobytes()  # the exact pixels, no decimal


def test_json_request_carries_the_exact_float32_pixels() -> None:
    images = _images(2)
    path, body, headers = infer_request(images, ModelSpec(), tensor_format=JSON)
    assert path == "/v2/models/lenet5/infer" and headers == {"Content-Type": "application/json"}
    document = json.loads(body)
    (tensor,) = document["inputs"]
    assert (tensor["name"], tensor["datatype"], tensor["shape"]) == ("image", "FP32", [2, 28, 28, 1])
    np.testing.assert_array_equal(np.asarray(tensor["data"], np.float32).reshape(images.shape), images)
    assert [o["parameters"]["binary_data"] for o in document["outputs"]] == [False, False]


def test_triton_shaped_answers_decode_binary_and_json() -> None:
    probabilities, digits = _answer(4)
    raw_p, raw_d = probabilities.astype("<f4").tobytes(), digits.astype("<i8").tobytes()
    header = json.dumps({
        "model_name": "lenet5", "model_version": "3", "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [4, 10],
             "parameters": {"binary_data_size": len(raw_p)}},
            {"name": "digit", "datatype": "INT64", "shape": [4],
             "parameters": {"binary_data_size": len(raw_d)}},
        ],
    }).encode()  # fmt: skip
    body = header + raw_p + raw_d
    # tritonclient reads this body as a valid V2 answer
    theirs = triton_http.InferenceServerClient.parse_response_body(body, header_length=len(header))
    np.testing.assert_array_equal(theirs.as_numpy("digit"), digits)

    answer = parse_infer_response(body, str(len(header)), expected=4)
    np.testing.assert_array_equal(answer.probabilities, probabilities)
    np.testing.assert_array_equal(answer.digits, digits)
    assert answer.model_version == 3

    as_json = json.dumps({
        "model_name": "lenet5", "model_version": "1", "outputs": [
            {"name": "digit", "datatype": "INT64", "shape": [4], "data": digits.tolist()},
            {"name": "probabilities", "datatype": "FP32", "shape": [4, 10], "data": probabilities.tolist()},
        ],
    }).encode()  # fmt: skip
    answer = parse_infer_response(as_json, None, expected=4)
    np.testing.assert_array_equal(answer.probabilities, probabilities)  # float32 -> JSON -> float32
    np.testing.assert_array_equal(answer.digits, digits)


@pytest.mark.parametrize(
    ("body", "header_length", "words"),
    [
        (b'{"outputs": []}', "99", "does not fit"),
        (b'{"outputs": []}', "+1_5", "does not fit"),  # int() would take it; the server would not
        (b'{"outputs": []}', None, "lacks output"),
        (b"not json", None, "not a V2 infer response"),
        (b'{"outputs": [{"name": "digit", "datatype": "FP99", "shape": [1], "data": [1]}]}', None, "FP99"),
        (
            b'{"outputs": [{"name": "digit", "datatype": "INT64", "shape": [1], '
            b'"parameters": {"binary_data_size": 8}}]}',
            None,
            "binary bytes",
        ),
        (b'{"outputs": [{"name": "digit", "datatype": "INT64", "shape": [2], "data": [1]}]}', None, "V2"),
    ],
)
def test_malformed_answers_are_protocol_errors(body: bytes, header_length: str | None, words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        parse_infer_response(body, header_length)


def test_answers_with_other_shapes_or_extra_bytes_are_refused() -> None:
    probabilities, digits = _answer(2)
    header = json.dumps({"outputs": [
        {"name": "probabilities", "datatype": "FP32", "shape": [2, 10],
         "data": probabilities.ravel().tolist()},
        {"name": "digit", "datatype": "INT64", "shape": [2], "data": digits.tolist()},
    ]}).encode()  # fmt: skip
    with pytest.raises(ProtocolError, match=r"expected \[3, 10\]"):
        parse_infer_response(header, None, expected=3)
    with pytest.raises(ProtocolError, match="after the last output"):
        parse_infer_response(header + b"\x00" * 4, str(len(header)), expected=2)


def test_the_binary_tail_is_a_view_of_the_answer() -> None:
    body = b'{"outputs": []}' + bytes(8)
    header, tail = split_body(body, "15")
    assert header == b'{"outputs": []}' and isinstance(tail, memoryview) and tail.obj is body


def test_model_metadata_becomes_one_signature() -> None:
    body = {
        "name": "lenet5",
        "versions": ["1", "4"],
        "platform": v2.PLATFORM,
        "inputs": [t.as_dict() for t in v2.INPUTS],
        "outputs": [t.as_dict() for t in v2.OUTPUTS],
    }
    meta = parse_model_metadata(body, ModelSpec())
    assert meta.version == 4  # the highest listed: the one served by default
    signature = meta.signatures[contract.SIGNATURE_NAME]
    assert signature.method_name == "onnxruntime_onnx"
    assert signature.inputs["image"].shape == (None, 28, 28, 1) and signature.inputs["image"].dtype == "FP32"
    assert signature.outputs["digit"].dtype == "INT64"
    assert parse_model_metadata(body, ModelSpec(version=1)).version == 1
    with pytest.raises(ProtocolError, match="V2's shape"):
        parse_model_metadata({"name": "lenet5"}, ModelSpec())


# --- gRPC --------------------------------------------------------------------------------------------
def test_grpc_request_is_read_by_tritonclients_messages() -> None:
    images = _images(2)
    ours = grpc_infer_request(images, ModelSpec(version=1), request_id="r-1")
    theirs = triton_pb.ModelInferRequest.FromString(ours.SerializeToString())
    assert (theirs.model_name, theirs.model_version, theirs.id) == ("lenet5", "1", "r-1")
    (tensor,) = theirs.inputs
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("image", "FP32", [2, 28, 28, 1])
    assert [o.name for o in theirs.outputs] == list(contract.OUTPUT_NAMES)
    raw = np.frombuffer(theirs.raw_input_contents[0], "<f4").reshape(images.shape)
    np.testing.assert_array_equal(raw, images)


def test_grpc_answers_decode_from_raw_and_typed_contents() -> None:
    probabilities, digits = _answer(3)
    raw = triton_pb.ModelInferResponse(model_name="lenet5", model_version="2")
    raw.outputs.add(name="probabilities", datatype="FP32", shape=[3, 10])
    raw.outputs.add(name="digit", datatype="INT64", shape=[3])
    raw.raw_output_contents.extend([probabilities.tobytes(), digits.tobytes()])
    answer = parse_grpc_answer(pb.ModelInferResponse.FromString(raw.SerializeToString()), expected=3)
    np.testing.assert_array_equal(answer.probabilities, probabilities)
    np.testing.assert_array_equal(answer.digits, digits)
    assert answer.model_version == 2

    typed = triton_pb.ModelInferResponse(model_name="lenet5", model_version="2")
    typed.outputs.add(name="digit", datatype="INT64", shape=[3]).contents.int64_contents.extend(
        digits.tolist()
    )
    p = typed.outputs.add(name="probabilities", datatype="FP32", shape=[3, 10])
    p.contents.fp32_contents.extend(probabilities.ravel().tolist())
    answer = parse_grpc_answer(pb.ModelInferResponse.FromString(typed.SerializeToString()), expected=3)
    np.testing.assert_array_equal(answer.probabilities, probabilities)
    np.testing.assert_array_equal(answer.digits, digits)

    short = pb.ModelInferResponse.FromString(raw.SerializeToString())
    short.raw_output_contents[1] = digits[:2].tobytes()
    with pytest.raises(ProtocolError, match="digit"):
        parse_grpc_answer(short, expected=3)
    del short.raw_output_contents[1]
    with pytest.raises(ProtocolError, match="1 raw_output_contents for 2 outputs"):
        parse_grpc_answer(short)


def test_grpc_metadata() -> None:
    answer = triton_pb.ModelMetadataResponse(name="lenet5", versions=["1"], platform=v2.PLATFORM)
    answer.inputs.add(name="image", datatype="FP32", shape=[-1, 28, 28, 1])
    answer.outputs.add(name="probabilities", datatype="FP32", shape=[-1, 10])
    meta = parse_grpc_metadata(pb.ModelMetadataResponse.FromString(answer.SerializeToString()), ModelSpec())
    assert meta.version == 1 and meta.signatures[contract.SIGNATURE_NAME].inputs["image"].shape[0] is None


# --- choosing a client ---------------------------------------------------------------------------------
def test_connect_picks_the_protocol_and_refuses_what_v2_cannot_say() -> None:
    with connect(rest="127.0.0.1:1", protocol="v2") as rest:
        assert isinstance(rest, V2RestClient) and rest.tensor_format == BINARY
        assert rest.base_url == "http://127.0.0.1:1"
    with connect(rest="http://h:1", protocol="v2", rest_format="json") as rest:
        assert rest.tensor_format == JSON
    with connect(grpc="grpc://127.0.0.1:1", protocol="v2") as grpc:
        assert isinstance(grpc, V2GrpcClient) and grpc.target == "127.0.0.1:1"
    for kwargs, words in [
        ({"rest": "h:1", "protocol": "v3"}, "protocol must be"),
        ({"rest": "h:1", "protocol": "v2", "rest_format": "row"}, "tensor format"),
        ({"grpc": "h:1", "protocol": "v2", "rest_format": "json"}, "for REST"),
        ({"rest": "h:1", "protocol": "v2", "spec": ModelSpec(label="stable")}, "no version labels"),
    ]:
        with pytest.raises(ValueError, match=words):
            connect(**kwargs)
