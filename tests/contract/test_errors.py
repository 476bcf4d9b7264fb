"""The one error family: gRPC codes, TF Serving's HTTP table, the classes both sides raise."""

from __future__ import annotations

import grpc
import pytest

from contract.errors import (
    HTTP_STATUS,
    Code,
    DeadlineExceeded,
    DigitsError,
    InputError,
    Internal,
    InvalidArgument,
    NotFound,
    ProtocolError,
    ResourceExhausted,
    ServingError,
    Unavailable,
    code_for_http,
    error_for,
    http_status_for,
)


def test_codes_are_grpcs_names():
    assert {c.name for c in Code} == {c.name for c in grpc.StatusCode}
    assert all(c.value == c.name for c in Code)  # a Code is its name: metrics labels, messages


@pytest.mark.parametrize("code, status", [
    ("INVALID_ARGUMENT", 400), ("FAILED_PRECONDITION", 400), ("OUT_OF_RANGE", 400),
    ("NOT_FOUND", 404), ("RESOURCE_EXHAUSTED", 429), ("UNAVAILABLE", 503),
    ("DEADLINE_EXCEEDED", 504), ("UNIMPLEMENTED", 501), ("INTERNAL", 500), ("UNKNOWN", 500),
    ("DATA_LOSS", 500), ("no such code", 500),
])
def test_http_status_follows_tf_servings_table(code, status):
    assert http_status_for(code) == status


def test_http_status_read_backwards():
    assert code_for_http(400) == Code.INVALID_ARGUMENT  # the usual one of three
    assert code_for_http(404) == Code.NOT_FOUND
    assert code_for_http(429) == Code.RESOURCE_EXHAUSTED
    assert code_for_http(503) == Code.UNAVAILABLE
    assert code_for_http(413) == Code.INVALID_ARGUMENT  # body too large
    assert code_for_http(418) == Code.UNKNOWN and code_for_http(502) == Code.INTERNAL
    for status in HTTP_STATUS.values():
        assert http_status_for(code_for_http(status)) == status


def test_one_hierarchy_for_server_and_client():
    # Raised by the server with a message only: the class carries the code.
    error = InvalidArgument("pixel out of range")
    assert (error.code, error.http_status, error.message) == ("INVALID_ARGUMENT", 400, "pixel out of range")
    assert str(error) == "INVALID_ARGUMENT (400): pixel out of range"
    # Rebuilt by a client from an answer: the received status and the protocol are kept.
    answer = error_for("NOT_FOUND", "no version 9", http_status=404, protocol="REST")
    assert isinstance(answer, NotFound) and str(answer) == "REST NOT_FOUND (404): no version 9"
    assert not answer.unreachable and error_for("UNAVAILABLE", "down").unreachable
    assert isinstance(error_for("DEADLINE_EXCEEDED", "slow"), DeadlineExceeded)
    assert isinstance(error_for("RESOURCE_EXHAUSTED", "busy"), ResourceExhausted)
    assert isinstance(error_for(Code.UNAVAILABLE, "x"), Unavailable)
    assert type(error_for("INTERNAL", "boom")) is Internal
    # OUT_OF_RANGE is an InvalidArgument that keeps its own code; codes without a class stay.
    out = error_for("OUT_OF_RANGE", "x")
    assert isinstance(out, InvalidArgument) and out.code == Code.OUT_OF_RANGE
    assert InvalidArgument("y").code == Code.INVALID_ARGUMENT  # the class is not changed
    other = error_for("UNIMPLEMENTED", "no")
    assert type(other) is ServingError and other.code == Code.UNIMPLEMENTED and other.http_status == 501
    assert error_for("bogus", "?").code == Code.UNKNOWN
    # Every deliberate error is a DigitsError; a malformed answer is an INTERNAL error.
    assert issubclass(ProtocolError, Internal) and issubclass(ServingError, DigitsError)
    assert issubclass(InputError, DigitsError) and not issubclass(InputError, ServingError)
