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
