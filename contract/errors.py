"""The one error family of digits, used on both sides of the wire.

The gRPC status code is the source of truth (:class:`Code`); the HTTP status is derived from it by
TensorFlow Serving's table (:func:`http_status_for`). The server raises these classes and its
adapters translate them (gRPC: abort with the code; REST: ``{"error": message}`` with the HTTP
status); the clients raise the same classes for the answers they receive, whichever protocol
carried them, so callers handle errors once. Inputs that cannot become an image raise
:class:`InputError` before anything is sent.
"""

from __future__ import annotations

import enum


class Code(enum.StrEnum):
    """gRPC status code names (``grpc.StatusCode`` and ``google.rpc.Code`` use the same names)."""

    OK = "OK"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    INTERNAL = "INTERNAL"
    UNAVAILABLE = "UNAVAILABLE"
    DATA_LOSS = "DATA_LOSS"
    UNAUTHENTICATED = "UNAUTHENTICATED"


# gRPC code -> HTTP status, as TF Serving maps them (anything else -> 500).
HTTP_STATUS: dict[Code, int] = {
    Code.OK: 200,
    Code.INVALID_ARGUMENT: 400,
    Code.FAILED_PRECONDITION: 400,
    Code.OUT_OF_RANGE: 400,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.UNAUTHENTICATED: 401,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.UNIMPLEMENTED: 501,
    Code.UNAVAILABLE: 503,
    Code.DEADLINE_EXCEEDED: 504,
    Code.CANCELLED: 499,
}
HTTP_INTERNAL_ERROR = 500
# HTTP status -> gRPC code, the table read backwards; 400 is ambiguous (INVALID_ARGUMENT,
# FAILED_PRECONDITION, OUT_OF_RANGE) and INVALID_ARGUMENT is what it usually is.
_CODE_BY_HTTP: dict[int, Code] = {status: code for code, status in reversed(list(HTTP_STATUS.items()))}
# Codes that say "the server (or the path to it) is not there right now": a retry may succeed.
_UNREACHABLE = frozenset({Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.CANCELLED})


def http_status_for(code: str) -> int:
    """HTTP status for a gRPC code (name or :class:`Code`): ``"INVALID_ARGUMENT"`` -> 400."""
    try:
        return HTTP_STATUS.get(Code(code), HTTP_INTERNAL_ERROR)
    except ValueError:
        return HTTP_INTERNAL_ERROR


def code_for_http(status: int) -> Code:
    """The gRPC code for an HTTP status a server answered with (TF Serving's table backwards)."""
    if status in _CODE_BY_HTTP:
        return _CODE_BY_HTTP[status]
    if status == 413:  # body too large: the server refuses the size of the argument
        return Code.INVALID_ARGUMENT
    return Code.UNKNOWN if status < 500 else Code.INTERNAL


class DigitsError(Exception):
    """Base of every error digits raises on purpose."""


class InputError(DigitsError):
    """A file or array that cannot become a model input (missing, empty, not an image...)."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class ServingError(DigitsError):
    """A request that failed with a gRPC status code: raised by the server, or by a client for
    the server's answer (or for a server it could not reach).

    ``code`` is the gRPC code, ``message`` the text for the other side (``{"error": ...}`` or the
    gRPC details), ``http_status`` its HTTP equivalent (the one received, on the client side),
    ``protocol`` the protocol that carried it on the client side ("REST", "gRPC"; "" on the server).
    """

    code: Code = Code.INTERNAL

    def __init__(self, message: str, *, http_status: int | None = None, protocol: str = "") -> None:
        self.message = message
        self.protocol = protocol
        self._http_status = http_status
        super().__init__(message)

    @property
    def http_status(self) -> int:
        return self._http_status if self._http_status is not None else http_status_for(self.code)

    @property
    def unreachable(self) -> bool:
        """True when the server was not there (connection refused, unavailable, timed out)."""
        return self.code in _UNREACHABLE

    def __str__(self) -> str:
        where = f"{self.protocol} " if self.protocol else ""
        return f"{where}{self.code} ({self.http_status}): {self.message}"


class InvalidArgument(ServingError):
    """The request was malformed or its values out of range (HTTP 400)."""

    code = Code.INVALID_ARGUMENT


class NotFound(ServingError):
    """Unknown model, version or label (HTTP 404)."""

    code = Code.NOT_FOUND


class FailedPrecondition(ServingError):
    """The model (version) exists but cannot serve this request now (HTTP 400)."""

    code = Code.FAILED_PRECONDITION


class PermissionDenied(ServingError):
    """The server does not allow this call (a runtime model change with model control off: 403)."""

    code = Code.PERMISSION_DENIED


class ResourceExhausted(ServingError):
    """The server is overloaded and refused the request (HTTP 429)."""

    code = Code.RESOURCE_EXHAUSTED


class Unavailable(ServingError):
    """The server is not reachable or not ready (HTTP 503, connection refused)."""

    code = Code.UNAVAILABLE


class DeadlineExceeded(ServingError):
    """The request did not finish within its deadline (HTTP 504)."""

    code = Code.DEADLINE_EXCEEDED


class Internal(ServingError):
    """A bug or an unexpected failure on the server (HTTP 500)."""

    code = Code.INTERNAL


class ProtocolError(Internal):
    """The server answered, but not in the protocol's shape (wrong JSON, missing outputs)."""


_BY_CODE: dict[Code, type[ServingError]] = {
    Code.INVALID_ARGUMENT: InvalidArgument,
    Code.OUT_OF_RANGE: InvalidArgument,
    Code.NOT_FOUND: NotFound,
    Code.FAILED_PRECONDITION: FailedPrecondition,
    Code.PERMISSION_DENIED: PermissionDenied,
    Code.RESOURCE_EXHAUSTED: ResourceExhausted,
    Code.UNAVAILABLE: Unavailable,
    Code.DEADLINE_EXCEEDED: DeadlineExceeded,
    Code.INTERNAL: Internal,
}


def error_for(
    code: str, message: str, *, http_status: int | None = None, protocol: str = ""
) -> ServingError:
    """The most specific :class:`ServingError` for a gRPC code (name or :class:`Code`).

    Codes without a class of their own (``UNIMPLEMENTED``, ``UNKNOWN`` ...) give a plain
    :class:`ServingError` that carries the code.
    """
    try:
        known = Code(code)
    except ValueError:
        known = Code.UNKNOWN
    cls = _BY_CODE.get(known)
    if cls is not None and cls.code == known:
        return cls(message, http_status=http_status, protocol=protocol)
    error = (cls or ServingError)(message, http_status=http_status, protocol=protocol)
    error.code = known  # OUT_OF_RANGE is an InvalidArgument that keeps its own code
    return error
