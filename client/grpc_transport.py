"""The gRPC transport both gRPC clients share (TF Serving's PredictionService and V2's
GRPCInferenceService).

Owns the channel (its message-size options, the optional client interceptors) and one unary call
whose failure becomes :mod:`contract.errors`' family: the status code's name and the server's
details, whichever protocol the call spoke.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from contract.errors import error_for

# Headroom for a request of contract.MAX_BATCH_SIZE images in either tensor encoding plus its
# answer: grpcio's default receive limit (4 MB) leaves almost none for a full batch.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def channel_options() -> list[tuple[str, Any]]:
    """The options every client channel is opened with (message-size limits both ways)."""
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]


def open_channel(
    target: str, interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = ()
) -> tuple[grpc.Channel, grpc.Channel]:
    """(the channel to close, the channel to bind methods on: the same one with ``interceptors``)."""
    channel = grpc.insecure_channel(target, options=channel_options())
    return channel, grpc.intercept_channel(channel, *interceptors) if interceptors else channel


def rpc_error(exc: grpc.RpcError, protocol: str) -> Exception:
    """The :mod:`contract.errors` class for a failed call (code name + the server's details)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    return error_for(name, details or name, protocol=protocol)


def unary_call(method: grpc.UnaryUnaryMultiCallable, request: Any, timeout: float, protocol: str) -> Any:
    """One unary call with a deadline; a failure raised as the error family's class."""
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as exc:
        raise rpc_error(exc, protocol) from None
