"""Observing finished requests, the same way for every adapter: one metric sample, one log line.

Both adapters call ``RequestObserver.finished`` once per request they served, whatever the
outcome (the REST app from its ``after_request`` hook, the gRPC adapter from its one wrapper),
so the counts, the latency histogram and the access log cannot drift apart between protocols:

- ``serving_requests_total{api,protocol,method,code}`` and
  ``serving_request_latency_seconds{api,protocol,method}`` (``protocol`` is ``tfserving`` or ``v2``;
  ``method`` is the operation: predict, metadata, status, ...; ``code`` the gRPC code name);
- with the access log on, one JSON line ``{"api": ..., "protocol": ..., <the adapter's fields>,
  "ms": ...}`` on the
  ``serving.access`` logger. REST adds the HTTP ``method``, ``path`` and ``status``; gRPC the
  operation as ``method`` and the ``code``. Probes and scrapes are never observed.
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

        ``fields`` are the adapter's access-log fields, written between ``api`` and ``ms``.
        """
        metrics.observe_request(self.api, self.protocol, operation, code, seconds)
        if self.access_log:
            line = {"api": self.api, "protocol": self.protocol, **fields, "ms": round(seconds * 1e3, 3)}
            access_logger.info("%s", orjson.dumps(line).decode())
