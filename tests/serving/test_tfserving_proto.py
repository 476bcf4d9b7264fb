"""TF Serving's gRPC messages: the encoding of the data plane's results, field by field.

The expected messages are written out in protobuf text format, independently of the code under
test: these are the bytes official ``tensorflow-serving-api`` clients parse
(tests/integration/test_server_api.py checks that with TensorFlow's own stubs).
"""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from contract import (
    METADATA_FIELD_SIGNATURE_DEF,
    MODEL_NAME,
    OUTPUT_DIGIT,
    OUTPUT_PROBABILITIES,
    SIGNATURE_DEF_MAP_TYPE_URL,
)
from contract.codecs import make_ndarray, make_tensor_proto
from contract.errors import InvalidArgument
from contract.proto import digits_tfserving_pb2 as pb
from contract.types import (
    AVAILABLE,
    END,
    LOADING,
    ModelMetadata,
    Signature,
    TensorSpec,
    VersionStatus,
    served_metadata,
)
from serving.protocols.tfserving.grpc_proto import (
    check_metadata_fields,
    decode_inputs,
    decode_model_spec,
    metadata_response,
    predict_response,
    predict_response_bytes,
    signature_def_map,
    status_response,
)

SIGNATURE_DEF_MAP = """
signature_def {
  key: "serving_default"
  value {
    method_name: "tensorflow/serving/predict"
    inputs { key: "image" value { name: "image" dtype: DT_FLOAT tensor_shape {
      dim { size: -1 } dim { size: 28 } dim { size: 28 } dim { size: 1 } } } }
    outputs { key: "probabilities" value { name: "probabilities" dtype: DT_FLOAT tensor_shape {
      dim { size: -1 } dim { size: 10 } } } }
    outputs { key: "digit" value { name: "digit" dtype: DT_INT64 tensor_shape { dim { size: -1 } } } }
  }
}
"""


def _message(cls, text: str):
    return text_format.Parse(text, cls())


def test_metadata_is_the_signature_map_packed_under_tf_servings_type_url() -> None:
    response = metadata_response(served_metadata(MODEL_NAME, 3))
    assert response.model_spec == _message(pb.ModelSpec, 'name: "lenet5" version { value: 3 }')
    assert list(response.metadata) == [METADATA_FIELD_SIGNATURE_DEF]
    packed = response.metadata[METADATA_FIELD_SIGNATURE_DEF]
    assert packed.type_url == SIGNATURE_DEF_MAP_TYPE_URL
    assert pb.SignatureDefMap.FromString(packed.value) == _message(pb.SignatureDefMap, SIGNATURE_DEF_MAP)


def test_unknown_rank_and_a_metadata_without_version() -> None:
    spec = TensorSpec("x", "DT_STRING", None)
    metadata = ModelMetadata("m", None, {"s": Signature({"x": spec}, {}, "tensorflow/serving/classify")})
    response = metadata_response(metadata)
    assert not response.model_spec.HasField("version")
    assert signature_def_map(metadata.signatures) == _message(
        pb.SignatureDefMap,
        'signature_def { key: "s" value { method_name: "tensorflow/serving/classify" inputs { key: "x" '
        'value { name: "x" dtype: DT_STRING tensor_shape { unknown_rank: true } } } } }',
    )


def test_status_rows_become_model_version_status_with_error_codes_by_name() -> None:
    rows = [
        VersionStatus(1, AVAILABLE),
        VersionStatus(2, END, "INVALID_ARGUMENT", "cannot load model.onnx"),
        VersionStatus(3, LOADING),
    ]
    assert status_response(rows) == _message(
        pb.GetModelStatusResponse,
        """
        model_version_status { version: 1 state: AVAILABLE status { error_code: OK } }
        model_version_status {
          version: 2 state: END
          status { error_code: INVALID_ARGUMENT error_message: "cannot load model.onnx" }
        }
        model_version_status { version: 3 state: LOADING status { error_code: OK } }
        """,
    )
    assert status_response([]) == pb.GetModelStatusResponse()


def test_predict_response_names_the_version_that_answered_and_types_its_outputs() -> None:
    outputs = {
        OUTPUT_PROBABILITIES: np.full((2, 10), 0.1, np.float32),
        OUTPUT_DIGIT: np.array([3, 4], np.int64),
    }
    response = predict_response(MODEL_NAME, 7, outputs)
    assert response.model_spec == _message(
        pb.ModelSpec, 'name: "lenet5" version { value: 7 } signature_name: "serving_default"'
    )
    digit = response.outputs[OUTPUT_DIGIT]
    assert (digit.dtype, list(digit.int64_val), digit.tensor_content) == (pb.DT_INT64, [3, 4], b"")
    probabilities = make_ndarray(response.outputs[OUTPUT_PROBABILITIES])
    np.testing.assert_array_equal(probabilities, outputs[OUTPUT_PROBABILITIES])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('name: "lenet5"', ("lenet5", None, None)),
        ('name: "lenet5" version { value: 2 }', ("lenet5", 2, None)),
        ('name: "lenet5" version { value: 0 }', ("lenet5", 0, None)),
        ('name: "lenet5" version_label: "stable"', ("lenet5", None, "stable")),
    ],
)
def test_model_spec_decoding(text: str, expected: tuple) -> None:
    assert decode_model_spec(_message(pb.ModelSpec, text)) == expected


def test_model_spec_needs_a_name() -> None:
    with pytest.raises(InvalidArgument, match="model_spec.name is required"):
        decode_model_spec(pb.ModelSpec(version_label="stable"))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ([], "must name a metadata_field ('signature_def')"),
        (["signature_def", "x"], "metadata field(s) ['x'] not supported; only 'signature_def'"),
    ],
)
def test_metadata_fields_must_be_the_signature_map(fields: list[str], message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_metadata_fields(fields)
    assert message in info.value.message
    check_metadata_fields([METADATA_FIELD_SIGNATURE_DEF])


# --- the wire bytes written directly must be protobuf's, byte for byte ------------------------
# (its deterministic serialisation: map entries sorted by key; the default order is upb's hash
# table's, seeded per process)
def _outputs(batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    probabilities = rng.random((batch, 10), dtype=np.float32)
    return {OUTPUT_PROBABILITIES: probabilities, OUTPUT_DIGIT: probabilities.argmax(axis=1).astype(np.int64)}


@pytest.mark.parametrize("batch", [1, 2, 64, 1024])
@pytest.mark.parametrize("keys", [(OUTPUT_PROBABILITIES, OUTPUT_DIGIT), (OUTPUT_DIGIT, OUTPUT_PROBABILITIES),
                                  (OUTPUT_PROBABILITIES,), (OUTPUT_DIGIT,), ()])  # fmt: skip
def test_predict_response_bytes_are_protobufs(batch: int, keys: tuple[str, ...]) -> None:
    outputs = _outputs(batch, np.random.default_rng(batch))
    outputs = {key: outputs[key] for key in keys}  # output_filter, in any order
    for version in (0, 1, 7, 2**31, 2**62):
        wire = predict_response_bytes(MODEL_NAME, version, outputs)
        expected = predict_response(MODEL_NAME, version, outputs)
        assert wire == expected.SerializeToString(deterministic=True)
    parsed = pb.PredictResponse.FromString(wire)
    assert set(parsed.outputs) == set(keys)
    for key in keys:  # typed fields, as TF Serving answers
        assert parsed.outputs[key].tensor_content == b""
        np.testing.assert_array_equal(make_ndarray(parsed.outputs[key]), outputs[key])


_ARRAYS = st.one_of(
    hnp.arrays(np.float32, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
               elements=st.floats(width=32, allow_nan=False)),
    hnp.arrays(np.int64, hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=5)),
    hnp.arrays(np.int64, hnp.array_shapes(max_dims=1, max_side=5), elements=st.integers(0, 127)),
    hnp.arrays(st.sampled_from([np.float64, np.int32, np.uint8, np.float16]), hnp.array_shapes(max_dims=2)),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    name=st.text(min_size=0, max_size=20),
    version=st.integers(-(2**63), 2**63 - 1),
    probabilities=st.none() | _ARRAYS,
    digit=st.none() | _ARRAYS,
)
def test_predict_response_bytes_match_protobuf_for_any_tensor(name, version, probabilities, digit) -> None:
    """Odd names, versions, shapes (empty, 0-d), dtypes and values: protobuf's bytes, or its encoding."""
    pairs = ((OUTPUT_PROBABILITIES, probabilities), (OUTPUT_DIGIT, digit))
    outputs = {key: value for key, value in pairs if value is not None}
    expected = predict_response(name, version, outputs).SerializeToString(deterministic=True)
    assert predict_response_bytes(name, version, outputs) == expected


def test_inputs_from_tensor_content_are_read_only_views_with_the_same_values() -> None:
    """No copy of a request's pixels (a 64-image copy cost more than the rest of the decoding)."""
    images = np.random.default_rng(5).random((64, 28, 28, 1), dtype=np.float32)
    request = pb.PredictRequest()
    request.inputs["image"].CopyFrom(make_tensor_proto(images, use_tensor_content=True))
    (decoded,) = decode_inputs(request).values()
    np.testing.assert_array_equal(decoded, images)
    assert decoded.dtype == np.float32 and not decoded.flags.writeable
    typed = pb.PredictRequest()
    typed.inputs["image"].CopyFrom(make_tensor_proto(images[:2]))
    np.testing.assert_array_equal(decode_inputs(typed)["image"], images[:2])
    # The codec's default stays a writable copy (the clients' answers).
    assert make_ndarray(request.inputs["image"]).flags.writeable
