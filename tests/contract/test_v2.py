"""The V2 constants agree with the model contract and with the protocol's names."""

from __future__ import annotations

import numpy as np
import pytest

import contract
from contract import v2
from contract.errors import InvalidArgument
from contract.proto import digits_v2_pb2 as pb


def test_tensor_metadata_is_the_contract_with_minus_one_for_the_batch():
    assert [t.as_dict() for t in v2.INPUTS] == [
        {"name": contract.INPUT_NAME, "datatype": "FP32", "shape": [-1, 28, 28, 1]}
    ]
    assert [t.name for t in v2.OUTPUTS] == list(contract.OUTPUT_NAMES)
    assert v2.OUTPUTS_BY_NAME[contract.OUTPUT_PROBABILITIES].shape == (-1, contract.NUM_CLASSES)
    assert v2.OUTPUTS_BY_NAME[contract.OUTPUT_DIGIT].as_dict() == {
        "name": "digit", "datatype": "INT64", "shape": [-1]}


@pytest.mark.parametrize("name, dtype", [("BOOL", np.bool_), ("UINT8", np.uint8), ("INT32", np.int32),
                                         ("INT64", np.int64), ("FP16", np.float16),
                                         ("FP32", np.float32), ("FP64", np.float64)])
def test_datatype_table_round_trips(name, dtype):
    assert v2.numpy_dtype(name) == np.dtype(dtype)
    assert v2.datatype_of(dtype) == name
    assert v2.datatype_of(np.dtype(dtype).newbyteorder(">")) == name  # byte order is the codec's job


def test_bytes_and_unknown_datatypes():
    assert v2.datatype_of(np.bytes_) == v2.BYTES == v2.datatype_of(object)
    with pytest.raises(InvalidArgument, match="unknown datatype 'FLOAT32'.*FP32"):
        v2.numpy_dtype("FLOAT32")
    with pytest.raises(InvalidArgument, match="no V2 datatype"):
        v2.datatype_of(np.complex64)


def test_paths_and_server_metadata():
    assert v2.model_path("lenet5") == "/v2/models/lenet5"
    assert v2.infer_path("lenet5", 2) == "/v2/models/lenet5/versions/2/infer"
    assert v2.ready_path("lenet5", "") == "/v2/models/lenet5/ready"
    assert v2.MODEL_INFER_RPC == "/inference.GRPCInferenceService/ModelInfer"
    meta = v2.SERVER_METADATA.as_dict()
    assert meta["name"] == "digits"
    # Triton's names
    assert meta["extensions"] == ["binary_tensor_data", "model_configuration", "model_repository"]
    assert meta["version"] and meta["version"][0].isdigit()


def test_model_configuration_paths_and_tensors():
    assert v2.config_path("lenet5") == "/v2/models/lenet5/config"
    assert v2.config_path("lenet5", 3) == "/v2/models/lenet5/versions/3/config"
    assert v2.MODEL_CONFIG_RPC == "/inference.GRPCInferenceService/ModelConfig"
    # Triton's dims leave the batch dimension out; one value per image is dims [1], reshape [].
    assert v2.CONFIG_INPUTS == (v2.TensorConfig(contract.INPUT_NAME, "TYPE_FP32", (28, 28, 1)),)
    assert v2.CONFIG_OUTPUTS == (
        v2.TensorConfig(contract.OUTPUT_PROBABILITIES, "TYPE_FP32", (contract.NUM_CLASSES,)),
        v2.TensorConfig(contract.OUTPUT_DIGIT, "TYPE_INT64", (1,), reshape=()),
    )


@pytest.mark.parametrize(("datatype", "name"), [("FP32", "TYPE_FP32"), ("INT64", "TYPE_INT64"),
                                                ("BOOL", "TYPE_BOOL"), ("BYTES", "TYPE_STRING")])
def test_config_data_types_are_tritons_names(datatype, name):
    assert v2.config_data_type(datatype) == name
    pb.DataType.Value(name)  # a value of the configuration's DataType enum


def test_config_data_type_refuses_unknown_datatypes():
    with pytest.raises(InvalidArgument, match="unknown datatype"):
        v2.config_data_type("FLOAT")


def test_every_typed_contents_field_exists_and_fits_its_datatype():
    from contract.proto import digits_v2_pb2 as pb

    fields = {field.name: field for field in pb.InferTensorContents.DESCRIPTOR.fields}
    assert set(v2.CONTENTS_FIELD) == set(v2.DATATYPES) - {"FP16", "BYTES"}
    for datatype, name in v2.CONTENTS_FIELD.items():
        assert name in fields, name
        kind = v2.numpy_dtype(datatype).kind
        assert name.startswith({"b": "bool", "i": "int", "u": "uint", "f": "fp"}[kind]), (datatype, name)


def test_the_parameter_rules_both_codecs_share():
    for key in (*v2.SHARED_MEMORY_PARAMS, v2.PARAM_CLASSIFICATION):
        with pytest.raises(InvalidArgument) as refused:
            v2.refuse_unsupported("output 'digit'", {key: 0})
        assert refused.value.message in (
            "output 'digit': the shared-memory extension is not supported here",
            "output 'digit': the classification extension is not supported here",
        )
    v2.refuse_unsupported("request", {"priority": 1, v2.PARAM_BINARY_DATA_OUTPUT: True})
    assert v2.request_timeout({}) is None and v2.request_timeout({"timeout": 0}) is None
    assert v2.request_timeout({"timeout": 1_500_000}) == 1.5
    for bad in (-1, True, 1.5, "10", None):
        with pytest.raises(InvalidArgument, match="non-negative integer"):
            v2.request_timeout({"timeout": bad})


def test_input_dtype_is_the_models_datatype_and_never_bytes():
    assert v2.input_dtype(contract.INPUT_NAME, "FP32") == np.float32
    assert v2.input_dtype("other", "INT64") == np.int64  # not the model's: the data plane says
    with pytest.raises(InvalidArgument, match="has datatype INT64; this model takes FP32"):
        v2.input_dtype(contract.INPUT_NAME, "INT64")
    with pytest.raises(InvalidArgument, match="BYTES, which this server does not take: send FP32"):
        v2.input_dtype("other", "BYTES")
    with pytest.raises(InvalidArgument, match="unknown datatype"):
        v2.input_dtype("other", "FP99")


@pytest.mark.parametrize(("text", "value"), [("12", 12), (" 0 ", 0), ("+3", None), ("1_0", None),
                                             ("-1", None), ("", None), ("\u0661\u0662", None)])
def test_header_length_values_are_ascii_digits_only(text, value):
    assert v2.header_length_value(text) == value
