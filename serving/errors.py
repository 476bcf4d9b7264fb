"""The one error family of the server, keyed by gRPC status code.

Every failure a client can cause or observe is a ``ServingError`` carrying the gRPC status code
name; the REST adapter derives the HTTP status from TF Serving's table
(``client.contract.http_status_for``) and the gRPC adapter aborts with the same code. Anything
else that escapes is a bug and becomes INTERNAL / 500 at the adapters.
"""

from __future__ import annotations

from client.contract import http_status_for


class ServingError(Exception):
    """A request failure with a gRPC status code name and a message for the client."""

    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def http_status(self) -> int:
        return http_status_for(self.code)


class InvalidArgument(ServingError):
    code = "INVALID_ARGUMENT"


class NotFound(ServingError):
    code = "NOT_FOUND"


class FailedPrecondition(ServingError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(ServingError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(ServingError):
    code = "UNAVAILABLE"


class DeadlineExceeded(ServingError):
    code = "DEADLINE_EXCEEDED"


class Internal(ServingError):
    code = "INTERNAL"
