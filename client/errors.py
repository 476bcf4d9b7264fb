"""The client's one error family: what went wrong, keyed by the gRPC status code.

Both clients raise the same classes whichever protocol failed, so callers (the CLI, scripts, the
Locust users) handle errors once. A server error carries the gRPC code name (the source of truth,
as in the server), the HTTP status derived by TF Serving's table, and the server's own message.
Inputs that cannot become an image raise :class:`InputError` before anything is sent.
"""

from __future__ import annotations

from client import contract

# HTTP status -> gRPC code name, the inverse of TF Serving's table; 400 is ambiguous upstream
# (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE) and INVALID_ARGUMENT is what it usually is.
_HTTP_TO_GRPC_CODE: dict[int, str] = {
    status: code for code, status in reversed(list(contract.GRPC_CODE_TO_HTTP.items()))
}
# Codes that say "the server (or the path to it) is not there right now": a retry may succeed.
_UNREACHABLE_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"})


class DigitsError(Exception):
    """Base of every error this package raises on purpose."""


class InputError(DigitsError):
    """A file or array that cannot become a model input (missing, empty, not an image...)."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class ServerError(DigitsError):
    """The server answered with an error status, or could not be reached.

    ``code`` is the gRPC status code name (``"INVALID_ARGUMENT"``), ``http_status`` its HTTP
    equivalent, ``message`` the server's own text (``{"error": ...}`` or the gRPC details).
    """

    def __init__(
        self, code: str, message: str, *, http_status: int | None = None, protocol: str = ""
    ) -> None:
        self.code = code
        self.http_status = http_status if http_status is not None else contract.http_status_for(code)
        self.message = message
        self.protocol = protocol
        where = f"{protocol} " if protocol else ""
        super().__init__(f"{where}{code} ({self.http_status}): {message}")

    @property
    def unreachable(self) -> bool:
        """True when the server was not there (connection refused, unavailable, timed out)."""
        return self.code in _UNREACHABLE_CODES


class InvalidArgument(ServerError):
    """The request was malformed or its values out of range (HTTP 400)."""


class NotFound(ServerError):
    """Unknown model, version or label (HTTP 404)."""


class FailedPrecondition(ServerError):
    """The model (version) exists but cannot serve this request now (HTTP 400)."""


class ResourceExhausted(ServerError):
    """The server is overloaded and refused the request (HTTP 429)."""


class Unavailable(ServerError):
    """The server is not reachable or not ready (HTTP 503, connection refused)."""


class DeadlineExceeded(ServerError):
    """The request did not finish within its timeout (HTTP 504)."""


class ProtocolError(ServerError):
    """The server answered, but not in TF Serving's shape (wrong JSON, missing outputs)."""

    def __init__(self, message: str, *, protocol: str = "") -> None:
        super().__init__("INTERNAL", message, protocol=protocol)


_BY_CODE: dict[str, type[ServerError]] = {
    "INVALID_ARGUMENT": InvalidArgument,
    "OUT_OF_RANGE": InvalidArgument,
    "NOT_FOUND": NotFound,
    "FAILED_PRECONDITION": FailedPrecondition,
    "RESOURCE_EXHAUSTED": ResourceExhausted,
    "UNAVAILABLE": Unavailable,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
}


def server_error(
    code: str, message: str, *, http_status: int | None = None, protocol: str = ""
) -> ServerError:
    """The most specific :class:`ServerError` subclass for a gRPC code name."""
    cls = _BY_CODE.get(code, ServerError)
    return cls(code, message, http_status=http_status, protocol=protocol)


def grpc_code_for_http(status: int) -> str:
    """The gRPC code name for an HTTP status (TF Serving's table read backwards)."""
    if status in _HTTP_TO_GRPC_CODE:
        return _HTTP_TO_GRPC_CODE[status]
    if status == 413:  # body too large: the server refuses the size of the argument
        return "INVALID_ARGUMENT"
    return "UNKNOWN" if status < 500 else "INTERNAL"
