"""How every RPC of the gRPC adapter is bound and answered: one error translation, one observation.

Our messages live in our own proto packages (``digits.tfserving``, ``digits.v2``; see
contract/proto/), so the official method paths are bound with generic handlers from a method
table. One wrapper around every handler translates errors (a ``ServingError`` aborts with its own
code, anything unexpected with INTERNAL, never UNKNOWN) and observes the request once
(``serving.observability.observer``, with the protocol as a label).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from contract.errors import Code, DeadlineExceeded, ServingError
from serving.observability.observer import RequestObserver

logger = logging.getLogger("serving.grpc")

Handler = Callable[[Any, grpc.ServicerContext], Any]
# (method path, operation name for metrics and logs, handler, request message type)
MethodTable = list[tuple[str, str, Handler, Any]]


def _serialize(response: Any) -> bytes:
    """A response message's wire bytes; a handler may also return them already written."""
    return response if isinstance(response, bytes) else response.SerializeToString()


def time_remaining(context: grpc.ServicerContext, limit: float | None = None) -> float | None:
    """Seconds left to serve the call: the client's deadline, bounded by ``limit`` if given."""
    timeout = context.time_remaining()
    if limit is not None:
        timeout = limit if timeout is None else min(timeout, limit)
    if timeout is not None and timeout <= 0:
        raise DeadlineExceeded("deadline exceeded before the request was served")
    return timeout


def translated(observer: RequestObserver | None, operation: str, handler: Handler) -> Handler:
    """``handler`` with its errors turned into gRPC status codes, observed once per call
    (not at all with ``observer`` None: health probes)."""

    def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        code, message, response = Code.OK, "", None
        try:
            response = handler(request, context)
        except ServingError as exc:
            code, message = exc.code, exc.message
        except Exception as exc:  # a bug: INTERNAL, never UNKNOWN
            logger.exception("unhandled error in gRPC %s", operation)
            code, message = Code.INTERNAL, f"internal error: {type(exc).__name__}"
        if observer is not None:
            observer.finished(
                operation, code, time.perf_counter() - started, method=operation, code=code
            )
        if code != Code.OK:
            context.abort(grpc.StatusCode[code], message)
        return response

    return behaviour


def generic_handlers(
    table: MethodTable, observer: RequestObserver, unobserved: frozenset[str] = frozenset()
) -> list[grpc.GenericRpcHandler]:
    """Generic handlers binding each method path of ``table`` to its handler and messages."""
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for path, operation, handler, request_type in table:
        service, method = path.lstrip("/").split("/")
        watcher = None if operation in unobserved else observer
        by_service.setdefault(service, {})[method] = grpc.unary_unary_rpc_method_handler(
            translated(watcher, operation, handler),
            request_deserializer=request_type.FromString,
            response_serializer=_serialize,
        )
    return [grpc.method_handlers_generic_handler(s, m) for s, m in by_service.items()]
