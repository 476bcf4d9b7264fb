"""Triton's model configuration extension: the ``ModelConfig`` message and its JSON, read back by
tritonclient's own classes (its message, its JSON reader) as the same configuration."""

from __future__ import annotations

import orjson
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc

from contract import INPUT_NAME, MODEL_NAME, OUTPUT_DIGIT, OUTPUT_PROBABILITIES
from contract.proto import digits_v2_pb2 as pb
from serving.protocols.v2.model_config import model_config, model_config_json, model_config_response


def test_model_config_message() -> None:
    config = model_config_response(MODEL_NAME, 32).config
    assert config == model_config(MODEL_NAME, 32)
    assert (config.name, config.platform, config.backend, config.max_batch_size) == (
        MODEL_NAME, "onnxruntime_onnx", "onnxruntime", 32)
    (image,) = config.input
    assert (image.name, image.data_type, image.format, list(image.dims), image.HasField("reshape")) == (
        INPUT_NAME, pb.TYPE_FP32, pb.ModelInput.FORMAT_NHWC, [28, 28, 1], False)
    assert [(t.name, pb.DataType.Name(t.data_type), list(t.dims)) for t in config.output] == [
        (OUTPUT_PROBABILITIES, "TYPE_FP32", [10]), (OUTPUT_DIGIT, "TYPE_INT64", [1])]
    probabilities, digit = config.output
    assert not probabilities.HasField("reshape")
    assert digit.HasField("reshape") and list(digit.reshape.shape) == []


def _tritons_json(config: mc.ModelConfig) -> dict:
    """What Triton's server prints for ``config``: protobuf JSON (proto names, defaults printed),
    then its int64 arrays as numbers (core/src/model_config_utils.cc, ModelConfigToJson)."""
    printed = json_format.MessageToDict(
        config, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    for tensor in (*printed["input"], *printed["output"]):
        tensor["dims"] = [int(d) for d in tensor["dims"]]
        if "reshape" in tensor:
            tensor["reshape"]["shape"] = [int(d) for d in tensor["reshape"]["shape"]]
    return printed


def test_model_config_is_tritons_json_of_the_same_message() -> None:
    ours = model_config_json("lenet5", 64)
    theirs = mc.ModelConfig.FromString(model_config("lenet5", 64).SerializeToString())
    # A Triton JSON reader (tritonclient's message, unknown fields refused) reads the same config.
    assert json_format.ParseDict(ours, mc.ModelConfig()) == theirs
    # Triton prints every field of its larger message; ours are exactly those of ours, same values.
    printed = _tritons_json(theirs)
    assert {key: printed[key] for key in ours if key not in ("input", "output")} == {
        key: value for key, value in ours.items() if key not in ("input", "output")
    }
    for kind in ("input", "output"):
        assert [{k: t[k] for k in o} for t, o in zip(printed[kind], ours[kind], strict=True)] == ours[kind]
    assert ours["input"][0]["dims"] == [28, 28, 1]  # numbers, not protobuf's int64 strings
    assert ours["output"][1] == {"name": OUTPUT_DIGIT, "data_type": "TYPE_INT64", "dims": [1],
                                 "reshape": {"shape": []}, "label_filename": "", "is_shape_tensor": False}
    assert orjson.loads(orjson.dumps(ours)) == ours  # plain JSON values only
    assert list(ours) == ["name", "platform", "backend", "max_batch_size", "input", "output"]  # .proto order
