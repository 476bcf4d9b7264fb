"""Observing finished requests, the same way for every adapter: one metric sample, one log line.

Both adapters call ``RequestObserver.finished`` once per request they served, whatever the
outcome (the REST app from its ``after_request`` hook, the gRPC adapter from its one wrapper),
so the counts, the latency histogram and the access log cannot drift apart between protocols:

- ``serving_requests_total{api,protocol,method,code,model,version}`` and
  ``serving_request_latency_seconds{api,protocol,method,model,version}`` (``protocol`` is
  ``tfserving`` or ``v2``; ``method`` is the operation: predict, metadata, status, ...; ``code``
  the gRPC code name; ``model`` and ``version`` what the data plane recorded for this request,
  ``serving.observability.metrics.request_addressed``: the served model once the request named
  it, the version once one was chosen, else "");
- with the access log on, one JSON line ``{"api": ..., "protocol": ..., "model": ...,
  "version": ..., <the adapter's fields>, "ms": ...}`` on the ``serving.access`` logger. REST
  adds the HTTP ``method``, ``path`` and ``status``; gRPC the operation as ``method`` and the
  ``code``. Probes and scrapes are never observed.
"""

from __future__ import annotations

import orjson

from serving.observability import metrics
from serving.observability.logs import access_logger


class RequestObserver:
    """Counts, times and logs the finished requests of one API (``"rest"`` or ``"grpc"``) and
    protocol (``"tfserving"`` or ``"v2"``)."""

    def __init__(self, api: str, access_log: bool = True, protocol: str = "tfserving") -> None:
        self.api = api
        self.protocol = protocol
        self.access_log = access_log

    def finished(self, operation: str, code: str, seconds: float, /, **fields: object) -> None:
        """One request of ``operation`` ended with gRPC ``code`` after ``seconds``.

        ``fields`` are the adapter's access-log fields, written between ``version`` and ``ms``.
        """
        model, version = metrics.take_request_labels()
        metrics.observe_request(self.api, self.protocol, operation, code, model, version, seconds)
        if self.access_log:
            line = {
                "api": self.api,
                "protocol": self.protocol,
                "model": model,
                "version": version,
                **fields,
                "ms": round(seconds * 1e3, 3),
            }
            access_logger.info("%s", orjson.dumps(line).decode())
