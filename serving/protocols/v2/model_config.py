"""Triton's model configuration extension: the model's ``ModelConfig``, as a message and as JSON.

``perf_analyzer`` (and ``tritonclient``'s ``get_model_config``) read a model's Triton
configuration before anything else: gRPC ``ModelConfig`` answers the ``ModelConfig`` message
(our ``digits.v2`` copy of a subset of Triton's ``model_config.proto``, field numbers identical),
``GET /v2/models/{name}[/versions/{v}]/config`` the same message as Triton's server writes it in
JSON. What it says comes from :mod:`contract.v2` (platform, backend, the tensors with their
batch dimension left out); the largest batch is the data plane's limit, passed in.

Triton prints the JSON with protobuf's printer (proto field names, fields at their default values
included, fields in the .proto's order), then turns the int64 arrays, which protobuf's JSON writes
as strings, back into numbers (core's ``ModelConfigToJson``); so do we.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor

from contract import v2
from contract.proto import digits_v2_pb2 as pb


def _tensor(message: pb.ModelInput | pb.ModelOutput, tensor: v2.TensorConfig) -> None:
    message.name = tensor.name
    message.data_type = pb.DataType.Value(tensor.data_type)
    message.dims.extend(tensor.dims)
    if tensor.reshape is not None:
        message.reshape.SetInParent()  # present even when empty: one value per batch item
        message.reshape.shape.extend(tensor.reshape)


def model_config(name: str, max_batch_size: int) -> pb.ModelConfig:
    """The model's configuration: platform, backend, the most images a request may carry, and
    the tensors without their batch dimension (every version has the same)."""
    config = pb.ModelConfig(
        name=name, platform=v2.PLATFORM, backend=v2.BACKEND, max_batch_size=max_batch_size
    )
    for tensor in v2.CONFIG_INPUTS:
        _tensor(config.input.add(format=pb.ModelInput.Format.Value(v2.INPUT_FORMAT)), tensor)
    for tensor in v2.CONFIG_OUTPUTS:
        _tensor(config.output.add(), tensor)
    return config


def model_config_response(name: str, max_batch_size: int) -> pb.ModelConfigResponse:
    """gRPC ``ModelConfig``'s answer."""
    return pb.ModelConfigResponse(config=model_config(name, max_batch_size))


def _declared_order(value: dict[str, Any], descriptor: Descriptor) -> dict[str, Any]:
    """``value``'s keys in the .proto's field order, as Triton's (C++) JSON printer writes them."""
    return {field.name: value[field.name] for field in descriptor.fields if field.name in value}


def _numbers(values: list[str]) -> list[int]:
    return [int(value) for value in values]


def model_config_json(name: str, max_batch_size: int) -> dict[str, Any]:
    """``{"name", "platform", "backend", "max_batch_size", "input": [...], "output": [...]}``:
    the REST route's answer, the same configuration as :func:`model_config`'s."""
    message = model_config(name, max_batch_size)
    config = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    for kind in ("input", "output"):
        descriptor = message.DESCRIPTOR.fields_by_name[kind].message_type
        for tensor in config[kind]:
            tensor["dims"] = _numbers(tensor["dims"])
            if "reshape" in tensor:
                tensor["reshape"]["shape"] = _numbers(tensor["reshape"]["shape"])
        config[kind] = [_declared_order(tensor, descriptor) for tensor in config[kind]]
    return _declared_order(config, message.DESCRIPTOR)
