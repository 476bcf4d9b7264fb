"""The generated protobuf code is what scripts/gen_protos.py produces from contract/proto/*.proto,
and our V2 messages are the Open Inference Protocol's on the wire (checked against tritonclient's).

protoc runs in a subprocess: grpc_tools' compiler in the test process (beside TensorFlow's and
our loaded protos) can crash the interpreter.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.unknown_fields import UnknownFieldSet

ROOT = Path(__file__).resolve().parents[2]


def _gen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "scripts/gen_protos.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_generated_code_is_up_to_date():
    proc = _gen("--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_fails_when_the_generated_code_differs(tmp_path):
    assert _gen("--out-dir", str(tmp_path)).returncode == 0
    assert _gen("--check", "--out-dir", str(tmp_path)).returncode == 0
    (tmp_path / "digits_tfserving_pb2.py").write_text("# edited by hand\n")
    proc = _gen("--check", "--out-dir", str(tmp_path))
    assert proc.returncode == 1 and "stale" in proc.stderr


# --- The V2 messages are Triton's on the wire (tritonclient's own classes, in this process) -------
# Ours live in `digits.v2`, tritonclient's in `inference`; both load side by side. For every message
# we define: the same fields (name, number, type, cardinality, packing, message type by short name)
# as tritonclient's, and a message with every field set survives theirs -> ours -> theirs unchanged,
# read by ours field by field (a field ours did not know would be lost from the dict comparison).
V2_MESSAGES = [
    "ServerLiveRequest", "ServerLiveResponse", "ServerReadyRequest", "ServerReadyResponse",
    "ModelReadyRequest", "ModelReadyResponse", "ServerMetadataRequest", "ServerMetadataResponse",
    "ModelMetadataRequest", "ModelMetadataResponse", "InferParameter", "InferTensorContents",
    "ModelInferRequest", "ModelInferResponse",
    "RepositoryIndexRequest", "RepositoryIndexResponse", "ModelRepositoryParameter",
    "RepositoryModelLoadRequest", "RepositoryModelLoadResponse",
    "RepositoryModelUnloadRequest", "RepositoryModelUnloadResponse",
]
_SAMPLES = {  # two values per scalar type, chosen to need every byte of their encoding
    FieldDescriptor.TYPE_BOOL: (True, False),
    FieldDescriptor.TYPE_INT32: (-7, 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**40), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (7, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (2**63 + 1, 1),
    FieldDescriptor.TYPE_FLOAT: (1.5, -0.25),
    FieldDescriptor.TYPE_DOUBLE: (-2.25, 1e300),
    FieldDescriptor.TYPE_STRING: ("digits", "ü"),
    FieldDescriptor.TYPE_BYTES: (b"\x00\xff", b"raw"),
}


def _signature(descriptor: Descriptor) -> dict:
    """A message's wire shape: every field's number, type and cardinality, nested types recursively."""
    fields = {}
    for f in descriptor.fields:
        nested = _signature(f.message_type) if f.message_type is not None else None
        fields[f.name] = (f.number, f.type, f.is_repeated, f.is_packed,
                          f.containing_oneof.name if f.containing_oneof else None, nested)
    return fields


def _fill(message, variant: int = 0) -> None:
    """Set every field of ``message`` (oneofs: the member ``variant`` picks), recursively."""
    for f in message.DESCRIPTOR.fields:
        if f.containing_oneof is not None and f.containing_oneof.fields[
            variant % len(f.containing_oneof.fields)
        ] is not f:
            continue
        value = getattr(message, f.name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            value_field = f.message_type.fields_by_name["value"]
            for k in range(5):  # five entries: each member of InferParameter's oneof once
                if value_field.message_type is not None:
                    _fill(value[f"key{k}"], k)
                else:
                    value[f"key{k}"] = _SAMPLES[value_field.type][k % 2]
        elif f.is_repeated and f.message_type is not None:
            for k in range(2):
                _fill(value.add(), k)
        elif f.is_repeated:
            value.extend(_SAMPLES[f.type])
        elif f.message_type is not None:
            _fill(value, variant)
        else:
            setattr(message, f.name, _SAMPLES[f.type][variant % 2])


@pytest.mark.parametrize("name", V2_MESSAGES)
def test_v2_messages_are_tritons_field_for_field(name):
    from tritonclient.grpc import service_pb2 as triton

    from contract.proto import digits_v2_pb2 as ours

    assert _signature(getattr(ours, name).DESCRIPTOR) == _signature(getattr(triton, name).DESCRIPTOR)


@pytest.mark.parametrize("name", V2_MESSAGES)
@pytest.mark.parametrize("variant", range(5))
def test_v2_messages_round_trip_through_tritons_classes(name, variant):
    from tritonclient.grpc import service_pb2 as triton

    from contract.proto import digits_v2_pb2 as ours

    theirs = getattr(triton, name)()
    _fill(theirs, variant)
    wire = theirs.SerializeToString(deterministic=True)
    parsed = getattr(ours, name).FromString(wire)
    assert json_format.MessageToDict(parsed) == json_format.MessageToDict(theirs)
    assert parsed.SerializeToString(deterministic=True) == wire
    assert getattr(triton, name).FromString(parsed.SerializeToString()) == theirs


def test_v2_protos_live_beside_tritons_in_one_process():
    from tritonclient.grpc import service_pb2 as triton

    from contract.proto import digits_v2_pb2 as ours

    assert ours.DESCRIPTOR.package == "digits.v2" and triton.DESCRIPTOR.package == "inference"
    assert not ours.DESCRIPTOR.services_by_name  # the method paths are bound in code (contract.v2)


# --- Triton's model configuration extension: a subset of model_config.proto, field for field ------
# Ours declare only some of Triton's fields (ModelConfig has some 25); each field we declare is
# Triton's field of that name (number, type, cardinality, packing, oneof, nested the same way), and
# the enums are Triton's, every value. A message with every field of ours set reads the same in
# Triton's classes, byte for byte.
CONFIG_MESSAGES = {
    "ModelConfigRequest": "service_pb2", "ModelConfigResponse": "service_pb2",
    "ModelConfig": "model_config_pb2", "ModelInput": "model_config_pb2",
    "ModelOutput": "model_config_pb2", "ModelTensorReshape": "model_config_pb2",
}


def _wire_shape(f: FieldDescriptor) -> tuple:
    return f.number, f.type, f.is_repeated, f.is_packed, f.containing_oneof and f.containing_oneof.name


def _subset_mismatches(ours: Descriptor, theirs: Descriptor, where: str) -> list[str]:
    """Where ``ours`` differs from Triton's message ``theirs`` (empty: a faithful subset)."""
    problems = []
    for f in ours.fields:
        t = theirs.fields_by_name.get(f.name)
        if t is None:
            problems.append(f"{where}.{f.name}: not in {theirs.full_name}")
            continue
        mine, upstream = _wire_shape(f), _wire_shape(t)
        if mine != upstream:
            problems.append(f"{where}.{f.name}: {mine} != {upstream}")
        if f.enum_type is not None and [(v.name, v.number) for v in f.enum_type.values] != [
            (v.name, v.number) for v in t.enum_type.values
        ]:
            problems.append(f"{where}.{f.name}: enum {f.enum_type.name} differs from Triton's")
        if f.message_type is not None:
            if f.message_type.name != t.message_type.name:
                problems.append(f"{where}.{f.name}: {f.message_type.name} != {t.message_type.name}")
            problems += _subset_mismatches(f.message_type, t.message_type, f"{where}.{f.name}")
    return problems


def _fill_with_enums(message, variant: int = 0) -> None:
    """``_fill`` for messages with enum fields: each enum set to its last or second-last value."""
    for f in message.DESCRIPTOR.fields:
        value = getattr(message, f.name)
        if f.enum_type is not None:
            enum_value = f.enum_type.values[-1 - variant % 2].number
            value.append(enum_value) if f.is_repeated else setattr(message, f.name, enum_value)
        elif f.is_repeated and f.message_type is not None:
            for k in range(2):
                _fill_with_enums(value.add(), k)
        elif f.is_repeated:
            value.extend(_SAMPLES[f.type])
        elif f.message_type is not None:
            _fill_with_enums(value, variant)
        else:
            setattr(message, f.name, _SAMPLES[f.type][variant % 2])


@pytest.mark.parametrize("name", list(CONFIG_MESSAGES))
def test_config_messages_are_a_faithful_subset_of_tritons(name):
    import importlib

    from contract.proto import digits_v2_pb2 as ours

    theirs = getattr(importlib.import_module(f"tritonclient.grpc.{CONFIG_MESSAGES[name]}"), name)
    assert _subset_mismatches(getattr(ours, name).DESCRIPTOR, theirs.DESCRIPTOR, name) == []


def test_the_config_enums_are_tritons_every_value():
    from tritonclient.grpc import model_config_pb2 as triton

    from contract.proto import digits_v2_pb2 as ours

    def values(enum):
        return [(v.name, v.number) for v in enum.values]

    assert values(ours.DataType.DESCRIPTOR) == values(triton.DataType.DESCRIPTOR)
    assert values(ours.ModelInput.Format.DESCRIPTOR) == values(triton.ModelInput.Format.DESCRIPTOR)


@pytest.mark.parametrize("name", list(CONFIG_MESSAGES))
@pytest.mark.parametrize("variant", range(2))
def test_config_messages_round_trip_through_tritons_classes(name, variant):
    import importlib

    from contract.proto import digits_v2_pb2 as ours

    theirs_type = getattr(importlib.import_module(f"tritonclient.grpc.{CONFIG_MESSAGES[name]}"), name)
    mine = getattr(ours, name)()
    _fill_with_enums(mine, variant)
    wire = mine.SerializeToString(deterministic=True)
    theirs = theirs_type.FromString(wire)
    assert len(UnknownFieldSet(theirs)) == 0  # every field of ours is one Triton knows
    assert json_format.MessageToDict(theirs) == json_format.MessageToDict(mine)
    assert theirs.SerializeToString(deterministic=True) == wire
    assert getattr(ours, name).FromString(theirs.SerializeToString()) == mine


# --- TF Serving's model server config and its reload: the official messages, field for field -----
# (tensorflow-serving-api's own classes; ours leave out ModelConfig.logging_config alone.)
TFS_CONFIG_MESSAGES = {
    "ModelServerConfig": "tensorflow_serving.config.model_server_config_pb2",
    "ModelConfigList": "tensorflow_serving.config.model_server_config_pb2",
    "ModelConfig": "tensorflow_serving.config.model_server_config_pb2",
    "ReloadConfigRequest": "tensorflow_serving.apis.model_management_pb2",
    "ReloadConfigResponse": "tensorflow_serving.apis.model_management_pb2",
    "Metric": "tensorflow_serving.apis.model_management_pb2",
}


@pytest.mark.parametrize("name", list(TFS_CONFIG_MESSAGES))
def test_model_server_config_messages_are_tf_servings(name):
    import importlib

    from contract.proto import digits_tfserving_pb2 as ours

    theirs = getattr(importlib.import_module(TFS_CONFIG_MESSAGES[name]), name).DESCRIPTOR
    mine = getattr(ours, name).DESCRIPTOR
    # StatusProto's error code: our Code enum lists the codes we send, each with TF's number.
    problems = [p for p in _subset_mismatches(mine, theirs, name) if "enum Code differs" not in p]
    assert problems == []
    codes = {(v.name, v.number) for v in ours.Code.DESCRIPTOR.values}
    from tensorflow_serving.apis import status_pb2
    official_codes = status_pb2.StatusProto.DESCRIPTOR.fields_by_name["error_code"].enum_type
    assert codes <= {(v.name, v.number) for v in official_codes.values}
    left_out = sorted(set(theirs.fields_by_name) - set(mine.fields_by_name))
    assert left_out == (["logging_config"] if name == "ModelConfig" else [])


def test_a_config_file_reads_the_same_in_tf_servings_classes():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2 as official

    from contract.proto import digits_tfserving_pb2 as ours

    text = (
        'model_config_list { config { name: "a" base_path: "a" model_platform: "tensorflow" } '
        'config { name: "b" base_path: "/m/b" model_version_policy { specific { versions: 1 '
        'versions: 3 } } version_labels { key: "stable" value: 1 } version_labels { key: "canary" '
        'value: 3 } } config { name: "c" base_path: "c" model_version_policy { latest { '
        "num_versions: 2 } } } config { name: \"d\" base_path: \"d\" model_version_policy { all {} } } }"
    )
    mine = text_format.Parse(text, ours.ModelServerConfig())
    theirs = text_format.Parse(text, official.ModelServerConfig())
    assert mine.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
