"""The V2 REST codec: JSON and binary tensors in, JSON and binary tensors out, clear refusals."""

from __future__ import annotations

import gzip
import json
import zlib

import numpy as np
import orjson
import pytest

from contract import INPUT_NAME, OUTPUT_DIGIT, OUTPUT_PROBABILITIES, v2
from contract.errors import InvalidArgument
from contract.proto import digits_v2_pb2 as pb
from serving.protocols.v2.grpc_proto import decode_infer_request as decode_grpc_request
from serving.protocols.v2.rest_json import (
    RequestedOutput,
    RestInferRequest,
    decode_infer_request,
    decompress,
    encode_infer_response,
    encode_model_metadata,
)

PIXELS = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)


def _tensor(data=None, **overrides) -> dict:
    tensor = {"name": INPUT_NAME, "shape": [2, 28, 28, 1], "datatype": "FP32"}
    if data is not None:
        tensor["data"] = data
    return {**tensor, **overrides}


def _body(*inputs: dict, **extra) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def _binary(header: dict, *chunks: bytes, length: int | None = None) -> tuple[bytes, str]:
    text = json.dumps(header).encode()
    return text + b"".join(chunks), str(len(text) if length is None else length)


def test_json_data_flat_or_nested_gives_the_same_float32_array() -> None:
    flat = decode_infer_request(_body(_tensor(PIXELS.ravel().tolist())))
    nested = decode_infer_request(_body(_tensor(PIXELS.tolist())))
    for request in (flat, nested):
        assert request.inputs[INPUT_NAME].dtype == np.float32
        assert request.inputs[INPUT_NAME].tobytes() == PIXELS.tobytes()
    assert (flat.outputs, flat.binary_output, flat.id) == ((), False, None)


def test_binary_inputs_after_the_json_header() -> None:
    header = {
        "id": "42",
        "inputs": [_tensor(parameters={"binary_data_size": PIXELS.nbytes})],
        "outputs": [{"name": OUTPUT_DIGIT, "parameters": {"binary_data": False}}],
        "parameters": {"binary_data_output": True},
    }
    body, length = _binary(header, PIXELS.tobytes())
    request = decode_infer_request(body, length)
    assert request.inputs[INPUT_NAME].tobytes() == PIXELS.tobytes()
    assert request.inputs[INPUT_NAME].shape == PIXELS.shape
    assert request.outputs == (RequestedOutput(OUTPUT_DIGIT, False),)
    assert (request.binary_output, request.id, request.output_names) == (True, "42", (OUTPUT_DIGIT,))


def test_binary_and_json_inputs_mix_in_input_order() -> None:
    second = np.arange(3, dtype=np.int64)
    header = {"inputs": [
        {"name": "a", "shape": [3], "datatype": "INT64", "parameters": {"binary_data_size": 24}},
        {"name": "b", "shape": [2], "datatype": "BOOL", "data": [True, False]},
        {"name": "c", "shape": [1, 2], "datatype": "FP16", "parameters": {"binary_data_size": 4}},
    ]}
    body, length = _binary(header, second.tobytes(), np.ones((1, 2), np.float16).tobytes())
    inputs = decode_infer_request(body, length).inputs
    assert inputs["a"].tolist() == [0, 1, 2] and inputs["b"].tolist() == [True, False]
    assert inputs["c"].dtype == np.float16 and inputs["c"].shape == (1, 2)


@pytest.mark.parametrize(
    ("length", "chunks", "fragment"),
    [
        (10_000, [PIXELS.tobytes()], "10000 is past the end of the"),
        ("12a", [PIXELS.tobytes()], "must be a non-negative integer"),
        ("\u00b9", [PIXELS.tobytes()], "must be a non-negative integer"),  # a digit, not ASCII
        (None, [PIXELS.tobytes()[:-1]], "runs past the end of the binary data (6271 bytes left"),
        (None, [PIXELS.tobytes(), b"\0"], "6273 bytes of binary data follow the JSON header but the inputs' "
                                          "binary_data_size add up to 6272"),
    ],
)
def test_binary_sizes_that_do_not_add_up(length, chunks, fragment) -> None:
    header = {"inputs": [_tensor(parameters={"binary_data_size": PIXELS.nbytes})]}
    body, header_length = _binary(header, *chunks)
    with pytest.raises(InvalidArgument) as caught:
        decode_infer_request(body, header_length if length is None else str(length))
    assert fragment in caught.value.message


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        (_tensor(parameters={"binary_data_size": 100}),
         "which is 6272 bytes, but its binary_data_size is 100"),
        (_tensor(parameters={"binary_data_size": -1}), "must be a non-negative integer"),
        (_tensor(parameters={"binary_data_size": True}), "must be a non-negative integer"),
        (_tensor([0.5], parameters={"binary_data_size": 6272}), 'both "data" and a binary_data_size'),
    ],
)
def test_binary_input_declarations_are_checked(tensor, fragment) -> None:
    body, length = _binary({"inputs": [tensor]}, PIXELS.tobytes())
    with pytest.raises(InvalidArgument) as caught:
        decode_infer_request(body, length)
    assert fragment in caught.value.message


def test_a_header_without_binary_data_is_plain_json() -> None:
    body = _body(_tensor(PIXELS.tolist()))
    assert decode_infer_request(body, str(len(body))).inputs[INPUT_NAME].shape == PIXELS.shape


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "request body is not valid JSON"),
        (b"[]", "must be a JSON object"),
        (_body(), '"inputs": a non-empty list'),
        (json.dumps({"inputs": {"image": []}}).encode(), '"inputs": a non-empty list'),
        (_body(_tensor(PIXELS.tolist()), instances=[]), "unknown key(s) ['instances']"),
        (_body(_tensor(PIXELS.tolist()), id=7), '"id" must be a string'),
        (_body({"shape": [1], "datatype": "FP32", "data": [0]}), 'needs a "name"'),
        (_body(_tensor(PIXELS.tolist(), datatype="FLOAT")), "unknown datatype 'FLOAT'; expected one of BOOL"),
        (_body(_tensor(PIXELS.tolist(), datatype="INT64")), "has datatype INT64; this model takes FP32"),
        (_body(_tensor(["a"], datatype="BYTES")),
         "datatype BYTES, which this server does not take: send FP32"),
        (_body(_tensor(PIXELS.ravel()[:700].tolist())),
         "shape [2, 28, 28, 1] (1568 values) but its data holds 700"),
        (_body(_tensor([[0.1, 0.2], [0.3]])), "rectangular array of FP32"),
        (_body(_tensor(["x"] * 1568)), "must be FP32 values, got str"),
        (_body(_tensor([True] * 1568)), "got bool values"),
        (_body(_tensor(0.5)), "must be a JSON array"),
        (_body(_tensor(PIXELS.tolist(), shape=[2, -28, 28, 1])), "non-negative integers"),
        (_body(_tensor(PIXELS.tolist(), shape="2x784")), "non-negative integers"),
        (_body(_tensor()), 'has neither "data" nor a binary_data_size'),
        (_body({"name": INPUT_NAME, "datatype": "FP32", "data": [0]}), 'has no "shape"'),
        (_body(_tensor(PIXELS.tolist()), _tensor(PIXELS.tolist())), "input 'image' appears twice"),
        (_body(_tensor(PIXELS.tolist()), outputs=[{"name": "logits"}]), "unknown output 'logits'"),
        (_body(_tensor(PIXELS.tolist()), outputs=[{"name": OUTPUT_DIGIT}] * 2), "asked for twice"),
        (_body(_tensor(PIXELS.tolist()), outputs=[{"name": OUTPUT_DIGIT, "parameters": {"binary_data": 1}}]),
         '"binary_data" in output \'digit\' must be true or false'),
        (_body(_tensor(PIXELS.tolist()), parameters={"binary_data_output": "yes"}), "must be true or false"),
    ],
)
def test_malformed_requests_say_what_is_wrong(body: bytes, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_infer_request(body)
    assert fragment in caught.value.message


def test_a_broken_json_header_names_the_header() -> None:
    body, length = _binary({"inputs": []}, PIXELS.tobytes(), length=5)
    with pytest.raises(InvalidArgument, match="the first 5 bytes, by Inference-Header-Content-Length"):
        decode_infer_request(body, length)


def test_unknown_request_parameters_are_ignored() -> None:
    body = _body(_tensor(PIXELS.tolist()), parameters={"timeout": 100, "priority": 1})
    assert decode_infer_request(body).inputs[INPUT_NAME].shape == PIXELS.shape


@pytest.mark.parametrize(("micros", "seconds"), [(None, None), (0, None), (250_000, 0.25)])
def test_the_timeout_parameter_is_microseconds_and_zero_is_none(micros, seconds) -> None:
    parameters = {} if micros is None else {"timeout": micros}
    assert decode_infer_request(_body(_tensor(PIXELS.tolist()), parameters=parameters)).timeout == seconds
    with pytest.raises(InvalidArgument, match="non-negative integer"):
        decode_infer_request(_body(_tensor(PIXELS.tolist()), parameters={"timeout": "soon"}))


@pytest.mark.parametrize("where", ["input", "output", "request"])
@pytest.mark.parametrize("key", [*v2.SHARED_MEMORY_PARAMS, v2.PARAM_CLASSIFICATION])
def test_unimplemented_extensions_are_refused_as_grpc_refuses_them(where: str, key: str) -> None:
    """Shared memory and classification: the same INVALID_ARGUMENT message from both codecs."""
    place = {"input": "inputs", "output": "outputs", "request": "request"}[where]
    inputs = [_tensor(PIXELS.tolist(), parameters={key: 1} if place == "inputs" else {})]
    outputs = [{"name": OUTPUT_DIGIT, "parameters": {key: 1} if place == "outputs" else {}}]
    body = _body(*inputs, outputs=outputs, parameters={key: 1} if place == "request" else {})
    request = pb.ModelInferRequest(model_name="m", raw_input_contents=[PIXELS.tobytes()])
    request.inputs.add(name=INPUT_NAME, datatype="FP32", shape=PIXELS.shape)
    request.outputs.add(name=OUTPUT_DIGIT)
    target = {"inputs": request.inputs[0], "outputs": request.outputs[0], "request": request}[place]
    target.parameters[key].int64_param = 1
    with pytest.raises(InvalidArgument) as rest:
        decode_infer_request(body)
    with pytest.raises(InvalidArgument) as grpc:
        decode_grpc_request(request)
    assert rest.value.message == grpc.value.message
    assert rest.value.message.endswith("extension is not supported here")


@pytest.mark.parametrize(
    ("datatype", "data"), [("INT64", [2**63]), ("UINT8", [-1]), ("INT8", [128]), ("UINT64", [-1])]
)
def test_json_integers_outside_the_datatype_are_refused_not_wrapped(datatype: str, data: list) -> None:
    tensor = {"name": "count", "shape": [1], "datatype": datatype, "data": data}
    with pytest.raises(InvalidArgument, match=f"outside {datatype}'s range"):
        decode_infer_request(_body(tensor))


def test_json_integers_at_the_datatype_limits_are_kept() -> None:
    tensor = {"name": "count", "shape": [2], "datatype": "INT8", "data": [-128, 127]}
    np.testing.assert_array_equal(decode_infer_request(_body(tensor)).inputs["count"], [-128, 127])
    tensor = {"name": "big", "shape": [1], "datatype": "UINT64", "data": [2**64 - 1]}
    assert decode_infer_request(_body(tensor)).inputs["big"][0] == 2**64 - 1


def test_binary_inputs_are_read_from_the_body_itself() -> None:
    """The tensors are a view of the request body: no copy of the binary tail."""
    header = {"inputs": [_tensor(parameters={"binary_data_size": PIXELS.nbytes})]}
    body, length = _binary(header, PIXELS.tobytes())
    owner = decode_infer_request(body, length).inputs[INPUT_NAME]
    while isinstance(owner, np.ndarray):
        owner = owner.base
    assert isinstance(owner, memoryview) and owner.obj is body


# --- encoding ----------------------------------------------------------------------------------
OUTPUTS = {
    OUTPUT_PROBABILITIES: np.array([[0.25, 0.75], [1 / 3, 2 / 3]], np.float32),
    OUTPUT_DIGIT: np.array([1, 1], np.int64),
}


def test_json_answer_in_model_order_with_the_id() -> None:
    body, length = encode_infer_response(RestInferRequest({}, id="7"), "lenet5", 3, OUTPUTS)
    assert length is None
    answer = orjson.loads(body)
    assert answer == {
        "model_name": "lenet5", "model_version": "3", "id": "7",
        "outputs": [
            {"name": OUTPUT_PROBABILITIES, "datatype": "FP32", "shape": [2, 2],
             "data": answer["outputs"][0]["data"]},
            {"name": OUTPUT_DIGIT, "datatype": "INT64", "shape": [2], "data": [1, 1]},
        ],
    }
    # float32 printed shortest: read back as float32, the same bits.
    probabilities = np.asarray(answer["outputs"][0]["data"], np.float32)
    assert probabilities.tobytes() == OUTPUTS[OUTPUT_PROBABILITIES].tobytes()


def test_binary_answer_per_output_and_by_default() -> None:
    named = (RequestedOutput(OUTPUT_DIGIT, True), RequestedOutput(OUTPUT_PROBABILITIES))
    request = RestInferRequest({}, outputs=named)
    body, length = encode_infer_response(request, "lenet5", 1, OUTPUTS)
    header = orjson.loads(body[:length])
    assert "id" not in header
    assert [o["name"] for o in header["outputs"]] == [OUTPUT_DIGIT, OUTPUT_PROBABILITIES]
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 16}
    assert "data" in header["outputs"][1] and "parameters" not in header["outputs"][1]
    assert body[length:] == OUTPUTS[OUTPUT_DIGIT].tobytes()

    every = RestInferRequest({}, binary_output=True, outputs=(RequestedOutput(OUTPUT_PROBABILITIES, False),
                                                          RequestedOutput(OUTPUT_DIGIT)))
    body, length = encode_infer_response(every, "lenet5", 1, OUTPUTS)
    header = orjson.loads(body[:length])
    assert "data" in header["outputs"][0] and header["outputs"][1]["parameters"]["binary_data_size"] == 16
    everything = RestInferRequest({}, binary_output=True)
    body, length = encode_infer_response(everything, "lenet5", 1, OUTPUTS)
    assert body[length:] == OUTPUTS[OUTPUT_PROBABILITIES].tobytes() + OUTPUTS[OUTPUT_DIGIT].tobytes()


def test_model_metadata() -> None:
    meta = encode_model_metadata("lenet5", [1, 2])
    assert meta["versions"] == ["1", "2"] and meta["platform"] == v2.PLATFORM
    assert meta["inputs"] == [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, 28, 28, 1]}]


# --- Content-Encoding --------------------------------------------------------------------------
def test_gzip_and_deflate_bodies_are_inflated_within_the_limit() -> None:
    body = _body(_tensor(PIXELS.tolist()))
    assert decompress(body, None, 10) == body
    assert decompress(gzip.compress(body), "gzip", len(body)) == body
    assert decompress(zlib.compress(body), "deflate", len(body)) == body
    with pytest.raises(InvalidArgument) as caught:
        decompress(gzip.compress(body), "gzip", len(body) - 1)
    assert caught.value.http_status == 413
    with pytest.raises(InvalidArgument, match="not valid gzip"):
        decompress(b"plain", "gzip", 100)
    with pytest.raises(InvalidArgument, match="one complete gzip stream"):
        decompress(gzip.compress(body)[:-8], "gzip", len(body))
    with pytest.raises(InvalidArgument, match="'br' is not supported"):
        decompress(body, "br", 100)
