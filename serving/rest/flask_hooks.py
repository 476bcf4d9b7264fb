"""The Flask hooks every blueprint shares: one error handler and one observation per request.

A model route sets ``g.started`` and ``g.operation`` when it starts; the error handler sets
``g.code``; the blueprint's ``after_request`` hook then observes the request once, its response
in hand (``serving.observability.observer``). Probes, scrapes and the page set no operation and
are never observed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Blueprint, Flask, Response, g, request

from contract.errors import Code
from serving.observability.observer import RequestObserver
from serving.rest.errors import JSON, translate
from serving.rest.routes import ModelRoute


def start(operation: str) -> None:
    """Mark the request as a model route's, for its observation."""
    g.started, g.operation = time.perf_counter(), operation


def start_model_route(parse: Callable[[str], ModelRoute], rest: str) -> ModelRoute:
    """The model route of a path (``parse`` reads it), observed as ``unknown`` until it parses;
    405 for a method it does not answer."""
    start("unknown")
    route = parse(rest)
    g.operation = route.operation
    route.check_method(request.method)
    return route


def observe_requests(blueprint: Blueprint, observer: RequestObserver) -> None:
    """Observe every request of ``blueprint`` that marked itself (``start``), once answered."""

    @blueprint.after_request
    def observe(response: Response) -> Response:
        operation = g.get("operation")
        if operation is not None:
            observer.finished(
                operation,
                g.get("code", Code.OK),
                time.perf_counter() - g.started,
                method=request.method,
                path=request.path,
                status=response.status_code,
            )
        return response


def install_error_handler(app: Flask, max_request_bytes: int) -> None:
    """Answer every exception the app's views raise through ``serving.rest.errors.translate``."""

    @app.errorhandler(Exception)
    def answer(exc: Exception) -> Response:
        g.code, status, body = translate(exc, request.method, request.path, max_request_bytes)
        return Response(body, status, mimetype=JSON)
