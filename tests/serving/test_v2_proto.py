"""The V2 gRPC codec: ModelInferRequest -> plain values, results -> V2 messages (no server)."""

from __future__ import annotations

import numpy as np
import pytest

from contract import INPUT_NAME, INPUT_SHAPE, MODEL_NAME, OUTPUT_DIGIT, OUTPUT_PROBABILITIES, v2
from contract.errors import InvalidArgument, NotFound
from contract.proto import digits_v2_pb2 as pb
from serving.protocols.v2.grpc_proto import (
    decode_infer_request,
    infer_response,
    model_metadata_response,
    server_metadata_response,
)

IMAGES = np.random.default_rng(3).random((2, *INPUT_SHAPE), dtype=np.float32)


def _request(
    images: np.ndarray = IMAGES,
    *,
    raw: bool = True,
    datatype: str = "FP32",
    model_name: str = MODEL_NAME,
    **fields,
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model_name, **fields)
    tensor = request.inputs.add(name=INPUT_NAME, datatype=datatype, shape=images.shape)
    if raw:
        request.raw_input_contents.append(images.astype("<f4").tobytes())
    else:
        tensor.contents.fp32_contents.extend(images.ravel().tolist())
    return request


# --- inputs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", [True, False], ids=["raw_input_contents", "fp32_contents"])
def test_raw_and_typed_contents_decode_to_the_same_array(raw: bool) -> None:
    decoded = decode_infer_request(_request(raw=raw, id="req-1", model_version="2"))
    assert (decoded.model_name, decoded.version, decoded.id) == (MODEL_NAME, 2, "req-1")
    image = decoded.inputs[INPUT_NAME]
    assert image.dtype == np.float32 and image.shape == IMAGES.shape
    np.testing.assert_array_equal(image, IMAGES)
    assert decoded.outputs == () and decoded.timeout is None


def test_raw_contents_are_read_little_endian_from_the_bytes_upb_hands_out() -> None:
    """upb copies ``raw_input_contents`` out on each access; numpy then wraps that copy as is."""
    request = _request()
    assert request.raw_input_contents[0] is not request.raw_input_contents[0]
    image = decode_infer_request(request).inputs[INPUT_NAME]
    owner = image
    while isinstance(owner, np.ndarray):
        owner = owner.base
    assert isinstance(owner, bytes) and owner == request.raw_input_contents[0]  # no second copy
    assert not image.flags.writeable
    assert image.tobytes() == IMAGES.astype("<f4").tobytes()


def test_other_datatypes_decode_from_their_own_fields() -> None:
    request = pb.ModelInferRequest(model_name=MODEL_NAME)
    request.inputs.add(name="a", datatype="INT64", shape=[3]).contents.int64_contents.extend([1, -2, 3])
    request.inputs.add(name="b", datatype="UINT8", shape=[2]).contents.uint_contents.extend([0, 255])
    request.inputs.add(name="c", datatype="BOOL", shape=[1]).contents.bool_contents.append(True)
    inputs = decode_infer_request(request).inputs
    assert inputs["a"].tolist() == [1, -2, 3] and inputs["a"].dtype == np.int64
    assert inputs["b"].tolist() == [0, 255] and inputs["b"].dtype == np.uint8
    assert inputs["c"].tolist() == [True]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.raw_input_contents.__setitem__(0, b"\x00" * 100),
         r"raw_input_contents holds 100 bytes, but shape \[2, 28, 28, 1\] of FP32 needs 6272"),
        (lambda r: r.raw_input_contents.append(b""), "2 entries for 1 inputs"),
        (lambda r: r.inputs[0].shape.__setitem__(0, 3),
         r"holds 6272 bytes, but shape \[3, 28, 28, 1\] of FP32 needs 9408"),
        (lambda r: r.inputs[0].shape.__setitem__(0, -1), "every dimension must be 0 or more"),
        (lambda r: r.inputs[0].contents.fp32_contents.append(1.0),
         "has contents although the request uses raw_input_contents"),
        (lambda r: r.inputs.add(name="mask", datatype="FP32", shape=[1]), "1 entries for 2 inputs"),
    ],
    ids=["raw_size", "raw_count", "shape_vs_raw", "negative_dim", "raw_and_typed", "input_count"],
)
def test_sizes_that_do_not_add_up_are_refused(mutate, message: str) -> None:
    request = _request()
    mutate(request)
    with pytest.raises(InvalidArgument, match=message):
        decode_infer_request(request)


def test_typed_contents_must_match_the_shape() -> None:
    request = _request(raw=False)
    request.inputs[0].shape[:] = [1, *INPUT_SHAPE]
    expected = r"fp32_contents holds 1568 values, but shape \[1, 28, 28, 1\] needs 784"
    with pytest.raises(InvalidArgument, match=expected):
        decode_infer_request(request)


def test_a_duplicate_input_is_refused() -> None:
    request = _request(raw=False)
    request.inputs.add().CopyFrom(request.inputs[0])
    with pytest.raises(InvalidArgument, match="given more than once"):
        decode_infer_request(request)


@pytest.mark.parametrize(
    ("datatype", "message"),
    [
        ("FP64", "input 'image' has datatype FP64; this model takes FP32"),
        ("BYTES", "input 'image' has datatype BYTES, which this server does not take: send FP32"),
        ("", "unknown datatype ''"),
    ],
)
def test_the_models_input_must_have_its_datatype(datatype: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        decode_infer_request(_request(datatype=datatype))


def test_unknown_and_unsupported_datatypes_are_refused() -> None:
    request = pb.ModelInferRequest(model_name=MODEL_NAME)
    request.inputs.add(name="x", datatype="FLOAT32", shape=[1])
    with pytest.raises(InvalidArgument, match="unknown datatype 'FLOAT32'"):
        decode_infer_request(request)
    request.inputs[0].datatype = "FP16"
    with pytest.raises(InvalidArgument, match="FP16 has no typed contents field"):
        decode_infer_request(request)


def test_values_in_the_wrong_typed_field_are_refused() -> None:
    request = pb.ModelInferRequest(model_name=MODEL_NAME)
    request.inputs.add(name=INPUT_NAME, datatype="FP32", shape=[1]).contents.fp64_contents.append(0.5)
    expected = "belong in contents.fp32_contents, not in contents.fp64_contents"
    with pytest.raises(InvalidArgument, match=expected):
        decode_infer_request(request)


# --- outputs, versions, parameters -------------------------------------------------------------
def test_requested_outputs_keep_their_order() -> None:
    request = _request()
    request.outputs.add(name=OUTPUT_DIGIT)
    request.outputs.add(name=OUTPUT_PROBABILITIES)
    assert decode_infer_request(request).outputs == (OUTPUT_DIGIT, OUTPUT_PROBABILITIES)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["logits"], r"unknown output 'logits' requested; the model outputs \['probabilities', 'digit'\]"),
        ([OUTPUT_DIGIT, OUTPUT_DIGIT], "requested more than once"),
    ],
)
def test_unknown_or_repeated_outputs_are_refused(names: list[str], message: str) -> None:
    request = _request()
    for name in names:
        request.outputs.add(name=name)
    with pytest.raises(InvalidArgument, match=message):
        decode_infer_request(request)


def test_versions_are_integers_and_anything_else_is_not_found() -> None:
    assert v2.parse_version(MODEL_NAME, "") is None
    assert v2.parse_version(MODEL_NAME, "12") == 12
    for text in ("stable", "-1", "٣", "1.0"):  # "٣" is a digit, but not an ASCII one
        expected = f"model 'lenet5' has no version '{text}' \\(versions are integers\\)"
        with pytest.raises(NotFound, match=expected):
            v2.parse_version(MODEL_NAME, text)
    with pytest.raises(NotFound):
        decode_infer_request(_request(model_version="canary"))


def test_a_model_name_is_required() -> None:
    with pytest.raises(InvalidArgument, match="model name is required"):
        decode_infer_request(_request(model_name=""))


def test_the_timeout_parameter_is_microseconds() -> None:
    request = _request()
    request.parameters["timeout"].int64_param = 250_000
    request.parameters["custom"].string_param = "ignored"
    assert decode_infer_request(request).timeout == 0.25
    request.parameters["timeout"].string_param = "soon"
    with pytest.raises(InvalidArgument, match="must be a non-negative integer"):
        decode_infer_request(request)
    request.parameters["timeout"].int64_param = -1
    with pytest.raises(InvalidArgument, match="must be a non-negative integer"):
        decode_infer_request(request)
    request.parameters["timeout"].uint64_param = 0  # no timeout, as Triton reads it
    assert decode_infer_request(request).timeout is None


@pytest.mark.parametrize(
    ("where", "key", "message"),
    [
        ("input", "shared_memory_region", "input 'image': the shared-memory extension"),
        ("output", "classification", "output 'digit': the classification extension"),
        ("request", "shared_memory_region", "request: the shared-memory extension"),
    ],
)
def test_unimplemented_extensions_are_refused(where: str, key: str, message: str) -> None:
    request = _request()
    parameters = {
        "input": request.inputs[0].parameters,
        "output": request.outputs.add(name=OUTPUT_DIGIT).parameters,
        "request": request.parameters,
    }[where]
    parameters[key].int64_param = 1
    with pytest.raises(InvalidArgument, match=message):
        decode_infer_request(request)


# --- results -----------------------------------------------------------------------------------
def test_infer_response_is_raw_little_endian_in_the_requested_order() -> None:
    probabilities = np.full((2, 10), 0.1, np.float32)
    digits = np.array([3, 7], np.int64)
    outputs = {OUTPUT_PROBABILITIES: probabilities, OUTPUT_DIGIT: digits}
    response = infer_response(MODEL_NAME, 4, "abc", outputs, (OUTPUT_DIGIT, OUTPUT_PROBABILITIES))
    assert (response.model_name, response.model_version, response.id) == (MODEL_NAME, "4", "abc")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        (OUTPUT_DIGIT, "INT64", [2]),
        (OUTPUT_PROBABILITIES, "FP32", [2, 10]),
    ]
    assert list(response.raw_output_contents) == [digits.astype("<i8").tobytes(), probabilities.tobytes()]
    assert not response.outputs[0].HasField("contents")
    default = infer_response(MODEL_NAME, 4, "", {OUTPUT_DIGIT: digits, OUTPUT_PROBABILITIES: probabilities})
    assert [o.name for o in default.outputs] == list(v2.OUTPUTS_BY_NAME)  # the model's order


def test_big_endian_values_are_written_little_endian() -> None:
    digits = np.array([1, 2], dtype=">i8")
    response = infer_response(MODEL_NAME, 1, "", {OUTPUT_DIGIT: digits})
    assert response.raw_output_contents[0] == np.array([1, 2], "<i8").tobytes()
    assert response.outputs[0].datatype == "INT64"


def test_metadata_responses() -> None:
    meta = model_metadata_response(MODEL_NAME, [1, 3])
    assert (meta.name, list(meta.versions), meta.platform) == (MODEL_NAME, ["1", "3"], "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        (INPUT_NAME, "FP32", [-1, 28, 28, 1])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        (OUTPUT_PROBABILITIES, "FP32", [-1, 10]),
        (OUTPUT_DIGIT, "INT64", [-1]),
    ]
    server = server_metadata_response()
    assert (server.name, server.version, list(server.extensions)) == (
        v2.SERVER_NAME, v2.SERVER_VERSION, list(v2.EXTENSIONS))
