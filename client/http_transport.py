"""The HTTP transport both REST clients share (TF Serving's REST API and V2 REST).

Owns one HTTP request through a :class:`requests.Session` and what its failure means:
no answer in time, no connection or an HTTP error status becomes :mod:`contract.errors`' family,
the status read back into its gRPC code with TF Serving's table (V2 uses the same statuses and the
same ``{"error": "..."}`` body). Also the base-URL spelling both clients accept.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

import requests

from contract.errors import DeadlineExceeded, ProtocolError, Unavailable, code_for_http, error_for

log = logging.getLogger(__name__)


def normalise_base_url(url: str) -> str:
    """``host:port`` or ``http://host:port/`` -> ``http://host:port``."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


def http_call(
    session: requests.Session,
    method: str,
    url: str,
    body: bytes | None,
    headers: dict[str, str] | None,
    timeout: float,
    protocol: str,
    *,
    accept: Collection[int] = (),
) -> requests.Response:
    """One HTTP request; a 2xx/3xx response (or one of ``accept``), else the error family's class
    for what happened.

    No answer in time is DEADLINE_EXCEEDED, no connection UNAVAILABLE, an HTTP error status the
    gRPC code of TF Serving's table read backwards with the server's ``{"error": ...}`` text (the
    V2 protocol uses the same body and the same statuses).
    """
    try:
        response = session.request(method, url, data=body, headers=headers, timeout=timeout)
    except requests.Timeout as exc:
        raise DeadlineExceeded(
            f"no answer from {url} within {timeout:g} s ({exc})", protocol=protocol
        ) from None
    except requests.ConnectionError as exc:
        raise Unavailable(f"cannot reach {url}: {_root_cause(exc)}", protocol=protocol) from None
    except requests.RequestException as exc:
        raise Unavailable(f"{url}: {exc}", protocol=protocol) from None
    log.debug("%s %s -> %s", method, url, response.status_code)
    if response.status_code >= 400 and response.status_code not in accept:
        raise error_for(
            code_for_http(response.status_code),
            _error_message(response),
            http_status=response.status_code,
            protocol=protocol,
        )
    return response


def json_answer(response: requests.Response, protocol: str) -> Any:
    """The response's JSON body; ProtocolError when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        raise ProtocolError(
            f"{response.url} answered {response.status_code} with a body that is not JSON: "
            f"{response.text[:200]!r}",
            protocol=protocol,
        ) from None


def _error_message(response: requests.Response) -> str:
    """The server's ``{"error": ...}`` text, or the start of whatever body it sent."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    text = response.text.strip()
    return text[:300] if text else response.reason or f"HTTP {response.status_code}"


def _root_cause(exc: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error chain (e.g. 'Connection refused')."""
    seen = exc
    while seen.__context__ is not None or seen.__cause__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    text = str(seen)
    return text.split("] ", 1)[-1] if "] " in text else text
